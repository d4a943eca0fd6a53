package engine

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/pagewire/pagewire/core/wire"
)

// failPath is one end's failure path, the same for a sender and a
// receiver: the first error wins (a peer's reason replaces its bare
// hang-up, see firstError); the peer is told why on the control channel
// when there is one; the transfer is cancelled; every connection closes,
// except that after a hang-up the control channel stays readable for
// errorGrace, so that the peer's reason can still arrive. Any goroutine
// may call fail.
type failPath struct {
	side   string // "sender" or "receiver": who tells the peer
	mu     sync.Mutex
	err    error
	ctl    net.Conn // the lead channel, once connected
	tells  bool     // ctl is pagewire's control channel: the peer is told why
	ctlMu  sync.Mutex
	conns  []net.Conn   // every other connection (a receiver's may hold ctl too)
	ln     net.Listener // a receiver's listener
	cancel context.CancelCauseFunc
}

// fail records the first error, tells the peer, and stops every channel
// by closing its connection.
func (f *failPath) fail(err error) {
	f.mu.Lock()
	var first bool
	f.err, first = firstError(f.err, err)
	ctl := f.ctl
	f.mu.Unlock()
	if !first {
		return
	}
	if ctl == nil || !f.tells {
		f.cancel(err)
		f.closeConns()
		return
	}
	if !isRemote(err) {
		// Best effort, bounded. Only then is the transfer cancelled, so
		// that no cleanup closes the control channel under this message.
		ctl.SetWriteDeadline(time.Now().Add(errorGrace))
		f.ctlMu.Lock()
		wire.WriteMessage(ctl, wire.MsgError, errorMessage(f.side, err))
		f.ctlMu.Unlock()
	}
	f.cancel(err)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ln != nil {
		f.ln.Close()
	}
	for _, c := range f.conns {
		if c != ctl {
			c.Close()
		}
	}
	if errors.Is(err, ErrPeerGone) {
		ctl.SetReadDeadline(time.Now().Add(errorGrace))
	} else {
		ctl.Close()
	}
}

// failure is the first error, or nil.
func (f *failPath) failure() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// closeConns closes the listener and every connection.
func (f *failPath) closeConns() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ln != nil {
		f.ln.Close()
	}
	if f.ctl != nil {
		f.ctl.Close()
	}
	for _, c := range f.conns {
		c.Close()
	}
}

// addConn registers a connection to close on failure; it reports false,
// and registers nothing, once the transfer has failed.
func (f *failPath) addConn(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return false
	}
	f.conns = append(f.conns, c)
	return true
}

// setLead records the lead channel; tells says whether it is pagewire's
// control channel.
func (f *failPath) setLead(c net.Conn, tells bool) {
	f.mu.Lock()
	f.ctl, f.tells = c, tells
	f.mu.Unlock()
}
