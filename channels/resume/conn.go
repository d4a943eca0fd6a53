package resume

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

const (
	ackEvery = 128 << 10            // received bytes that call for an acknowledgement at once
	ackDelay = 5 * time.Millisecond // how long a smaller number may wait
)

// Conn is one session: a net.Conn that survives the loss of the
// connection under it (see the package documentation). Its methods may
// be called concurrently, as a net.Conn's.
type Conn struct {
	cfg    Config
	st     *counters
	client bool
	token  [16]byte
	peerID [32]byte // the peer certificate's hash on the first connection
	hasID  bool
	local  net.Addr
	remote net.Addr
	redial func(context.Context) (net.Conn, error) // the dialer's transport
	onEnd  func()                                  // after Close: the listener forgets the session

	ctx    context.Context // ends dials when the session closes
	cancel context.CancelFunc
	wg     sync.WaitGroup // the sender, the readers, the reconnection
	ended  chan struct{}  // closed when Close has finished
	turnMu sync.Mutex     // one returning connection at a time

	mu         sync.Mutex
	cond       sync.Cond
	cur        net.Conn // nil while down
	gen        uint64   // bumped whenever cur changes: a stale goroutine's work is dropped
	readerDone chan struct{}
	downAt     time.Time // the outage's start, zero while up
	outageSum  time.Duration
	lastErr    error // what lost the last connection
	err        error // the session failed for good
	closing    bool  // Close was called
	dead       bool  // Close is tearing down
	budget     *time.Timer
	tick       *time.Timer // wakes the sender for heartbeats and acknowledgements
	scratch    []byte      // the sender's frame

	// What this end writes: the replay buffer holds [acked, sent).
	sbuf       []byte
	sent       uint64 // bytes taken by Write
	acked      uint64 // bytes the peer has acknowledged
	wire       uint64 // bytes handed to the current connection (from acked on)
	lastWrite  time.Time
	finSent    bool // our end of stream is on the current connection
	peerGotFin bool // the peer said it has our end of stream

	// What this end receives: rbuf[rhead:rhead+rlen] (a ring) is unread.
	rbuf     []byte
	rhead    int
	rlen     int
	recvd    uint64 // bytes received in the session
	ackSent  uint64 // the last acknowledgement written
	ackNow   bool   // write an acknowledgement at once
	rEOF     bool   // the peer's end of stream came
	peerDone bool   // the peer said bye: the session is over

	// A listener's reconnection not yet counted (see install).
	unconfirmed       bool
	unconfirmedResent int64
	bye               bool // Close is done: say bye
	byeSent           bool
	finAckSent        bool // we have told the peer its end of stream came

	rd, wd   deadline
	lingerTo *time.Timer
}

// deadline is a net.Conn deadline whose clock stops during outages: base
// is the session's outage time when it was set; timer wakes the waiters
// when it expires.
type deadline struct {
	t     time.Time
	base  time.Duration
	timer *time.Timer
}

func newConn(cfg Config, st *counters, client bool, u net.Conn) *Conn {
	c := &Conn{cfg: cfg, st: st, client: client, local: u.LocalAddr(), remote: u.RemoteAddr(),
		ended: make(chan struct{}),
		sbuf:  make([]byte, cfg.Window), rbuf: make([]byte, cfg.RecvBuffer), scratch: make([]byte, frameHdr+maxFrame)}
	c.cond.L = &c.mu
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.peerID, c.hasID = peerIdentity(u)
	wake := func() { c.cond.Broadcast() }
	c.tick = time.AfterFunc(time.Hour, wake)
	c.rd.timer = time.AfterFunc(time.Hour, wake)
	c.wd.timer = time.AfterFunc(time.Hour, wake)
	c.lingerTo = time.AfterFunc(time.Hour, wake)
	for _, t := range []*time.Timer{c.tick, c.rd.timer, c.wd.timer, c.lingerTo} {
		t.Stop()
	}
	st.add(func(s *Stats) { s.Sessions++ })
	return c
}

// peerIdentity is the hash of a TLS connection's peer certificate.
func peerIdentity(u net.Conn) ([32]byte, bool) {
	cs, ok := u.(interface{ ConnectionState() tls.ConnectionState })
	if !ok {
		return [32]byte{}, false
	}
	certs := cs.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return [32]byte{}, false
	}
	return sha256.Sum256(certs[0].Raw), true
}

// start runs the session on its first connection.
func (c *Conn) start(u net.Conn) {
	c.mu.Lock()
	c.cur = u
	c.gen = 1
	c.lastWrite = time.Now()
	c.readerDone = make(chan struct{})
	c.wg.Add(2)
	go c.read(u, c.gen, c.readerDone)
	go c.send()
	c.mu.Unlock()
}

// abort closes u at once: a TLS connection without its close_notify,
// which could wait on a dead link.
func abort(u net.Conn) {
	if nc, ok := u.(interface{ NetConn() net.Conn }); ok {
		nc.NetConn().Close()
	}
	u.Close()
}

func (c *Conn) event(e Event) {
	if c.cfg.Events != nil {
		if e.Remote == nil {
			e.Remote = c.remote
		}
		c.cfg.Events(e)
	}
}

// loseLocked drops connection generation gen after err: the dialer
// starts reconnecting, the listener starts the retry budget's clock.
func (c *Conn) loseLocked(gen uint64, err error) {
	if c.gen != gen || c.cur == nil || c.dead || c.err != nil || c.peerDone {
		return
	}
	u := c.cur
	c.cur = nil
	c.gen++
	now := time.Now()
	c.downAt = now
	c.lastErr = err
	c.st.goDown(now)
	abort(u)
	c.cond.Broadcast()
	c.event(Event{Kind: Lost, Err: err})
	if c.client {
		c.wg.Add(1)
		go c.reconnect(c.readerDone, now)
		return
	}
	at := now
	c.budget = time.AfterFunc(c.cfg.Retry, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.cur == nil && c.downAt.Equal(at) {
			c.failLocked(fmt.Errorf("%w (%v) waiting for the dialing end to return; lost: %v", ErrRetryBudget, c.cfg.Retry, c.lastErr))
		}
	})
}

// failLocked fails the session for good.
func (c *Conn) failLocked(err error) {
	if c.err != nil || c.dead {
		return
	}
	c.err = err
	if c.cur != nil {
		abort(c.cur)
		c.cur = nil
		c.gen++
	} else if !c.downAt.IsZero() {
		c.endOutageLocked(time.Now())
	}
	c.st.add(func(s *Stats) { s.Failed++ })
	c.cond.Broadcast()
	c.event(Event{Kind: Failed, Err: err})
}

func (c *Conn) endOutageLocked(now time.Time) time.Duration {
	d := now.Sub(c.downAt)
	c.outageSum += d
	c.downAt = time.Time{}
	c.st.goUp(now)
	if c.budget != nil {
		c.budget.Stop()
	}
	return d
}

// reconnect is the dialer's: it dials again until the session has a
// connection, the retry budget is spent, or the session closes.
func (c *Conn) reconnect(prevReader <-chan struct{}, since time.Time) {
	defer c.wg.Done()
	<-prevReader // what it received is counted before we say how much
	var b backoff
	for {
		c.mu.Lock()
		lastErr := c.lastErr
		c.mu.Unlock()
		left := c.cfg.Retry - time.Since(since)
		if left <= 0 {
			c.mu.Lock()
			c.failLocked(fmt.Errorf("%w (%v); last: %v", ErrRetryBudget, c.cfg.Retry, lastErr))
			c.mu.Unlock()
			return
		}
		ctx, cancel := context.WithTimeout(c.ctx, min(c.cfg.HandshakeTimeout, left))
		err := c.dialResume(ctx)
		cancel()
		if err == nil || c.ctx.Err() != nil {
			return
		}
		if permanent(err) {
			c.mu.Lock()
			if errors.Is(err, errUnknown) && c.closing && c.acked == c.sent {
				// The listener had all we wrote and ended the session
				// before its last word reached us: we are done too.
				c.peerDone = true
				c.endOutageLocked(time.Now())
				c.cond.Broadcast()
			} else {
				c.failLocked(err)
			}
			c.mu.Unlock()
			return
		}
		c.mu.Lock()
		c.lastErr = err
		c.mu.Unlock()
		if !b.wait(c.ctx, left) {
			return
		}
	}
}

// backoff spaces the attempts to (re)connect: 50 ms, doubled each time
// up to a second.
type backoff struct{ d time.Duration }

// wait sleeps the next pause, never past left; false if ctx ended first.
func (b *backoff) wait(ctx context.Context, left time.Duration) bool {
	b.d = min(max(2*b.d, 50*time.Millisecond), time.Second)
	t := time.NewTimer(min(b.d, max(left, time.Millisecond)))
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// dialResume is one attempt of the dialer to resume the session.
func (c *Conn) dialResume(ctx context.Context) error {
	u, err := c.redial(ctx)
	if err != nil {
		return err
	}
	if err := c.resumeOn(ctx, u); err != nil {
		abort(u)
		return err
	}
	return nil
}

func (c *Conn) resumeOn(ctx context.Context, u net.Conn) error {
	if dl, ok := ctx.Deadline(); ok {
		u.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { u.SetDeadline(time.Now()) })
	defer stop()
	if id, ok := peerIdentity(u); ok != c.hasID || id != c.peerID {
		// Not the listener of the session's first connection: it must
		// not learn the token.
		return fmt.Errorf("%w: the listener's certificate is not the one of the session's first connection", ErrRefused)
	}
	c.mu.Lock()
	gen, recvd := c.gen, c.recvd
	c.mu.Unlock()
	if _, err := u.Write(hello{kind: kindResume, token: c.token, recvd: recvd}.marshal()); err != nil {
		return err
	}
	b := make([]byte, helloSize)
	if _, err := io.ReadFull(u, b); err != nil {
		return err
	}
	h, err := parseHello(b)
	if err != nil {
		return fmt.Errorf("%w: the listener's answer: %v", ErrProtocol, err)
	}
	if h.kind == statusUnknown {
		return fmt.Errorf("%w: %w", ErrRefused, errUnknown)
	}
	if h.kind != statusOK {
		return fmt.Errorf("%w: %s", ErrRefused, statusString(h.kind))
	}
	u.SetDeadline(time.Time{})
	return c.install(u, gen, h.recvd)
}

// errUnknown is the listener's answer for a session it does not have.
var errUnknown = errors.New(statusText[statusUnknown])

func statusString(s byte) string {
	if int(s) < len(statusText) {
		return statusText[s]
	}
	return fmt.Sprintf("status %d", s)
}

// install makes u the session's connection; the peer has received
// peerRecvd bytes of what this end wrote. gen is the generation the
// caller saw before the hellos.
func (c *Conn) install(u net.Conn, gen uint64, peerRecvd uint64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead || c.err != nil || c.gen != gen || c.cur != nil {
		return net.ErrClosed
	}
	if peerRecvd < c.acked || peerRecvd > c.sent {
		err := fmt.Errorf("%w: the peer says it has %d bytes; %d..%d are possible", ErrProtocol, peerRecvd, c.acked, c.sent)
		c.failLocked(err)
		return err
	}
	resent := int64(0)
	if c.wire > peerRecvd {
		resent = int64(c.wire - peerRecvd)
	}
	c.acked, c.wire = peerRecvd, peerRecvd
	if !c.peerGotFin {
		c.finSent = false
	}
	c.finAckSent = false
	c.gen++
	c.cur = u
	now := time.Now()
	outage := c.endOutageLocked(now)
	if c.client {
		c.st.add(func(s *Stats) { s.Reconnects++; s.Resent += resent })
	} else {
		// Counted once the dialer's first frame shows it took our
		// answer: a connection lost in between is one the dialer
		// does not count either.
		c.unconfirmed, c.unconfirmedResent = true, resent
	}
	c.ackNow = true
	c.lastWrite = now
	c.readerDone = make(chan struct{})
	c.wg.Add(1)
	go c.read(u, c.gen, c.readerDone)
	c.armLocked(&c.rd)
	c.armLocked(&c.wd)
	c.cond.Broadcast()
	c.event(Event{Kind: Resumed, Outage: outage, Resent: resent})
	return nil
}

// takeover is the listener's side of a returning connection u, whose
// dialer has received peerRecvd bytes: it replaces the current
// connection, if the listener has not seen it fail yet, answers, and
// installs u. It returns the status it answered.
func (c *Conn) takeover(u net.Conn, peerRecvd uint64) byte {
	c.turnMu.Lock()
	defer c.turnMu.Unlock()
	c.mu.Lock()
	if c.dead || c.err != nil {
		c.mu.Unlock()
		return statusUnknown
	}
	if peerRecvd < c.acked || peerRecvd > c.sent {
		c.mu.Unlock()
		return statusPast
	}
	if c.cur != nil {
		c.loseLocked(c.gen, errors.New("replaced by a returning connection"))
	}
	prev := c.readerDone
	c.mu.Unlock()
	<-prev
	c.mu.Lock()
	gen, recvd := c.gen, c.recvd
	c.mu.Unlock()
	if _, err := u.Write(hello{kind: statusOK, token: c.token, recvd: recvd}.marshal()); err != nil {
		return statusOK // the dialer will try again
	}
	u.SetDeadline(time.Time{})
	if c.install(u, gen, peerRecvd) != nil {
		abort(u)
	}
	return statusOK
}

// read is the reader of one connection generation: it takes frames until
// the connection fails or is replaced.
func (c *Conn) read(u net.Conn, gen uint64, done chan<- struct{}) {
	defer c.wg.Done()
	defer close(done)
	br := bufio.NewReaderSize(u, 64<<10)
	var hdr [frameHdr]byte
	for {
		u.SetReadDeadline(time.Now().Add(c.cfg.StallTimeout))
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			c.mu.Lock()
			c.loseLocked(gen, readErr(err, c.cfg.StallTimeout))
			c.mu.Unlock()
			return
		}
		f, err := parseFrame(hdr[:])
		c.mu.Lock()
		if c.gen != gen {
			c.mu.Unlock()
			return
		}
		if err == nil {
			err = c.ackLocked(f)
		}
		if c.unconfirmed {
			c.unconfirmed = false
			resent := c.unconfirmedResent
			c.st.add(func(s *Stats) { s.Reconnects++; s.Resent += resent })
		}
		if err == nil && f.typ == frameData && c.rEOF {
			err = errors.New("data after the end of stream")
		}
		if err != nil {
			c.failLocked(fmt.Errorf("%w: from %s: %v", ErrProtocol, c.remote, err))
			c.mu.Unlock()
			return
		}
		switch f.typ {
		case frameBye:
			c.peerDone = true
			c.cond.Broadcast()
			c.mu.Unlock()
			return
		case frameFin:
			c.rEOF = true
			c.ackNow = true
			c.cond.Broadcast()
		case frameData:
			n := int(f.n)
			for len(c.rbuf)-c.rlen < n {
				if c.gen != gen || c.dead || c.err != nil {
					c.mu.Unlock()
					return
				}
				c.cond.Wait()
			}
			tail := (c.rhead + c.rlen) % len(c.rbuf)
			c.mu.Unlock()
			// Only this goroutine writes the free part of the ring.
			u.SetReadDeadline(time.Now().Add(c.cfg.StallTimeout))
			first := min(n, len(c.rbuf)-tail)
			_, err := io.ReadFull(br, c.rbuf[tail:tail+first])
			if err == nil && first < n {
				_, err = io.ReadFull(br, c.rbuf[:n-first])
			}
			c.mu.Lock()
			if err != nil {
				c.loseLocked(gen, readErr(err, c.cfg.StallTimeout))
				c.mu.Unlock()
				return
			}
			if c.gen != gen {
				c.mu.Unlock()
				return
			}
			c.rlen += n
			c.recvd += uint64(n)
			if c.recvd-c.ackSent >= ackEvery {
				c.ackNow = true
			}
			c.cond.Broadcast()
		}
		c.mu.Unlock()
	}
}

func readErr(err error, stall time.Duration) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("nothing came for %v", stall)
	}
	return err
}

// ackLocked takes the peer's acknowledgement.
func (c *Conn) ackLocked(f frame) error {
	if f.ack < c.acked || f.ack > c.wire {
		return fmt.Errorf("acknowledges %d bytes; %d..%d are possible", f.ack, c.acked, c.wire)
	}
	if f.flags&flagGotFin != 0 {
		if !c.finSent {
			return errors.New("acknowledges an end of stream not sent")
		}
		c.peerGotFin = true
	}
	if f.ack != c.acked || f.flags != 0 {
		c.acked = f.ack
		c.cond.Broadcast()
	}
	return nil
}

// send is the session's writer: data, the end of stream,
// acknowledgements and heartbeats, on whatever connection is current.
func (c *Conn) send() {
	defer c.wg.Done()
	c.mu.Lock()
	defer c.mu.Unlock()
	for !c.dead && c.err == nil {
		u, gen := c.cur, c.gen
		if u == nil {
			c.cond.Wait()
			continue
		}
		now := time.Now()
		idle := now.Sub(c.lastWrite)
		f := frame{typ: frameAck}
		switch {
		case c.wire < c.sent:
			at := int(c.wire % uint64(len(c.sbuf)))
			n := min(int(c.sent-c.wire), maxFrame, len(c.sbuf)-at)
			copy(c.scratch[frameHdr:], c.sbuf[at:at+n])
			f = frame{typ: frameData, n: uint32(n)}
			c.wire += uint64(n)
		case c.closing && !c.finSent:
			f.typ = frameFin
			c.finSent = true
		case c.bye && !c.byeSent:
			f.typ = frameBye
		case c.ackNow || c.rEOF && !c.finAckSent || c.recvd > c.ackSent && idle >= ackDelay || idle >= c.cfg.Heartbeat:
		default:
			wait := c.cfg.Heartbeat - idle
			if c.recvd > c.ackSent {
				wait = min(wait, ackDelay-idle)
			}
			c.tick.Reset(wait)
			c.cond.Wait()
			continue
		}
		f.ack = c.recvd
		c.ackSent, c.ackNow = c.recvd, false
		if c.rEOF {
			f.flags = flagGotFin
			c.finAckSent = true
		}
		f.put(c.scratch)
		c.lastWrite = now
		c.mu.Unlock()
		_, err := u.Write(c.scratch[:frameHdr+int(f.n)])
		c.mu.Lock()
		if err != nil {
			c.loseLocked(gen, err)
		} else if f.typ == frameBye {
			c.byeSent = true
		}
		c.cond.Broadcast() // Close may wait for the end of stream to go
	}
}

// Read reads what the peer wrote; io.EOF once the peer has closed and
// everything is read.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.rlen == 0 {
		switch {
		case c.rEOF, c.peerDone:
			return 0, io.EOF
		case c.err != nil:
			return 0, c.err
		case c.closing:
			return 0, net.ErrClosed
		case c.expiredLocked(c.rd):
			return 0, os.ErrDeadlineExceeded
		}
		c.cond.Wait()
	}
	n := copy(p[:min(len(p), c.rlen)], c.rbuf[c.rhead:min(len(c.rbuf), c.rhead+c.rlen)])
	if n < len(p) && n < c.rlen {
		n += copy(p[n:min(len(p), c.rlen)], c.rbuf)
	}
	c.rhead = (c.rhead + n) % len(c.rbuf)
	c.rlen -= n
	c.cond.Broadcast() // the reader may wait for room
	return n, nil
}

// Write takes p into the replay buffer, waiting while it is full, and
// returns; the session's writer sends it. It fails only once the
// session has failed or is closed, or at the write deadline.
func (c *Conn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	done := 0
	for len(p) > 0 {
		for {
			switch {
			case c.err != nil:
				return done, c.err
			case c.closing:
				return done, net.ErrClosed
			case c.peerDone:
				return done, errPeerClosed
			}
			if c.sent-c.acked < uint64(len(c.sbuf)) {
				break
			}
			if c.expiredLocked(c.wd) {
				return done, os.ErrDeadlineExceeded
			}
			c.cond.Wait()
		}
		at := int(c.sent % uint64(len(c.sbuf)))
		n := min(len(p), len(c.sbuf)-int(c.sent-c.acked), len(c.sbuf)-at)
		copy(c.sbuf[at:], p[:n])
		c.sent += uint64(n)
		done += n
		p = p[n:]
		c.cond.Broadcast()
	}
	return done, nil
}

// errPeerClosed is Write's error once the peer has closed the session.
var errPeerClosed = fmt.Errorf("resume: the peer closed the session: %w", net.ErrClosed)

// Close ends the session: it sends the end of stream and waits, at most
// Config.Linger, for the peer to acknowledge everything written (through
// reconnections if need be); then it closes the connection and returns
// once every goroutine of the session has. Its error says what was not
// acknowledged.
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		<-c.ended
		return net.ErrClosed
	}
	c.closing = true
	c.lingerTo.Reset(c.cfg.Linger)
	end := time.Now().Add(c.cfg.Linger)
	c.cond.Broadcast()
	// The dialer waits for the listener to confirm its end of stream:
	// the listener, which cannot dial, may then forget the session when
	// it has everything, and a dialer that finds it gone while closing
	// knows it was done (see reconnect).
	// A listener's session that is down with nothing of ours
	// unacknowledged has nothing to wait for: it cannot call its dialer
	// back (one that gave up on a half-opened session never comes).
	for c.err == nil && time.Now().Before(end) && !c.peerDone &&
		!(c.acked == c.sent && (c.finSent && c.peerGotFin || !c.client && c.rEOF && c.finAckSent)) &&
		!(!c.client && c.cur == nil && c.acked == c.sent) {
		c.cond.Wait()
	}
	if c.err == nil && !c.peerDone && c.cur != nil && time.Now().Before(end) {
		// The peer may wait for us: say bye, so that it does not take
		// the connection's end for a loss.
		c.bye = true
		c.cond.Broadcast()
		for !c.byeSent && c.cur != nil && c.err == nil && !c.peerDone && time.Now().Before(end) {
			c.cond.Wait()
		}
	}
	var err error
	if c.acked != c.sent {
		err = fmt.Errorf("resume: closed with %d bytes the peer did not acknowledge", c.sent-c.acked)
	}
	c.dead = true
	u := c.cur
	c.cur = nil
	c.gen++
	if !c.downAt.IsZero() {
		c.endOutageLocked(time.Now())
	}
	c.cond.Broadcast()
	c.mu.Unlock()
	if u != nil {
		if err != nil {
			abort(u)
		} else {
			u.Close()
		}
	}
	c.cancel()
	c.wg.Wait()
	for _, t := range []*time.Timer{c.tick, c.rd.timer, c.wd.timer, c.lingerTo} {
		t.Stop()
	}
	if c.budget != nil {
		c.budget.Stop()
	}
	c.mu.Lock()
	onEnd := c.onEnd
	c.mu.Unlock()
	if onEnd != nil {
		onEnd()
	}
	close(c.ended)
	return err
}

// Err returns why the session failed, nil while it has not.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *Conn) LocalAddr() net.Addr  { return c.local }
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

func (c *Conn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

func (c *Conn) SetReadDeadline(t time.Time) error  { return c.setDeadline(&c.rd, t) }
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.setDeadline(&c.wd, t) }

func (c *Conn) setDeadline(d *deadline, t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	d.t, d.base = t, c.outageLocked()
	c.armLocked(d)
	return nil
}

// outageLocked is the session's outage time so far.
func (c *Conn) outageLocked() time.Duration {
	if c.downAt.IsZero() {
		return c.outageSum
	}
	return c.outageSum + time.Since(c.downAt)
}

// effective is when d expires given the outages since it was set; zero
// while down (it does not expire then).
func (c *Conn) effectiveLocked(d deadline) time.Time {
	if d.t.IsZero() || !c.downAt.IsZero() {
		return time.Time{}
	}
	return d.t.Add(c.outageSum - d.base)
}

func (c *Conn) expiredLocked(d deadline) bool {
	e := c.effectiveLocked(d)
	return !e.IsZero() && !time.Now().Before(e)
}

// armLocked sets d's timer to wake the waiters when d expires (at once
// if it has); a later or no deadline needs no waking.
func (c *Conn) armLocked(d *deadline) {
	d.timer.Stop()
	if e := c.effectiveLocked(*d); !e.IsZero() {
		d.timer.Reset(max(time.Until(e), 0))
	}
}
