// Package channels provides the byte streams pagewire's channels run on:
// TCP, unix sockets and an in-memory pipe for tests. Every transport is a
// [net.Listener] on the receiving side and a [Dialer] on the sending side,
// and every stream is a [net.Conn]: Close unblocks pending reads and
// writes, and deadlines bound them.
//
// Addresses are written "tcp:HOST:PORT" and "unix:PATH", and in the
// notation of every [Scheme] a program links: importing package
// channels/vmbus adds "vmbus:PATH" (VMBus channels over shared memory: the
// receiver offers them on the unix socket PATH). Nothing here starts
// goroutines that outlive a call, except a scheme's listener may (see
// package channels/vmbus).
package channels

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
)

// Dialer opens streams to one receiver.
type Dialer interface {
	Dial(ctx context.Context) (net.Conn, error)
}

// ErrAddress reports an address pagewire cannot parse.
var ErrAddress = errors.New("bad address")

// Scheme is a transport other than tcp: and unix:, which its package
// registers (see [Register]) when a program imports it.
type Scheme struct {
	// Listen listens at address, the part of the address after "NAME:".
	Listen func(address string) (net.Listener, error)
	// Dial returns a Dialer for address.
	Dial func(address string) Dialer
	// Socket, when not empty, is the unix socket type (net.Dial's
	// network) that Listen listens on at the path address: Listen then
	// removes a stale socket file first, as for unix: addresses.
	Socket string
}

var (
	schemesMu sync.RWMutex
	schemes   = map[string]Scheme{}
)

// Register adds the scheme name ("vmbus"), for addresses "name:ADDRESS".
// It panics if name is tcp, unix or already registered: a package calls
// it once, from init.
func Register(name string, s Scheme) {
	schemesMu.Lock()
	defer schemesMu.Unlock()
	if _, dup := schemes[name]; dup || name == "tcp" || name == "unix" || name == "" {
		panic("channels: Register of scheme " + name + " twice")
	}
	schemes[name] = s
}

func scheme(name string) (Scheme, bool) {
	schemesMu.RLock()
	defer schemesMu.RUnlock()
	s, ok := schemes[name]
	return s, ok
}

// Schemes lists the address schemes this program knows: tcp, unix and
// the registered ones, sorted.
func Schemes() []string {
	schemesMu.RLock()
	defer schemesMu.RUnlock()
	names := []string{"tcp", "unix"}
	for n := range schemes {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// forms lists the address forms this program takes, for errors.
func forms() string {
	f := []string{"tcp:HOST:PORT", "unix:PATH"}
	for _, n := range Schemes() {
		if n != "tcp" && n != "unix" {
			f = append(f, n+":PATH")
		}
	}
	return strings.Join(f[:len(f)-1], ", ") + " or " + f[len(f)-1]
}

// Parse splits "tcp:HOST:PORT", "unix:PATH" or an address of a registered
// scheme ("vmbus:PATH") into a network and address (for tcp and unix, as
// package net takes them).
func Parse(addr string) (network, address string, err error) {
	network, address, ok := strings.Cut(addr, ":")
	if !ok || address == "" {
		return "", "", fmt.Errorf("%w %q: want %s", ErrAddress, addr, forms())
	}
	switch network {
	case "tcp":
		if _, _, err := net.SplitHostPort(address); err != nil {
			return "", "", fmt.Errorf("%w %q: %w", ErrAddress, addr, err)
		}
	case "unix":
	default:
		if _, ok := scheme(network); !ok {
			return "", "", fmt.Errorf("%w %q: unknown transport %q, want one of %s", ErrAddress, addr, network, strings.Join(Schemes(), ", "))
		}
	}
	return network, address, nil
}

// Listen listens on addr. For unix sockets a stale socket file left by a
// dead receiver is removed first, and Close removes the file.
func Listen(addr string) (net.Listener, error) {
	network, address, err := Parse(addr)
	if err != nil {
		return nil, err
	}
	sc, custom := scheme(network)
	sock := sc.Socket
	if network == "unix" {
		sock = "unix"
	}
	if sock != "" {
		if fi, err := os.Lstat(address); err == nil && fi.Mode()&os.ModeSocket != 0 {
			if c, err := net.Dial(sock, address); err == nil {
				c.Close()
				return nil, fmt.Errorf("listen %s: a receiver is already listening there", addr)
			}
			os.Remove(address)
		}
	}
	if custom {
		return sc.Listen(address)
	}
	return net.Listen(network, address)
}

// Addr formats a listener's address in pagewire's notation.
func Addr(a net.Addr) string {
	return a.Network() + ":" + a.String()
}

// NewDialer returns a Dialer for addr.
func NewDialer(addr string) (Dialer, error) {
	network, address, err := Parse(addr)
	if err != nil {
		return nil, err
	}
	if sc, ok := scheme(network); ok {
		return sc.Dial(address), nil
	}
	return netDialer{network, address}, nil
}

type netDialer struct{ network, address string }

func (d netDialer) Dial(ctx context.Context) (net.Conn, error) {
	var nd net.Dialer
	c, err := nd.DialContext(ctx, d.network, d.address)
	if errors.Is(err, syscall.EPROTOTYPE) {
		return nil, fmt.Errorf("%w: the socket at %s is not a stream socket (a vmbus: listener's?)", err, d.address)
	}
	return c, err
}

// Pipe is an in-memory transport: a listener whose Dial returns one end of
// a [net.Pipe] and whose Accept returns the other. For tests.
type Pipe struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

// NewPipe returns an in-memory transport.
func NewPipe() *Pipe {
	return &Pipe{conns: make(chan net.Conn), done: make(chan struct{})}
}

// Dial implements [Dialer].
func (p *Pipe) Dial(ctx context.Context) (net.Conn, error) {
	a, b := net.Pipe()
	select {
	case p.conns <- b:
		return a, nil
	case <-p.done:
	case <-ctx.Done():
		a.Close()
		b.Close()
		return nil, ctx.Err()
	}
	a.Close()
	b.Close()
	return nil, fmt.Errorf("dial pipe: %w", net.ErrClosed)
}

// Accept implements [net.Listener]; it returns [net.ErrClosed] after Close.
func (p *Pipe) Accept() (net.Conn, error) {
	select {
	case c := <-p.conns:
		return c, nil
	case <-p.done:
		return nil, net.ErrClosed
	}
}

// Close implements [net.Listener]: it unblocks Accept and Dial.
func (p *Pipe) Close() error {
	p.once.Do(func() { close(p.done) })
	return nil
}

// Addr implements [net.Listener].
func (p *Pipe) Addr() net.Addr { return pipeAddr{} }

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "memory" }
