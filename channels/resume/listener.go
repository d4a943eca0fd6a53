package resume

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// Listener accepts sessions on a listener of the transport, and takes
// back the connections of its sessions when their dialers return. A
// connection that does not open with the resume hello is handed to
// Accept as it is.
//
// Close stops Accept; the listener under it stays open, for returning
// connections, until every session it accepted is closed.
type Listener struct {
	ln  net.Listener
	cfg Config
	st  counters

	queue    chan net.Conn
	done     chan struct{} // closed by Close
	loopDone chan struct{}

	mu       sync.Mutex
	sessions map[[16]byte]*Conn
	shaking  map[net.Conn]bool // handshakes running
	hsDone   sync.Cond         // on mu: a handshake ended
	closed   bool
	shut     bool  // ln is closed
	err      error // ln's Accept failed
}

// NewListener serves sessions on ln, which it owns.
func NewListener(ln net.Listener, cfg Config) *Listener {
	l := &Listener{ln: ln, cfg: cfg.withDefaults(), queue: make(chan net.Conn), done: make(chan struct{}),
		loopDone: make(chan struct{}), sessions: make(map[[16]byte]*Conn), shaking: make(map[net.Conn]bool)}
	l.hsDone.L = &l.mu
	go l.loop()
	return l
}

// Stats returns the counters of the Listener's sessions.
func (l *Listener) Stats() Stats { return l.st.stats() }

// Addr is the address of the listener under l.
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

func (l *Listener) loop() {
	defer close(l.loopDone)
	for {
		u, err := l.ln.Accept()
		if err != nil {
			l.mu.Lock()
			if !l.shut {
				l.err = err
			}
			l.mu.Unlock()
			return
		}
		l.mu.Lock()
		if l.shut {
			l.mu.Unlock()
			u.Close()
			continue
		}
		l.shaking[u] = true
		l.mu.Unlock()
		go func() {
			l.handshake(u)
			l.mu.Lock()
			delete(l.shaking, u)
			l.hsDone.Broadcast()
			l.mu.Unlock()
		}()
	}
}

// Accept returns the next new session (a *Conn) or a connection that does
// not resume.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.queue:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	case <-l.loopDone:
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.err != nil {
			return nil, l.err
		}
		return nil, net.ErrClosed
	}
}

func (l *Listener) refuse(u net.Conn, err error) {
	l.st.add(func(s *Stats) { s.Refused++ })
	if l.cfg.Events != nil {
		l.cfg.Events(Event{Kind: Refused, Remote: u.RemoteAddr(), Err: err})
	}
}

func (l *Listener) answer(u net.Conn, status byte) {
	u.Write(hello{kind: status}.marshal())
	u.Close()
}

// handshake reads a connection's hello and does what it asks.
func (l *Listener) handshake(u net.Conn) {
	u.SetDeadline(time.Now().Add(l.cfg.HandshakeTimeout))
	b := make([]byte, helloSize)
	if n, err := io.ReadFull(u, b[:8]); err != nil {
		// Too little to tell: not ours, and nobody else's either.
		u.Close()
		if n > 0 {
			l.refuse(u, fmt.Errorf("%d bytes, then %v", n, err))
		}
		return
	}
	if string(b[:8]) != magic {
		u.SetDeadline(time.Time{})
		l.deliver(&prefixConn{Conn: u, prefix: b[:8]})
		return
	}
	if _, err := io.ReadFull(u, b[8:]); err != nil {
		u.Close()
		l.refuse(u, fmt.Errorf("a short hello: %v", err))
		return
	}
	h, err := parseHello(b)
	if err != nil || h.kind != kindNew && h.kind != kindResume {
		l.answer(u, statusBadHello)
		l.refuse(u, fmt.Errorf("bad hello: % x", b[8:16]))
		return
	}
	if h.kind == kindResume {
		l.mu.Lock()
		c := l.sessions[h.token]
		l.mu.Unlock()
		var status byte = statusUnknown
		if c != nil {
			if id, ok := peerIdentity(u); ok != c.hasID || id != c.peerID {
				status = statusPeer
			} else {
				status = c.takeover(u, h.recvd)
			}
		}
		if status != statusOK {
			l.answer(u, status)
			l.refuse(u, errors.New(statusText[status]))
		}
		return
	}
	var token [16]byte
	rand.Read(token[:])
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		l.answer(u, statusClosed)
		return
	}
	c := newConn(l.cfg, &l.st, false, u)
	c.token = token
	c.onEnd = func() { l.forget(token, u) }
	l.sessions[token] = c
	l.mu.Unlock()
	if _, err := u.Write(hello{kind: statusOK, token: token}.marshal()); err != nil {
		u.Close()
		l.forget(token, u)
		return
	}
	u.SetDeadline(time.Time{})
	c.start(u)
	// Closed unaccepted (by deliver), the session ends on this goroutine.
	if l.deliver(c) {
		c.mu.Lock()
		c.onEnd = func() { l.forget(token, nil) }
		c.mu.Unlock()
	}
}

// deliver hands c to Accept. The connection under it is no handshake's
// any more first: a shutdown meanwhile must not close it.
func (l *Listener) deliver(c net.Conn) bool {
	u := c
	if pc, ok := c.(*prefixConn); ok {
		u = pc.Conn
	}
	l.mu.Lock()
	if _, ok := l.shaking[u]; ok {
		delete(l.shaking, u)
		l.hsDone.Broadcast()
	}
	l.mu.Unlock()
	select {
	case l.queue <- c:
		return true
	case <-l.done:
		c.Close()
		return false
	}
}

// forget drops a closed session, and closes the listener under l once
// it is closed and no session is left. self is the connection of the
// handshake goroutine forget runs on, if it does.
func (l *Listener) forget(token [16]byte, self net.Conn) {
	l.mu.Lock()
	delete(l.sessions, token)
	shut := l.closed && len(l.sessions) == 0 && !l.shut
	if shut {
		l.shut = true
	}
	l.mu.Unlock()
	if shut {
		l.shutdown(self)
	}
}

// shutdown closes the listener under l and waits for its goroutines but
// self's handshake.
func (l *Listener) shutdown(self net.Conn) {
	l.ln.Close()
	<-l.loopDone
	l.mu.Lock()
	defer l.mu.Unlock()
	for u := range l.shaking {
		if u != self {
			u.Close()
		}
	}
	for len(l.shaking) > 0 && !(len(l.shaking) == 1 && l.shaking[self]) {
		l.hsDone.Wait()
	}
}

// Close stops Accept. The listener under l closes now if no session is
// open, else when the last one closes; Close returns at once.
func (l *Listener) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	close(l.done)
	shut := len(l.sessions) == 0
	l.shut = l.shut || shut
	l.mu.Unlock()
	if shut {
		l.shutdown(nil)
	}
	return nil
}

// prefixConn is a connection whose first bytes were read already.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}
