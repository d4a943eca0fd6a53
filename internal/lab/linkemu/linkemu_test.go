package linkemu

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine behind, such
// as a goroutine of a Link that outlived Close.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// A server is a TCP server on loopback that serves each connection with
// handle and counts what it receives. Closing it closes every connection
// and waits for the handlers.
type server struct {
	ln       net.Listener
	handle   func(s *server, c *net.TCPConn)
	received atomic.Int64
	accepted atomic.Int64
	active   atomic.Int64 // handlers running
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    []net.Conn
	errs     []error // the errors handlers ended with
}

// fail records that a handler ended with err.
func (s *server) fail(err error) {
	s.mu.Lock()
	s.errs = append(s.errs, err)
	s.mu.Unlock()
}

func newServer(t *testing.T, handle func(s *server, c *net.TCPConn)) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{ln: ln, handle: handle}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			s.active.Add(1)
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer s.active.Add(-1)
				defer c.Close()
				handle(s, c.(*net.TCPConn))
			}()
		}
	}()
	t.Cleanup(s.close)
	return s
}

func (s *server) addr() string { return s.ln.Addr().String() }

func (s *server) close() {
	s.ln.Close()
	s.mu.Lock()
	for _, c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// sink reads and counts everything.
func sink(s *server, c *net.TCPConn) {
	b := make([]byte, 256<<10)
	for {
		n, err := c.Read(b)
		s.received.Add(int64(n))
		if err != nil {
			return
		}
	}
}

// echo sends everything back, then passes EOF back.
func echo(s *server, c *net.TCPConn) {
	b := make([]byte, 64<<10)
	for {
		n, err := c.Read(b)
		s.received.Add(int64(n))
		if n > 0 {
			if _, err := c.Write(b[:n]); err != nil {
				s.fail(err)
				return
			}
		}
		if err != nil {
			if err == io.EOF {
				c.CloseWrite()
			}
			s.fail(err)
			return
		}
	}
}

func listen(t *testing.T, target string, cfg Config) *Link {
	t.Helper()
	l, err := Listen("127.0.0.1:0", target, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func dial(t *testing.T, l *Link) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", l.Addr().String(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// waitFor polls cond every millisecond for at most d and reports whether
// it became true.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

// flood writes to each of cs as fast as it can until its connection
// fails (is closed); wait waits for the writers.
func flood(cs []*net.TCPConn) (written *atomic.Int64, wait func()) {
	written = new(atomic.Int64)
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := make([]byte, 64<<10)
			for {
				n, err := c.Write(b)
				written.Add(int64(n))
				if err != nil {
					return
				}
			}
		}()
	}
	return written, wg.Wait
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// measureRate floods a link of the given rate from conns connections and
// returns the rate in bit/s at which a sink behind it receives, over
// window. The window starts 200 ms after the first byte arrives, to leave
// out the start of the TCP connections and of the link. It also returns
// the CPU time of the whole process (senders, link and sink) per second
// of the window.
func measureRate(t *testing.T, rate int64, conns int, window time.Duration) (float64, float64) {
	t.Helper()
	s := newServer(t, sink)
	l := listen(t, s.addr(), Config{Rate: rate})
	cs := make([]*net.TCPConn, conns)
	for i := range cs {
		cs[i] = dial(t, l)
	}
	_, wait := flood(cs)
	defer func() {
		l.Close()
		for _, c := range cs {
			c.Close()
		}
		wait()
	}()
	if !waitFor(2*time.Second, func() bool { return s.received.Load() > 0 }) {
		t.Fatal("no byte through the link in 2s")
	}
	time.Sleep(200 * time.Millisecond)
	b0, c0, t0 := s.received.Load(), cpuTime(), time.Now()
	time.Sleep(window)
	b1, c1, t1 := s.received.Load(), cpuTime(), time.Now()
	el := t1.Sub(t0).Seconds()
	return float64(b1-b0) * 8 / el, (c1 - c0).Seconds() / el
}

func TestRate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		rate  int64
		conns int
	}{
		{"100Mbit", 100e6, 1},
		{"1Gbit", 1e9, 1},
		{"100Mbit4conns", 100e6, 4},
		{"1Gbit4conns", 1e9, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if raceEnabled && tc.rate > 100e6 {
				t.Skip("the race detector slows the proxy below 1 Gbit/s")
			}
			got, cpu := measureRate(t, tc.rate, tc.conns, 2*time.Second)
			t.Logf("rate %.2f Mbit/s (%+.2f%%), process CPU %.2f s/s", got/1e6, 100*(got/float64(tc.rate)-1), cpu)
			if d := got/float64(tc.rate) - 1; d < -0.05 || d > 0.05 {
				t.Errorf("rate %.2f Mbit/s, want %d Mbit/s within 5%%", got/1e6, tc.rate/1e6)
			}
		})
	}
}

func TestSetRate(t *testing.T) {
	s := newServer(t, sink)
	l := listen(t, s.addr(), Config{Rate: 20e6})
	_, wait := flood([]*net.TCPConn{dial(t, l)})
	defer func() { l.Close(); wait() }()
	if !waitFor(2*time.Second, func() bool { return s.received.Load() > 0 }) {
		t.Fatal("no byte through the link in 2s")
	}
	measure := func(want float64) {
		time.Sleep(100 * time.Millisecond) // the link drains its queue at the old rate
		b0, t0 := s.received.Load(), time.Now()
		time.Sleep(time.Second)
		got := float64(s.received.Load()-b0) * 8 / time.Since(t0).Seconds()
		t.Logf("rate %.2f Mbit/s, want %.0f", got/1e6, want/1e6)
		if d := got/want - 1; d < -0.05 || d > 0.05 {
			t.Errorf("rate %.2f Mbit/s, want %.0f Mbit/s within 5%%", got/1e6, want/1e6)
		}
	}
	measure(20e6)
	l.SetRate(60e6)
	measure(60e6)
}

func TestDelay(t *testing.T) {
	for _, rate := range []int64{0, 100e6} {
		s := newServer(t, echo)
		l := listen(t, s.addr(), Config{Rate: rate, Delay: 25 * time.Millisecond})
		c := dial(t, l)
		c.SetDeadline(time.Now().Add(5 * time.Second))
		var rtts []time.Duration
		msg, back := []byte("ping-ping-ping!!"), make([]byte, 16)
		for range 7 {
			start := time.Now()
			if _, err := c.Write(msg); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(c, back); err != nil {
				t.Fatal(err)
			}
			rtts = append(rtts, time.Since(start))
			if !bytes.Equal(back, msg) {
				t.Fatalf("echo %q, want %q", back, msg)
			}
		}
		sort.Slice(rtts, func(i, j int) bool { return rtts[i] < rtts[j] })
		t.Logf("rate %d: RTTs %v", rate, rtts)
		if rtts[0] < 50*time.Millisecond {
			t.Errorf("rate %d: RTT %v, less than twice the delay", rate, rtts[0])
		}
		if m := rtts[len(rtts)/2]; m < 45*time.Millisecond || m > 70*time.Millisecond {
			t.Errorf("rate %d: median RTT %v, want 45-70ms", rate, m)
		}
	}
}

// hasher reads everything, counts it, and on EOF sends back the SHA-256
// of what it read.
func hasher(s *server, c *net.TCPConn) {
	h := sha256.New()
	b := make([]byte, 64<<10)
	for {
		n, err := c.Read(b)
		h.Write(b[:n])
		s.received.Add(int64(n))
		if err == io.EOF {
			c.Write(h.Sum(nil))
			c.CloseWrite()
			return
		}
		if err != nil {
			return
		}
	}
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestBlackhole sends data to an echo server through a link that becomes
// a black hole for 1 s in the middle of it: meanwhile, no byte moves in
// either direction and no connection ends, a new connection does not
// reach the target; afterwards the data is all echoed, unchanged.
func TestBlackhole(t *testing.T) {
	const size = 6 << 20 // 1.26 s at 40 Mbit/s
	s := newServer(t, echo)
	l := listen(t, s.addr(), Config{Rate: 40e6, Delay: 5 * time.Millisecond})
	data := randomBytes(t, size)
	c := dial(t, l)
	c.SetDeadline(time.Now().Add(15 * time.Second))
	begin := time.Now()
	sent := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = c.CloseWrite()
		}
		sent <- err
	}()
	var back atomic.Int64
	h := sha256.New()
	recvd := make(chan error, 1)
	go func() {
		b := make([]byte, 64<<10)
		for {
			n, err := c.Read(b)
			h.Write(b[:n])
			back.Add(int64(n))
			if err != nil {
				if err == io.EOF {
					err = nil
				}
				recvd <- err
				return
			}
		}
	}()
	if !waitFor(3*time.Second, func() bool { return back.Load() >= 1<<20 }) {
		t.Fatal("1 MiB not echoed in 3s")
	}

	const hole = time.Second
	l.Blackhole(hole)
	start := time.Now()
	// A connection made in the black hole reaches the target only after it.
	late := dial(t, l)
	// What was written before the black hole, into the endpoints' socket
	// buffers or being written then, may still be read for a short while:
	// leave it 50 ms.
	time.Sleep(50 * time.Millisecond)
	there, home, st0 := s.received.Load(), back.Load(), l.Stats()
	for {
		got, gotBack, st, accepted := s.received.Load(), back.Load(), l.Stats(), s.accepted.Load()
		in := time.Since(start)
		if in > hole-10*time.Millisecond {
			break
		}
		if got != there || gotBack != home || st.Up != st0.Up || st.Down != st0.Down {
			t.Fatalf("%v into the black hole: target received %d bytes and client %d (link: %d up, %d down), both were %d and %d (%d, %d)",
				in, got, gotBack, st.Up, st.Down, there, home, st0.Up, st0.Down)
		}
		if accepted != 1 {
			t.Fatalf("%v into the black hole: target accepted %d connections, want 1", in, accepted)
		}
		select {
		case err := <-sent:
			t.Fatalf("in the black hole: client done writing 6 MiB (%v): the link held too much", err)
		case err := <-recvd:
			t.Fatalf("in the black hole: client's read ended: %v", err)
		default:
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("black hole: held at %d bytes up, %d down", there, home)
	if st := l.Stats(); st.Active != 2 {
		t.Errorf("after the black hole: %d active connections, want 2", st.Active)
	}
	if !waitFor(time.Second, func() bool { return s.accepted.Load() == 2 }) {
		t.Error("the connection made in the black hole did not reach the target 1s after it")
	}
	late.Close()

	if err := <-sent; err != nil {
		t.Fatalf("after the black hole: client write: %v", err)
	}
	if err := <-recvd; err != nil {
		t.Fatalf("after the black hole: client read: %v", err)
	}
	if want := sha256.Sum256(data); back.Load() != size || !bytes.Equal(h.Sum(nil), want[:]) {
		t.Errorf("echoed %d bytes, want %d, or they differ", back.Load(), size)
	}
	// 6 MiB at 40 Mbit/s take 1.26 s, and the black hole 1 s more.
	el := time.Since(begin)
	t.Logf("transfer took %v", el)
	if el < 2250*time.Millisecond {
		t.Errorf("transfer took %v, want 1.26s+1s at least", el)
	}
}

func TestReset(t *testing.T) {
	s := newServer(t, echo)
	l := listen(t, s.addr(), Config{Rate: 50e6, Delay: 5 * time.Millisecond})
	c := dial(t, l)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	writeErr, readErr := make(chan error, 1), make(chan error, 1)
	go func() {
		b := make([]byte, 64<<10)
		for {
			if _, err := c.Write(b); err != nil {
				writeErr <- err
				return
			}
		}
	}()
	go func() {
		_, err := io.Copy(io.Discard, c)
		readErr <- err
	}()
	if !waitFor(3*time.Second, func() bool { return s.received.Load() >= 256<<10 }) {
		t.Fatal("256 KiB not echoed in 3s")
	}

	start := time.Now()
	l.Reset()
	// The client sees the reset on its writes or on its reads, whichever
	// comes first (the socket's error is reported once), and both end.
	var errs []error
	for range 2 {
		select {
		case err := <-writeErr:
			errs = append(errs, err)
		case err := <-readErr:
			errs = append(errs, err)
		case <-time.After(time.Second):
			t.Fatalf("client still reading or writing 1s after Reset (%v)", errs)
		}
	}
	t.Logf("client: %v after %v", errs, time.Since(start))
	if !errors.Is(errs[0], syscall.ECONNRESET) && !errors.Is(errs[1], syscall.ECONNRESET) {
		t.Errorf("client: %v, want a reset", errs)
	}
	if !waitFor(time.Second, func() bool { return s.active.Load() == 0 }) {
		t.Fatal("target still serving 1s after Reset")
	}
	s.mu.Lock()
	serr := s.errs
	s.mu.Unlock()
	t.Logf("target: %v after %v", serr, time.Since(start))
	if len(serr) != 1 || !errors.Is(serr[0], syscall.ECONNRESET) {
		t.Errorf("target ended with %v, want a reset", serr)
	}
	if !waitFor(time.Second, func() bool { return l.Stats().Active == 0 }) {
		t.Error("connection still active 1s after Reset")
	}
	if st := l.Stats(); st.Resets != 1 || st.Accepted != 1 {
		t.Errorf("stats %+v, want 1 connection, reset", st)
	}

	// A new connection works.
	c2 := dial(t, l)
	c2.SetDeadline(time.Now().Add(5 * time.Second))
	msg := []byte("after the reset")
	if _, err := c2.Write(msg); err != nil {
		t.Fatal(err)
	}
	back := make([]byte, len(msg))
	if _, err := io.ReadFull(c2, back); err != nil || !bytes.Equal(back, msg) {
		t.Fatalf("after Reset: echo %q, %v", back, err)
	}
}

// TestIntegrity sends random data through links both ways (to an echo
// server) and checks it comes back unchanged, with an EOF after it: the
// client's half-close goes through to the target and the target's back.
func TestIntegrity(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   Config
		conns int
		size  int
	}{
		{"plain", Config{}, 1, 16 << 20},
		{"delay", Config{Delay: 10 * time.Millisecond}, 1, 16 << 20},
		{"rate+delay", Config{Rate: 200e6, Delay: 10 * time.Millisecond}, 1, 8 << 20},
		{"rate+delay 4conns", Config{Rate: 400e6, Delay: 3 * time.Millisecond}, 4, 4 << 20},
		{"slow", Config{Rate: 1e6, Delay: time.Millisecond}, 2, 20 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, echo)
			l := listen(t, s.addr(), tc.cfg)
			var wg sync.WaitGroup
			for range tc.conns {
				data := randomBytes(t, tc.size)
				c := dial(t, l)
				c.SetDeadline(time.Now().Add(10 * time.Second))
				wg.Add(1)
				go func() {
					defer wg.Done()
					sent := make(chan error, 1)
					go func() {
						_, err := c.Write(data)
						if err == nil {
							err = c.CloseWrite()
						}
						sent <- err
					}()
					h := sha256.New()
					n, err := io.Copy(h, c)
					if err := <-sent; err != nil {
						t.Errorf("write: %v", err)
					}
					if err != nil {
						t.Errorf("read after %d bytes: %v", n, err)
						return
					}
					if want := sha256.Sum256(data); n != int64(len(data)) || !bytes.Equal(h.Sum(nil), want[:]) {
						t.Errorf("echoed %d bytes, want %d, or they differ", n, len(data))
					}
				}()
			}
			wg.Wait()
			if st := l.Stats(); st.Up != int64(tc.conns*tc.size) || st.Down != st.Up || st.Accepted != int64(tc.conns) {
				t.Errorf("stats %+v, want %d bytes each way and %d connections", st, tc.conns*tc.size, tc.conns)
			}
			if !waitFor(time.Second, func() bool { return l.Stats().Active == 0 }) {
				t.Errorf("%d connections still active 1s after both ends closed", l.Stats().Active)
			}
		})
	}
}

// queued returns the most bytes one direction of a connection holds.
func (l *Link) queued() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	most := 0
	for c := range l.conns {
		c.mu.Lock()
		for _, p := range []*pipe{c.up, c.down} {
			if p != nil {
				p.mu.Lock()
				most = max(most, int(p.tail-p.head))
				p.mu.Unlock()
			}
		}
		c.mu.Unlock()
	}
	return most
}

// TestBackpressure checks that a link whose target does not read holds
// no more than its bound, and that the sender is then blocked.
func TestBackpressure(t *testing.T) {
	stall := make(chan struct{})
	s := newServer(t, func(s *server, c *net.TCPConn) {
		select {
		case <-stall:
		case <-time.After(10 * time.Second):
		}
		sink(s, c)
	})
	defer close(stall)
	cfg := Config{Rate: 100e6, Delay: 10 * time.Millisecond}
	l := listen(t, s.addr(), cfg)
	c := dial(t, l)
	written, wait := flood([]*net.TCPConn{c})
	defer func() { c.Close(); wait() }()
	// Wait for the sender to be blocked: nothing written for 200 ms.
	var last int64 = -1
	blocked := waitFor(5*time.Second, func() bool {
		n := written.Load()
		if n != last {
			last = n
			return false
		}
		time.Sleep(200 * time.Millisecond)
		return written.Load() == n
	})
	if !blocked {
		t.Fatal("sender not blocked 5s into a stalled transfer")
	}
	limit := l.queueLimit(cfg.Rate)
	t.Logf("sender wrote %d bytes, link holds %d, limit %d", written.Load(), l.queued(), limit)
	if q := l.queued(); q > limit || q < limit/2 {
		t.Errorf("link holds %d bytes, want %d at most, and about that", q, limit)
	}
	// The endpoints' and the proxy's socket buffers hold the rest; they
	// are not the link's, but they are bounded too.
	if w := written.Load(); w > int64(limit)+64<<20 {
		t.Errorf("sender wrote %d bytes into a stalled link", w)
	}
}

// TestClose closes a link with connections in every state: sending into
// a target that does not read, in a black hole, and waiting for one to
// end to be connected; Close returns at once and leaves no goroutine.
func TestClose(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	stall := make(chan struct{})
	s := newServer(t, func(s *server, c *net.TCPConn) {
		<-stall
		sink(s, c)
	})
	l, err := Listen("127.0.0.1:0", s.addr(), Config{Rate: 100e6, Delay: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	c1 := dial(t, l)
	_, wait := flood([]*net.TCPConn{c1})
	if !waitFor(2*time.Second, func() bool { return l.queued() >= 64<<10 }) {
		t.Fatal("the link holds not 64 KiB 2s into a stalled transfer")
	}
	l.Blackhole(time.Minute)
	c2 := dial(t, l)
	if _, err := c2.Write([]byte("held")); err != nil {
		t.Fatal(err)
	}
	if !waitFor(time.Second, func() bool { return l.Stats().Active == 2 }) {
		t.Fatalf("%d connections active, want 2", l.Stats().Active)
	}

	start := time.Now()
	if err := l.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("Close took %v", el)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	c2.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := c2.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("client read after Close: %v, want a reset", err)
	}
	c1.Close()
	wait()
	if _, err := net.DialTimeout("tcp", l.Addr().String(), time.Second); err == nil {
		t.Error("link still accepts after Close")
	}
	close(stall)
	s.close()
	c2.Close()
	goleak.VerifyNone(t, ignore)
}
