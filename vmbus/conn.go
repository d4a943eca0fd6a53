package vmbus

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// State is a connection's state (enum vmbus_connect_state).
type State int32

// Connection states.
const (
	Disconnected State = 0
	Connecting   State = 1
	Connected    State = 2
)

func (s State) String() string {
	switch s {
	case Disconnected:
		return "disconnected"
	case Connecting:
		return "connecting"
	case Connected:
		return "connected"
	}
	return fmt.Sprintf("state %d", int32(s))
}

// Connection errors.
var (
	// ErrNoVersion reports that the host accepted none of the guest's
	// versions (-EDOM).
	ErrNoVersion = errors.New("vmbus: no protocol version in common")
	// ErrTimeout reports a reply that did not come within the configured
	// timeout (-ETIMEDOUT).
	ErrTimeout = errors.New("vmbus: no reply in time")
	// ErrRefused reports a request the peer answered with a non-zero
	// status (GPADL_CREATED, OPENCHANNEL_RESULT).
	ErrRefused = errors.New("vmbus: refused by the peer")
	// ErrUnknownChannel reports a relid that is not offered, or a channel in
	// the wrong state for the request.
	ErrUnknownChannel = errors.New("vmbus: unknown channel")
)

// msgConn carries channel messages and file descriptors: one datagram of a
// SOCK_SEQPACKET unix socket per message (docs/vmbus.md).
type msgConn struct {
	uc *net.UnixConn
	mu sync.Mutex // one message (and its fds) at a time
}

func (m *msgConn) send(b []byte, fds []int) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	_, _, err := m.uc.WriteMsgUnix(b, oob, nil)
	return err
}

// maxFDs is the most descriptors one message carries (OPENCHANNEL: two).
const maxFDs = 2

// recv reads one message. Descriptors beyond maxFDs, and messages that
// were truncated, are errors; the descriptors received are returned even
// then, for the caller to close.
func (m *msgConn) recv(b, oob []byte) (int, []int, error) {
	n, oobn, flags, _, err := m.uc.ReadMsgUnix(b, oob)
	if err != nil {
		return 0, nil, err
	}
	var fds []int
	if oobn > 0 {
		cmsgs, perr := unix.ParseSocketControlMessage(oob[:oobn])
		if perr != nil {
			return 0, nil, fmt.Errorf("%w: control data: %w", ErrBadMessage, perr)
		}
		for _, c := range cmsgs {
			if f, err := unix.ParseUnixRights(&c); err == nil {
				fds = append(fds, f...)
			}
		}
	}
	switch {
	case flags&unix.MSG_TRUNC != 0:
		return 0, fds, &MessageError{Field: "length", Value: uint64(n), Err: errors.New("datagram longer than 240 bytes")}
	case flags&unix.MSG_CTRUNC != 0:
		return 0, fds, fmt.Errorf("%w: too many file descriptors", ErrBadMessage)
	case n == 0:
		return 0, fds, errEOF
	}
	return n, fds, nil
}

var errEOF = fmt.Errorf("%w: control socket closed", ErrPeerGone)

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// link is what both roles share: the socket, the state, the reply waiters.
type link struct {
	mc      msgConn
	state   atomic.Int32
	timeout time.Duration
	sleep   func(context.Context, time.Duration) error

	mu      sync.Mutex
	waiters map[waitKey]chan Message
	err     error // why the connection ended
	done    chan struct{}
	wg      sync.WaitGroup
	onFail  func(error) // fails the role's channels
}

type waitKey struct {
	t   MsgType
	key uint32
}

func newLink(uc *net.UnixConn, timeout time.Duration) *link {
	if timeout <= 0 {
		timeout = defaultReplyTimeout
	}
	return &link{mc: msgConn{uc: uc}, timeout: timeout, sleep: sleepCtx,
		waiters: map[waitKey]chan Message{}, done: make(chan struct{})}
}

// post sends m with the retry policy of docs/vmbus.md.
func (l *link) post(ctx context.Context, m Message, fds []int) error {
	b, err := MarshalMessage(m)
	if err != nil {
		return err
	}
	if err := postRetry(ctx, func() (Status, error) { return socketStatus(l.mc.send(b, fds)) }, l.sleep); err != nil {
		return fmt.Errorf("post %v: %w", m.Type(), err)
	}
	return nil
}

// expect registers a waiter for a reply; call before posting the request.
func (l *link) expect(t MsgType, key uint32) (chan Message, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return nil, l.err
	}
	k := waitKey{t, key}
	if _, busy := l.waiters[k]; busy {
		return nil, fmt.Errorf("%w: a %v for %d is already awaited", ErrInvalid, t, key)
	}
	ch := make(chan Message, 1)
	l.waiters[k] = ch
	return ch, nil
}

func (l *link) unexpect(t MsgType, key uint32) {
	l.mu.Lock()
	delete(l.waiters, waitKey{t, key})
	l.mu.Unlock()
}

// deliver hands a reply to its waiter; false if nobody waits for it.
func (l *link) deliver(t MsgType, key uint32, m Message) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	ch, ok := l.waiters[waitKey{t, key}]
	if ok {
		delete(l.waiters, waitKey{t, key})
		ch <- m
	}
	return ok
}

// wait waits for a reply registered with expect, bounded by the timeout.
func (l *link) wait(ctx context.Context, ch chan Message, t MsgType, key uint32) (Message, error) {
	timer := time.NewTimer(l.timeout)
	defer timer.Stop()
	select {
	case m := <-ch:
		return m, nil
	case <-timer.C:
		l.unexpect(t, key)
		return nil, fmt.Errorf("%w: %v for %d within %v", ErrTimeout, t, key, l.timeout)
	case <-ctx.Done():
		l.unexpect(t, key)
		return nil, ctx.Err()
	case <-l.done:
		return nil, l.failure()
	}
}

// request posts m and waits for the reply (t, key).
func (l *link) request(ctx context.Context, m Message, fds []int, t MsgType, key uint32) (Message, error) {
	ch, err := l.expect(t, key)
	if err != nil {
		return nil, err
	}
	if err := l.post(ctx, m, fds); err != nil {
		l.unexpect(t, key)
		return nil, err
	}
	return l.wait(ctx, ch, t, key)
}

// fail ends the connection with err (the first reason wins) and releases
// every waiter.
func (l *link) fail(err error) {
	l.mu.Lock()
	if l.err != nil {
		l.mu.Unlock()
		return
	}
	l.err = err
	l.state.Store(int32(Disconnected))
	close(l.done)
	l.mc.uc.Close()
	l.mu.Unlock()
	if l.onFail != nil {
		l.onFail(err)
	}
}

func (l *link) failure() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// State is the connection's state.
func (l *link) State() State { return State(l.state.Load()) }

// readLoop reads messages until the socket fails and passes them to
// handle; an error from handle ends the connection.
func (l *link) readLoop(handle func(Message, []int) error) {
	buf := make([]byte, MaxMessageSize+1)
	oob := make([]byte, unix.CmsgSpace(maxFDs*4))
	for {
		n, fds, err := l.mc.recv(buf, oob)
		if err != nil {
			closeFDs(fds)
			if errors.Is(err, net.ErrClosed) || errors.Is(err, ErrPeerGone) {
				l.fail(errEOF)
			} else if errors.Is(err, ErrBadMessage) {
				l.fail(err)
			} else {
				l.fail(fmt.Errorf("%w: %w", ErrPeerGone, err))
			}
			return
		}
		m, err := ParseMessage(buf[:n])
		if err == nil {
			err = handle(m, fds)
		} else {
			closeFDs(fds)
		}
		if err != nil {
			l.fail(err)
			return
		}
	}
}

// unexpected is the error for a message this role never receives or not
// in this state.
func unexpected(m Message, role string, s State) error {
	return &MessageError{Type: m.Type(), Field: "msgtype", Value: uint64(m.Type()),
		Err: fmt.Errorf("not expected by the %s while %v", role, s)}
}

// mapping is a shared memory mapping with a reference count: the GPADL
// holds one reference, an open channel another.
type mapping struct {
	mem  []byte
	fd   int
	refs atomic.Int32
}

func (m *mapping) ref() { m.refs.Add(1) }

func (m *mapping) unref() {
	if m.refs.Add(-1) == 0 {
		unix.Munmap(m.mem)
		if m.fd >= 0 {
			unix.Close(m.fd)
		}
	}
}

func newEventfd() (int, error) {
	return unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
}
