package channels

import (
	"context"
	"net"
)

// NotSentLowat wraps d: on the TCP connections it dials, at most about
// bytes that the peer has not been sent yet wait in the socket
// (TCP_NOTSENT_LOWAT, Linux; elsewhere d is returned as it is). A writer
// then feels a slow link within that many bytes instead of a send buffer
// that autotuning grows to megabytes, which keeps what is in flight
// bounded in time: the gateways' link uses it so that the source QEMU
// sees the link's rate, not its own socket's. bytes <= 0 is d unchanged.
func NotSentLowat(d Dialer, bytes int) Dialer {
	if bytes <= 0 || !notSentLowatSupported {
		return d
	}
	return lowatDialer{d: d, bytes: bytes}
}

type lowatDialer struct {
	d     Dialer
	bytes int
}

func (l lowatDialer) Dial(ctx context.Context) (net.Conn, error) {
	c, err := l.d.Dial(ctx)
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		if err := setNotSentLowat(tc, l.bytes); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// ListenerReadBuffer sets the receive buffer of the connections a TCP
// listener accepts (SO_RCVBUF on the listening socket, which accepted
// sockets inherit, so the window is scaled for it from the handshake).
// A small buffer keeps a sender from having megabytes "sent" that the
// reader has not taken: gateway-in uses it toward the source QEMU. Other
// listeners are left as they are.
func ListenerReadBuffer(ln net.Listener, bytes int) error {
	tl, ok := ln.(*net.TCPListener)
	if !ok || bytes <= 0 {
		return nil
	}
	rc, err := tl.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = setReadBuffer(fd, bytes) }); err != nil {
		return err
	}
	return serr
}
