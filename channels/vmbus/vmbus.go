// Package vmbus makes VMBus channels pagewire transports: the receiver is
// the VMBus host, which offers one primary channel and its sub-channels on
// a unix socket; the sender is the guest, which opens one channel per
// [Dialer.Dial] (the primary first, then sub-channels in order) over ring
// memory it shares with the receiver (package
// github.com/pagewire/pagewire/vmbus). Every stream is a
// [*vb.Channel], a [net.Conn].
//
// Addresses are written "vmbus:PATH"; package channels parses them.
//
// The Listener starts one goroutine to accept guests and one per guest;
// the latter ends when its guest disconnects. The Dialer starts none of
// its own; the guest connection it opens lives until the last stream it
// dialed is closed.
package vmbus

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"

	vb "github.com/pagewire/pagewire/vmbus"
)

// Config sizes the transport. The zero value is usable.
type Config struct {
	// Channels is how many channels the receiver offers: a primary and
	// Channels-1 sub-channels. Default 256, pagewire's control channel
	// plus 255 multifd channels.
	Channels int
	// Channel sizes each channel's rings (set by the sender).
	Channel vb.ChannelConfig
	// Timeout bounds each protocol reply. Default 10s.
	Timeout time.Duration
}

// ifType names pagewire's channel class in offers.
var ifType = [16]byte{'p', 'a', 'g', 'e', 'w', 'i', 'r', 'e', '-', 'm', 'u', 'l', 't', 'i', 'f', 'd'}

// Offers returns the offers of a receiver with n channels: relid 1 is the
// primary, relids 2..n its sub-channels 1..n-1.
func Offers(n int) []vb.Offer {
	out := make([]vb.Offer, n)
	for i := range out {
		out[i] = vb.Offer{IfType: ifType, Relid: uint32(i + 1), SubChannelIndex: uint16(i),
			Flags: 0x4 /* SERVER_SUPPORTS_GPADLS */, ConnectionID: uint32(i + 1)}
	}
	return out
}

// Listener is the receiving side: a [net.Listener] whose Accept returns
// every channel a guest opens.
type Listener struct {
	ln    *vb.Listener
	path  string
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
}

// Listen listens at the unix socket path.
func Listen(path string, cfg Config) (*Listener, error) {
	if cfg.Channels == 0 {
		cfg.Channels = 256
	}
	if cfg.Channels < 1 || cfg.Channels >= vb.MaxRelid {
		return nil, fmt.Errorf("vmbus listen: %d channels", cfg.Channels)
	}
	ln, err := vb.Listen(path, vb.HostConfig{Offers: Offers(cfg.Channels), Timeout: cfg.Timeout})
	if err != nil {
		return nil, err
	}
	l := &Listener{ln: ln, path: path, conns: make(chan net.Conn), done: make(chan struct{})}
	l.wg.Add(1)
	go l.acceptGuests()
	return l, nil
}

func (l *Listener) acceptGuests() {
	defer l.wg.Done()
	for {
		h, err := l.ln.Accept()
		if err != nil {
			return
		}
		l.wg.Add(1)
		go l.serve(h)
	}
}

// serve hands the guest's channels to Accept until the Listener is closed,
// then waits for the guest to leave.
func (l *Listener) serve(h *vb.Host) {
	defer l.wg.Done()
	defer h.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-l.done:
		case <-h.Done():
		}
		cancel()
	}()
	for {
		ch, err := h.Accept(ctx)
		if err != nil {
			break
		}
		select {
		case l.conns <- ch:
		case <-l.done:
			ch.Close()
		}
	}
	<-h.Done()
}

// Accept implements [net.Listener]; it returns [net.ErrClosed] after Close.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close implements [net.Listener]: no new guest connects and Accept
// returns; channels already accepted keep working. It does not wait for
// connected guests to leave; Wait does.
func (l *Listener) Close() error {
	var err error
	l.once.Do(func() {
		close(l.done)
		err = l.ln.Close()
	})
	return err
}

// Wait waits, after Close, until every guest has disconnected and every
// goroutine of the Listener has returned.
func (l *Listener) Wait() { l.wg.Wait() }

// Addr implements [net.Listener]: network "vmbus", the socket's path.
func (l *Listener) Addr() net.Addr { return addr(l.path) }

type addr string

func (addr) Network() string  { return "vmbus" }
func (a addr) String() string { return string(a) }

// Dialer is the sending side: each Dial opens the next offered channel.
type Dialer struct {
	path string
	cfg  Config

	mu   sync.Mutex
	g    *vb.Guest
	used map[uint32]bool
	live int
}

// NewDialer returns a Dialer for the receiver at the unix socket path.
func NewDialer(path string, cfg Config) *Dialer {
	return &Dialer{path: path, cfg: cfg}
}

// ErrNoChannel reports a Dial with every offered channel in use.
var ErrNoChannel = errors.New("vmbus: every offered channel is in use")

// Dial implements channels.Dialer: it connects to the receiver if this
// Dialer has no connection, then opens the first offered channel not in
// use (the primary first, then sub-channels).
func (d *Dialer) Dial(ctx context.Context) (net.Conn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.g == nil {
		g, err := vb.Dial(ctx, d.path, vb.GuestConfig{Timeout: d.cfg.Timeout, Channel: d.cfg.Channel})
		if errors.Is(err, syscall.EPROTOTYPE) {
			return nil, fmt.Errorf("vmbus dial %s: the socket there is a stream socket, as a unix: listener makes, not a vmbus: one: %w", d.path, err)
		}
		if err != nil {
			return nil, fmt.Errorf("vmbus dial %s: %w", d.path, err)
		}
		d.g, d.used = g, map[uint32]bool{}
	}
	for _, o := range d.g.Offers() {
		if d.used[o.Relid] {
			continue
		}
		ch, err := d.g.Open(ctx, o.Relid)
		if err != nil {
			d.releaseLocked()
			return nil, err
		}
		d.used[o.Relid] = true
		d.live++
		return &conn{Channel: ch, d: d}, nil
	}
	return nil, ErrNoChannel
}

// releaseLocked closes the guest connection when no stream uses it.
func (d *Dialer) releaseLocked() {
	if d.live == 0 && d.g != nil {
		d.g.Close()
		d.g = nil
	}
}

// conn is a dialed channel; closing the last one ends the connection.
type conn struct {
	*vb.Channel
	d    *Dialer
	once sync.Once
}

func (c *conn) Close() error {
	err := c.Channel.Close()
	c.once.Do(func() {
		c.d.mu.Lock()
		c.d.live--
		c.d.releaseLocked()
		c.d.mu.Unlock()
	})
	return err
}
