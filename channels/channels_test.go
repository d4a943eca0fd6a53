package channels_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pagewire/pagewire/channels"
	_ "github.com/pagewire/pagewire/channels/vmbus" // vmbus: addresses
)

func TestParse(t *testing.T) {
	for _, c := range []struct{ in, network, address, err string }{
		{"tcp:127.0.0.1:7000", "tcp", "127.0.0.1:7000", ""},
		{"tcp:[::1]:0", "tcp", "[::1]:0", ""},
		{"unix:/tmp/pw.sock", "unix", "/tmp/pw.sock", ""},
		{"tcp:127.0.0.1", "", "", "missing port"},
		{"udp:1.2.3.4:5", "", "", `unknown transport "udp"`},
		{"127.0.0.1:7000", "", "", `unknown transport "127.0.0.1"`},
		{"vmbus:/tmp/pw.sock", "vmbus", "/tmp/pw.sock", ""},
		{"unix:", "", "", "want tcp:HOST:PORT, unix:PATH or vmbus:PATH"},
		{"vmbus:", "", "", "want tcp:HOST:PORT, unix:PATH or vmbus:PATH"},
		{"", "", "", "want tcp:HOST:PORT, unix:PATH or vmbus:PATH"},
	} {
		n, a, err := channels.Parse(c.in)
		if c.err != "" {
			if !errors.Is(err, channels.ErrAddress) || !strings.Contains(err.Error(), c.err) {
				t.Errorf("Parse(%q) = %v, want ErrAddress with %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || n != c.network || a != c.address {
			t.Errorf("Parse(%q) = %q, %q, %v", c.in, n, a, err)
		}
	}
}

// roundTrip dials d, writes a line on it and reads it from ln's side.
func roundTrip(t *testing.T, ln net.Listener, d channels.Dialer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- err.Error()
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		got <- string(b)
	}()
	c, err := d.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("pages"))
	c.Close()
	select {
	case s := <-got:
		if s != "pages" {
			t.Fatalf("got %q", s)
		}
	case <-ctx.Done():
		t.Fatal("no connection within 10s")
	}
}

func TestTransports(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "pw.sock")
	vsock := filepath.Join(t.TempDir(), "pw-vmbus.sock")
	for _, addr := range []string{"tcp:127.0.0.1:0", "unix:" + sock, "vmbus:" + vsock} {
		ln, err := channels.Listen(addr)
		if err != nil {
			t.Fatal(err)
		}
		d, err := channels.NewDialer(channels.Addr(ln.Addr()))
		if err != nil {
			t.Fatal(err)
		}
		roundTrip(t, ln, d)
		ln.Close()
	}
	p := channels.NewPipe()
	roundTrip(t, p, p)
	p.Close()
	if _, err := p.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v", err)
	}
	if _, err := p.Dial(context.Background()); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Dial after Close: %v", err)
	}
}

// TestUnixStaleSocket: a socket file left by a dead receiver is replaced;
// one with a live receiver is refused.
func TestUnixStaleSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "pw.sock")
	live, err := channels.Listen("unix:" + sock)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := channels.Listen("unix:" + sock); err == nil || !strings.Contains(err.Error(), "already listening") {
		t.Errorf("second listener: %v", err)
	}
	// A dead receiver's file: the socket stays, nobody listens.
	live.(*net.UnixListener).SetUnlinkOnClose(false)
	live.Close()
	if _, err := os.Stat(sock); err != nil {
		t.Fatal(err)
	}
	ln, err := channels.Listen("unix:" + sock)
	if err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	ln.Close()
}

// TestWrongSocketKind: a unix: dialer at a vmbus: listener and a vmbus:
// dialer at a unix: listener each say what they found.
func TestWrongSocketKind(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ listen, dial, want string }{
		{"vmbus:" + filepath.Join(dir, "v.sock"), "unix:" + filepath.Join(dir, "v.sock"), "not a stream socket"},
		{"unix:" + filepath.Join(dir, "u.sock"), "vmbus:" + filepath.Join(dir, "u.sock"), "stream socket, as a unix: listener makes"},
	} {
		ln, err := channels.Listen(c.listen)
		if err != nil {
			t.Fatal(err)
		}
		d, err := channels.NewDialer(c.dial)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		conn, err := d.Dial(ctx)
		cancel()
		if err == nil {
			conn.Close()
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s at %s: %v, want %q", c.dial, c.listen, err, c.want)
		}
		ln.Close()
	}
}
