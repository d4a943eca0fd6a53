package resume

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/pagewire/pagewire/channels"
)

func frameBytes(typ, flags byte, n uint32, ack uint64, payload []byte) []byte {
	b := make([]byte, frameHdr, frameHdr+len(payload))
	frame{typ: typ, flags: flags, n: n, ack: ack}.put(b)
	return append(b, payload...)
}

// FuzzFrames: whatever a peer sends after a session opened, the session
// delivers data or fails with an error; it never panics, hangs or
// allocates by a length the peer chose.
func FuzzFrames(f *testing.F) {
	f.Add(frameBytes(frameData, 0, 3, 0, []byte("abc")))
	f.Add(append(frameBytes(frameData, 0, 2, 0, []byte("ab")), frameBytes(frameFin, 0, 0, 0, nil)...))
	f.Add(frameBytes(frameAck, 0, 0, 1<<40, nil))
	f.Add(frameBytes(frameAck, flagGotFin, 0, 0, nil))
	f.Add(frameBytes(frameData, 0, 1<<30, 0, nil))
	f.Add(frameBytes(9, 0, 0, 0, nil))
	f.Add(append(frameBytes(frameFin, 0, 0, 0, nil), frameBytes(frameData, 0, 1, 0, []byte("x"))...))
	f.Add(frameBytes(frameBye, 0, 0, 0, nil))
	f.Fuzz(func(t *testing.T, in []byte) {
		cfg := Config{Retry: 20 * time.Millisecond, Linger: 50 * time.Millisecond, StallTimeout: time.Second}.withDefaults()
		a, b := net.Pipe()
		go io.Copy(io.Discard, b) // what the session writes back
		c := newConn(cfg, &counters{}, false, a)
		c.start(a)
		go func() {
			b.Write(in)
			b.Close()
		}()
		done := make(chan error, 1)
		go func() {
			buf := make([]byte, 4096)
			for {
				if _, err := c.Read(buf); err != nil {
					done <- err
					return
				}
			}
		}()
		select {
		case err := <-done:
			if err != io.EOF && !errors.Is(err, ErrProtocol) && !errors.Is(err, ErrRetryBudget) {
				t.Fatalf("Read: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the session neither delivered nor failed within 5s")
		}
		c.Close()
	})
}

// FuzzHello: whatever a connection sends a Listener first, it is handed
// on, answered or closed; the Listener goes on.
func FuzzHello(f *testing.F) {
	f.Add(hello{kind: kindNew}.marshal())
	f.Add(hello{kind: kindResume, recvd: 5}.marshal())
	f.Add([]byte("PWRESUM1\x07"))
	f.Add([]byte("PGWR\x01\x00\x00\x00\x00"))
	bad := hello{kind: kindNew}.marshal()
	bad[12] = 1
	f.Add(bad)
	f.Fuzz(func(t *testing.T, in []byte) {
		p := channels.NewPipe()
		l := NewListener(p, Config{HandshakeTimeout: 100 * time.Millisecond, Linger: 50 * time.Millisecond})
		defer l.Close()
		u, err := p.Dial(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		wrote := make(chan struct{})
		go func() {
			defer close(wrote)
			u.SetWriteDeadline(time.Now().Add(200 * time.Millisecond)) // a pipe: what nobody reads blocks
			u.Write(in)
			if len(in) >= 8 && string(in[:8]) == magic {
				var b [helloSize]byte
				u.SetReadDeadline(time.Now().Add(time.Second))
				if n, _ := io.ReadFull(u, b[:]); n == helloSize && string(b[:8]) == magic && b[8] == statusOK {
					// A new session: end it as a dialer would.
					u.Write(frameBytes(frameBye, 0, 0, 0, nil))
				}
			}
			u.Close()
		}()
		got := make(chan net.Conn, 1)
		go func() {
			c, _ := l.Accept()
			got <- c
		}()
		var c net.Conn
		select {
		case c = <-got:
		case <-wrote:
			select {
			case c = <-got:
			case <-time.After(20 * time.Millisecond):
			}
		}
		if c != nil {
			if len(in) >= 8 && string(in[:8]) != magic {
				b := make([]byte, 8)
				if _, err := io.ReadFull(c, b); err != nil || string(b) != string(in[:8]) {
					t.Fatalf("handed on % x, %v; sent % x", b, err, in[:8])
				}
			}
			c.Close()
		}
		<-wrote
		l.Close()
		if c == nil {
			if c = <-got; c != nil {
				c.Close()
			}
		}
	})
}
