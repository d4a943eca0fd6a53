package channels

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/pagewire/pagewire/core/wire"
)

// TLSFiles names the PEM files of mutual TLS: this end's certificate and
// key, and the CA that signs the peer's certificate. Both ends present a
// certificate and check the other's against CA; only TLS 1.3 is spoken.
type TLSFiles struct {
	Cert, Key, CA string
}

// ErrTLS reports TLS files that cannot be used.
var ErrTLS = errors.New("tls")

func (f TLSFiles) load() (tls.Certificate, *x509.CertPool, error) {
	if f.Cert == "" || f.Key == "" || f.CA == "" {
		return tls.Certificate{}, nil, fmt.Errorf("%w: need a certificate, its key and a CA (TLSFiles Cert, Key and CA)", ErrTLS)
	}
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("%w: %s, %s: %w", ErrTLS, f.Cert, f.Key, err)
	}
	pem, err := os.ReadFile(f.CA)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("%w: %w", ErrTLS, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return tls.Certificate{}, nil, fmt.Errorf("%w: %s holds no PEM certificate", ErrTLS, f.CA)
	}
	return cert, pool, nil
}

// ServerTLS is the configuration of a listening end: it requires a
// client certificate signed by the CA.
func ServerTLS(f TLSFiles) (*tls.Config, error) {
	cert, pool, err := f.load()
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS13,
	}, nil
}

// ClientTLS is the configuration of a dialing end: it checks the
// listener's certificate against the CA (the certificate must name the
// host dialed, by DNS name or IP address).
func ClientTLS(f TLSFiles) (*tls.Config, error) {
	cert, pool, err := f.load()
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		MinVersion:   tls.VersionTLS13,
	}, nil
}

// tlsAccepted is the byte a listener writes after a handshake whose
// client certificate it accepted.
const tlsAccepted = 0x01

// TLSHandshakeTimeout bounds a TLS handshake.
const TLSHandshakeTimeout = 10 * time.Second

// TLSListener wraps ln: every accepted stream completes a TLS handshake
// (within TLSHandshakeTimeout) before Accept returns it, and learns that
// its certificate was accepted. Handshakes run concurrently, so a peer
// that connects and says nothing holds up nobody. A stream whose
// handshake fails (a probe, a certificate from another CA) is closed and
// reported to refused, if not nil, with an error wrapping ErrTLS; Accept
// goes on waiting. Close stops accepting and waits for the handshakes.
func TLSListener(ln net.Listener, cfg *tls.Config, refused func(net.Addr, error)) net.Listener {
	l := &tlsListener{Listener: ln, cfg: cfg, refused: refused,
		conns: make(chan net.Conn), errc: make(chan error, 1), done: make(chan struct{})}
	l.wg.Add(1)
	go l.loop()
	return l
}

type tlsListener struct {
	net.Listener
	cfg     *tls.Config
	refused func(net.Addr, error)
	conns   chan net.Conn
	errc    chan error
	done    chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
	mu      sync.Mutex
	shaking map[net.Conn]bool // handshakes in flight, closed by Close
}

func (l *tlsListener) loop() {
	defer l.wg.Done()
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			l.errc <- err
			return
		}
		l.mu.Lock()
		if l.shaking == nil {
			l.shaking = make(map[net.Conn]bool)
		}
		l.shaking[c] = true
		l.mu.Unlock()
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			tc, err := l.handshake(c)
			l.mu.Lock()
			delete(l.shaking, c)
			l.mu.Unlock()
			if err != nil {
				c.Close()
				if l.refused != nil {
					l.refused(c.RemoteAddr(), err)
				}
				return
			}
			select {
			case l.conns <- tc:
			case <-l.done:
				tc.Close()
			}
		}()
	}
}

func (l *tlsListener) handshake(c net.Conn) (net.Conn, error) {
	c.SetDeadline(time.Now().Add(TLSHandshakeTimeout))
	// A plaintext pagewire sender on a TLS listener is told so at once,
	// in its own protocol, rather than left to time out.
	pc := &peekConn{Conn: c, r: bufio.NewReaderSize(c, 512)}
	if b, err := pc.r.Peek(4); err == nil && binary.BigEndian.Uint32(b) == wire.ControlMagic {
		wire.WriteMessage(c, wire.MsgError, wire.AppendError(nil, "receiver: this listener requires TLS (mutual TLS 1.3); the sender connected without it", nil))
		// Take what the sender wrote before closing, so that the close
		// does not reset the connection under the answer.
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		io.Copy(io.Discard, io.LimitReader(pc.r, 64<<10))
		return nil, fmt.Errorf("%w: %s connected without TLS", ErrTLS, c.RemoteAddr())
	}
	tc := tls.Server(pc, l.cfg)
	err := tc.Handshake()
	if err == nil {
		// TLS 1.3 ends the handshake before the server has judged the
		// client's certificate; this byte tells the client it passed
		// (see tlsDialer.Dial).
		_, err = tc.Write([]byte{tlsAccepted})
	}
	if err != nil {
		return nil, fmt.Errorf("%w: handshake with %s: %w", ErrTLS, c.RemoteAddr(), err)
	}
	c.SetDeadline(time.Time{})
	return tc, nil
}

func (l *tlsListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case err := <-l.errc:
		l.errc <- err // for the next call
		return nil, err
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *tlsListener) Close() error {
	err := net.ErrClosed
	l.once.Do(func() {
		close(l.done)
		err = l.Listener.Close()
		l.mu.Lock()
		for c := range l.shaking {
			c.Close()
		}
		l.mu.Unlock()
	})
	l.wg.Wait()
	return err
}

// peekConn is a conn whose first bytes were peeked at.
type peekConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// TLSDialer wraps d, which dials addr: every stream completes a TLS
// handshake, and learns that the listener accepted its certificate,
// before Dial returns it.
func TLSDialer(d Dialer, addr string, cfg *tls.Config) (Dialer, error) {
	if cfg.ServerName == "" {
		_, address, err := Parse(addr)
		if err != nil {
			return nil, err
		}
		host, _, err := net.SplitHostPort(address)
		if err != nil {
			// A socket path (unix:, vmbus:) names a local peer, and
			// certificates name hosts: the peer must be "localhost"
			// (as 'pagewire certs' names it), unless cfg says otherwise.
			host = "localhost"
		}
		cfg = cfg.Clone()
		cfg.ServerName = host
	}
	return tlsDialer{d: d, cfg: cfg}, nil
}

type tlsDialer struct {
	d   Dialer
	cfg *tls.Config
}

func (t tlsDialer) Dial(ctx context.Context) (net.Conn, error) {
	c, err := t.d.Dial(ctx)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(c, t.cfg)
	err = tc.HandshakeContext(ctx)
	if err == nil {
		// Wait for the listener's verdict on our certificate: its
		// refusal arrives as an alert instead of the byte.
		if dl, ok := ctx.Deadline(); ok {
			tc.SetReadDeadline(dl)
		} else {
			tc.SetReadDeadline(time.Now().Add(30 * time.Second))
		}
		var b [1]byte
		if _, err = io.ReadFull(tc, b[:]); err == nil && b[0] != tlsAccepted {
			err = fmt.Errorf("listener answered %#x, not a pagewire TLS listener", b[0])
		}
		tc.SetReadDeadline(time.Time{})
	}
	if err != nil {
		c.Close()
		var rh tls.RecordHeaderError
		if errors.As(err, &rh) {
			return nil, fmt.Errorf("%w: %s does not speak TLS (a listener without TLS?): %w", ErrTLS, c.RemoteAddr(), err)
		}
		return nil, fmt.Errorf("%w: handshake with %s: %w", ErrTLS, c.RemoteAddr(), err)
	}
	return tc, nil
}
