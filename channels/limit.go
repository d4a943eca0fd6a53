package channels

import (
	"context"
	"net"

	"golang.org/x/time/rate"
)

// Limit wraps d: the streams it dials write at most bytesPerSec bytes per
// second together (a token bucket of a tenth of a second's bytes, at
// least 64 KiB). bytesPerSec <= 0 is no limit.
func Limit(d Dialer, bytesPerSec int64) Dialer {
	if bytesPerSec <= 0 {
		return d
	}
	burst := int(max(bytesPerSec/10, 64<<10))
	return limitDialer{d: d, lim: rate.NewLimiter(rate.Limit(bytesPerSec), burst)}
}

type limitDialer struct {
	d   Dialer
	lim *rate.Limiter
}

func (l limitDialer) Dial(ctx context.Context) (net.Conn, error) {
	c, err := l.d.Dial(ctx)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithCancel(context.Background())
	return &limitConn{Conn: c, lim: l.lim, ctx: cctx, cancel: cancel}, nil
}

// limitConn waits for tokens before each write; Close also ends a wait.
type limitConn struct {
	net.Conn
	lim    *rate.Limiter
	ctx    context.Context
	cancel context.CancelFunc
}

func (c *limitConn) Write(p []byte) (int, error) {
	done := 0
	for len(p) > 0 {
		n := min(len(p), c.lim.Burst())
		if err := c.lim.WaitN(c.ctx, n); err != nil {
			return done, net.ErrClosed
		}
		k, err := c.Conn.Write(p[:n])
		done += k
		if err != nil {
			return done, err
		}
		p = p[n:]
	}
	return done, nil
}

func (c *limitConn) Close() error {
	c.cancel()
	return c.Conn.Close()
}
