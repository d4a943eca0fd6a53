package resume_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pagewire/pagewire/channels"
	"github.com/pagewire/pagewire/channels/resume"
	"github.com/pagewire/pagewire/internal/certs"
	"github.com/pagewire/pagewire/internal/lab/linkemu"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// rig is a listener and a dialer with an emulated link between them.
type rig struct {
	ln    *resume.Listener
	d     *resume.Dialer
	link  *linkemu.Link
	other channels.Dialer // dials the link with another client certificate (TLS rigs)
	files certs.Files
}

func newRig(t *testing.T, cfg resume.Config, rate int64, useTLS bool) *rig {
	t.Helper()
	raw, err := channels.Listen("tcp:127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{}
	var base net.Listener = raw
	var serverCfg, clientCfg, otherCfg *tls.Config
	if useTLS {
		f, others, err := certs.MakeClients(t.TempDir(), []string{"127.0.0.1"}, time.Hour, 1)
		if err != nil {
			t.Fatal(err)
		}
		r.files = f
		if serverCfg, err = channels.ServerTLS(channels.TLSFiles{Cert: f.ServerCert, Key: f.ServerKey, CA: f.CA}); err != nil {
			t.Fatal(err)
		}
		if clientCfg, err = channels.ClientTLS(channels.TLSFiles{Cert: f.ClientCert, Key: f.ClientKey, CA: f.CA}); err != nil {
			t.Fatal(err)
		}
		if otherCfg, err = channels.ClientTLS(channels.TLSFiles{Cert: others[0].Cert, Key: others[0].Key, CA: f.CA}); err != nil {
			t.Fatal(err)
		}
		base = channels.TLSListener(raw, serverCfg, nil)
	}
	r.ln = resume.NewListener(base, cfg)
	r.link, err = linkemu.Listen("127.0.0.1:0", raw.Addr().String(), linkemu.Config{Rate: rate, Delay: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	addr := "tcp:" + r.link.Addr().String()
	td, err := channels.NewDialer(addr)
	if err != nil {
		t.Fatal(err)
	}
	r.other = td
	if useTLS {
		if r.other, err = channels.TLSDialer(td, addr, otherCfg); err != nil {
			t.Fatal(err)
		}
		if td, err = channels.TLSDialer(td, addr, clientCfg); err != nil {
			t.Fatal(err)
		}
	}
	r.d = resume.NewDialer(td, cfg)
	t.Cleanup(func() {
		r.ln.Close()
		r.link.Close()
	})
	return r
}

// stream is n deterministic bytes.
func stream(seed uint64, n int) []byte {
	b := make([]byte, n)
	rng := rand.NewChaCha8([32]byte{byte(seed)})
	rng.Read(b)
	return b
}

// session dials and accepts one session.
func (r *rig) session(t *testing.T) (client, server net.Conn) {
	t.Helper()
	acc := make(chan net.Conn, 1)
	go func() {
		c, err := r.ln.Accept()
		if err != nil {
			t.Error(err)
		}
		acc <- c
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client, err := r.d.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case server = <-acc:
	case <-time.After(10 * time.Second):
		t.Fatal("no session accepted")
	}
	if server == nil {
		t.FailNow()
	}
	return client, server
}

// exchange writes out on a and want on b at once, reads each on the
// other side, and checks both; then a closes and b reads the end.
func exchange(t *testing.T, a, b net.Conn, out, back []byte, during func()) {
	t.Helper()
	var wg sync.WaitGroup
	var gotA, gotB []byte
	var errs [4]error
	wg.Go(func() { _, errs[0] = a.Write(out) })
	wg.Go(func() { _, errs[1] = b.Write(back) })
	wg.Go(func() { gotB, errs[2] = readN(b, len(out)) })
	wg.Go(func() { gotA, errs[3] = readN(a, len(back)) })
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	if during != nil {
		during()
	}
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		a.Close()
		b.Close()
		<-done
		t.Fatal("the exchange did not end within 60s")
	}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	if sha256.Sum256(gotB) != sha256.Sum256(out) || sha256.Sum256(gotA) != sha256.Sum256(back) {
		t.Fatal("the bytes that came are not the bytes written")
	}
	closed := make(chan error, 1)
	go func() { closed <- a.Close() }()
	if n, err := b.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("after the peer's Close: %d, %v; want 0, EOF", n, err)
	}
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func readN(c net.Conn, n int) ([]byte, error) {
	b := make([]byte, n)
	_, err := io.ReadFull(c, b)
	return b, err
}

func TestStreamSurvivesResets(t *testing.T) {
	cfg := resume.Config{Window: 1 << 20}
	r := newRig(t, cfg, 400e6, false)
	client, server := r.session(t)
	out, back := stream(1, 48<<20), stream(2, 4<<20)
	exchange(t, client, server, out, back, func() {
		for range 6 {
			time.Sleep(120 * time.Millisecond)
			r.link.Reset()
		}
	})
	ds, ls := r.d.Stats(), r.ln.Stats()
	t.Logf("dialer %+v, listener %+v", ds, ls)
	if ds.Reconnects < 1 || ls.Reconnects != ds.Reconnects || ds.Failed+ls.Failed != 0 {
		t.Fatalf("reconnects %d and %d, failed %d and %d: want >= 1, equal, none", ds.Reconnects, ls.Reconnects, ds.Failed, ls.Failed)
	}
	if ds.Resent > int64(ds.Reconnects)*int64(cfg.Window) || ds.Resent == 0 {
		t.Fatalf("resent %d bytes in %d reconnections: want some, at most a window (%d) each", ds.Resent, ds.Reconnects, cfg.Window)
	}
}

func TestStreamSurvivesResetsTLS(t *testing.T) {
	r := newRig(t, resume.Config{}, 200e6, true)
	client, server := r.session(t)
	exchange(t, client, server, stream(3, 16<<20), stream(4, 1<<20), func() {
		for range 3 {
			time.Sleep(150 * time.Millisecond)
			r.link.Reset()
		}
	})
	if ds := r.d.Stats(); ds.Reconnects < 1 {
		t.Fatalf("%+v: want reconnections", ds)
	}
}

// TestBlackHole: a link that forwards nothing for longer than the stall
// timeout and than every deadline the user set is replaced, and the
// user's deadlines do not fire meanwhile.
func TestBlackHole(t *testing.T) {
	cfg := resume.Config{StallTimeout: 400 * time.Millisecond, Heartbeat: 100 * time.Millisecond, HandshakeTimeout: 500 * time.Millisecond}
	r := newRig(t, cfg, 100e6, false)
	client, server := r.session(t)
	// 1.5s: shorter than the black hole, longer than the transfer's
	// time on a working link plus the stall timeout.
	for _, c := range []net.Conn{client, server} {
		c.SetDeadline(time.Now().Add(1500 * time.Millisecond))
	}
	start := time.Now()
	exchange(t, client, server, stream(5, 3<<20), stream(6, 256<<10), func() {
		time.Sleep(50 * time.Millisecond)
		r.link.Blackhole(2500 * time.Millisecond)
	})
	if el := time.Since(start); el < 2500*time.Millisecond {
		t.Fatalf("done in %v, inside the black hole", el)
	}
	ds := r.d.Stats()
	t.Logf("%+v", ds)
	if ds.Reconnects < 1 || ds.Outage < time.Second {
		t.Fatalf("%+v: want a reconnection after an outage of about 2s", ds)
	}
}

// TestDeadline: deadlines still fire on a session that is up.
func TestDeadline(t *testing.T) {
	r := newRig(t, resume.Config{}, 0, false)
	client, server := r.session(t)
	defer client.Close()
	defer server.Close()
	server.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	start := time.Now()
	if _, err := server.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("got %v, want a timeout", err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("the timeout took %v", el)
	}
}

// TestRetryBudget: an outage past Retry fails both ends, in time.
func TestRetryBudget(t *testing.T) {
	cfg := resume.Config{Retry: time.Second, HandshakeTimeout: 300 * time.Millisecond}
	r := newRig(t, cfg, 0, false)
	client, server := r.session(t)
	if _, err := client.Write([]byte("before")); err != nil {
		t.Fatal(err)
	}
	if b, err := readN(server, 6); err != nil || string(b) != "before" {
		t.Fatal(b, err)
	}
	start := time.Now()
	r.link.Close() // resets the connection and refuses the new ones
	errs := make(chan error, 2)
	go func() {
		_, err := readN(server, 1)
		errs <- err
	}()
	go func() {
		_, err := readN(client, 1)
		errs <- err
	}()
	for range 2 {
		select {
		case err := <-errs:
			if !errors.Is(err, resume.ErrRetryBudget) {
				t.Fatalf("got %v, want ErrRetryBudget", err)
			}
		case <-time.After(cfg.Retry + 5*time.Second):
			t.Fatal("no failure within the budget + 5s")
		}
	}
	if el := time.Since(start); el < cfg.Retry {
		t.Fatalf("failed after %v, inside the budget", el)
	}
	if _, err := client.Write([]byte("x")); !errors.Is(err, resume.ErrRetryBudget) {
		t.Fatalf("Write after the failure: %v", err)
	}
	closeFast(t, client)
	closeFast(t, server)
	if ds, ls := r.d.Stats(), r.ln.Stats(); ds.Failed != 1 || ls.Failed != 1 {
		t.Fatalf("failed %d and %d, want 1 and 1", ds.Failed, ls.Failed)
	}
}

func closeFast(t *testing.T, c net.Conn) {
	t.Helper()
	start := time.Now()
	c.Close()
	if el := time.Since(start); el > time.Second {
		t.Fatalf("Close of a failed session took %v", el)
	}
}

// TestImpostors: a returning connection with a wrong token, or with the
// right token and another certificate of the same CA, is refused; the
// session goes on.
func TestImpostors(t *testing.T) {
	r := newRig(t, resume.Config{}, 0, true)
	client, server := r.session(t)
	token := resume.Token(client)
	wrong := token
	wrong[0] ^= 1
	for _, c := range []struct {
		name   string
		d      channels.Dialer
		token  [16]byte
		status byte
	}{
		{"wrong token", r.d, wrong, 1},
		{"another certificate", r.other, token, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := c.d
			if rd, ok := d.(*resume.Dialer); ok {
				d = resume.TransportOf(rd)
			}
			u, err := d.Dial(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			defer u.Close()
			u.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := u.Write(resume.Hello(2, c.token, 0)); err != nil {
				t.Fatal(err)
			}
			b, err := readN(u, 40)
			if err != nil {
				t.Fatal(err)
			}
			if string(b[:8]) != "PWRESUM1" || b[8] != c.status {
				t.Fatalf("answer % x, want status %d", b[:16], c.status)
			}
		})
	}
	exchange(t, client, server, stream(7, 1<<20), stream(8, 1<<10), nil)
	if ls := r.ln.Stats(); ls.Refused != 2 || ls.Reconnects != 0 {
		t.Fatalf("%+v: want 2 refused, no reconnection", ls)
	}
}

// TestPassthrough: a dialer that does not resume gets a plain connection
// with its first bytes intact, which outlives the listener's Close.
func TestPassthrough(t *testing.T) {
	r := newRig(t, resume.Config{}, 0, false)
	u, err := net.Dial("tcp", r.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	msg := []byte("PGWR and then the rest of a plain stream")
	u.Write(msg)
	c, err := r.ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// As a receiver does once its channels are there: the connection
	// handed on is no longer the listener's to close.
	r.ln.Close()
	got, err := readN(c, len(msg))
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("%q, %v", got, err)
	}
}

// TestNotResuming: a dialer facing a listener that does not resume says
// so.
func TestNotResuming(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		u, err := ln.Accept()
		if err != nil {
			return
		}
		readN(u, 40)
		u.Write([]byte("PGWR\x02\x00\x00\x00\x05bad magic"))
		u.Close()
	}()
	td, _ := channels.NewDialer("tcp:" + ln.Addr().String())
	_, err = resume.NewDialer(td, resume.Config{}).Dial(context.Background())
	<-done
	if !errors.Is(err, resume.ErrNotResuming) {
		t.Fatalf("got %v, want ErrNotResuming", err)
	}
}

// TestListenerStaysForSessions: closing the listener (as a receiver does
// once its channels are there) keeps its sessions resumable.
func TestListenerStaysForSessions(t *testing.T) {
	r := newRig(t, resume.Config{}, 0, false)
	client, server := r.session(t)
	r.ln.Close()
	if _, err := r.ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v", err)
	}
	exchange(t, client, server, stream(9, 4<<20), stream(10, 4<<10), func() {
		time.Sleep(20 * time.Millisecond)
		r.link.Reset()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := r.d.Dial(ctx); err == nil {
		t.Fatal("a new session after the listener's close and its sessions' end")
	}
}

// TestCloseDuringResets: both ends close at once, one after a last
// message, while the link is reset in the middle of their goodbyes: the
// message arrives, and neither Close waits out its linger.
func TestCloseDuringResets(t *testing.T) {
	r := newRig(t, resume.Config{}, 0, false)
	for i := range 30 {
		client, server := r.session(t)
		client.Write(make([]byte, 100000))
		if _, err := readN(server, 100000); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var dc, ds time.Duration
		var got []byte
		wg.Go(func() { server.Write([]byte("DONE")); s := time.Now(); server.Close(); ds = time.Since(s) })
		wg.Go(func() { got, _ = readN(client, 4); s := time.Now(); client.Close(); dc = time.Since(s) })
		time.Sleep(time.Duration(i) * 40 * time.Microsecond)
		r.link.Reset()
		wg.Wait()
		if string(got) != "DONE" || dc > 2*time.Second || ds > 2*time.Second {
			t.Errorf("round %d: read %q; Close took %v (dialer) and %v (listener)", i, got, dc, ds)
		}
	}
}
