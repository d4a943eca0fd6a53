package resume

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// Transport opens one connection per call: package channels' dialers
// (TCP, unix, TLS, rate caps) are Transports.
type Transport interface {
	Dial(ctx context.Context) (net.Conn, error)
}

// Dialer opens sessions over a Transport, and reopens their connections
// when they are lost. Its methods may be called concurrently.
type Dialer struct {
	t   Transport
	cfg Config
	st  counters
}

// NewDialer returns a Dialer whose sessions run over t.
func NewDialer(t Transport, cfg Config) *Dialer {
	return &Dialer{t: t, cfg: cfg.withDefaults()}
}

// Stats returns the counters of the Dialer's sessions.
func (d *Dialer) Stats() Stats { return d.st.stats() }

// Dial opens a new session: a connection of the Transport and the
// hellos, each attempt within Config.HandshakeTimeout. An attempt that
// fails as a lost connection does (refused, reset, timed out) is made
// again with backoff for up to Config.Retry, within ctx; one the
// listening end refused, or a certificate the TLS handshake refused,
// fails at once. The session's *Conn lives until it is closed or fails;
// its reconnections are its own, not bound to ctx.
func (d *Dialer) Dial(ctx context.Context) (net.Conn, error) {
	start := time.Now()
	var b backoff
	for attempt := 0; ; attempt++ {
		c, err := d.dialOnce(ctx)
		if err == nil {
			return c, nil
		}
		left := d.cfg.Retry - time.Since(start)
		if permanent(err) || ctx.Err() != nil || left <= 0 {
			if left <= 0 && !permanent(err) {
				err = fmt.Errorf("%w (%v) opening a session; last: %w", ErrRetryBudget, d.cfg.Retry, err)
			}
			return nil, err
		}
		if d.cfg.Events != nil && attempt == 0 {
			d.cfg.Events(Event{Kind: Retrying, Err: err})
		}
		if !b.wait(ctx, left) {
			return nil, err
		}
	}
}

// permanent tells the errors that another attempt would meet again.
func permanent(err error) bool {
	var cv *tls.CertificateVerificationError
	var alert tls.AlertError
	var ua x509.UnknownAuthorityError
	var ci x509.CertificateInvalidError
	var hn x509.HostnameError
	var rh tls.RecordHeaderError
	return errors.As(err, &rh) || errors.Is(err, ErrRefused) || errors.Is(err, ErrProtocol) || errors.Is(err, ErrNotResuming) ||
		errors.As(err, &cv) || errors.As(err, &alert) || errors.As(err, &ua) || errors.As(err, &ci) || errors.As(err, &hn)
}

func (d *Dialer) dialOnce(ctx context.Context) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.HandshakeTimeout)
	defer cancel()
	u, err := d.t.Dial(ctx)
	if err != nil {
		return nil, err
	}
	token, err := dialNew(ctx, u)
	if err != nil {
		abort(u)
		return nil, err
	}
	c := newConn(d.cfg, &d.st, true, u)
	c.token = token
	c.redial = d.t.Dial
	c.start(u)
	return c, nil
}

// dialNew asks the listener for a new session on u.
func dialNew(ctx context.Context, u net.Conn) ([16]byte, error) {
	if dl, ok := ctx.Deadline(); ok {
		u.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { u.SetDeadline(time.Now()) })
	defer stop()
	if _, err := u.Write(hello{kind: kindNew}.marshal()); err != nil {
		return [16]byte{}, err
	}
	b := make([]byte, helloSize)
	n, err := io.ReadFull(u, b)
	if err != nil {
		if n > 0 && string(b[:min(n, 8)]) != magic[:min(n, 8)] || errors.Is(err, io.EOF) {
			return [16]byte{}, fmt.Errorf("%w (it answered % x and closed): run both ends with resuming, or neither", ErrNotResuming, b[:min(n, 16)])
		}
		return [16]byte{}, err
	}
	h, err := parseHello(b)
	switch {
	case errors.Is(err, errNotResume):
		return [16]byte{}, fmt.Errorf("%w (it answered % x): run both ends with resuming, or neither", ErrNotResuming, b[:16])
	case err != nil:
		return [16]byte{}, fmt.Errorf("%w: the listener's answer: %v", ErrProtocol, err)
	case h.kind != statusOK:
		return [16]byte{}, fmt.Errorf("%w: %s", ErrRefused, statusString(h.kind))
	}
	u.SetDeadline(time.Time{})
	return h.token, nil
}
