package main_test

import (
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pagewire/pagewire/internal/certs"
)

// cutter is a TCP proxy for the link that cuts every connection once
// limit bytes have gone through, and refuses new ones from then on.
type cutter struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
	n     int64
	limit int64
	cut   chan struct{}
	once  sync.Once
}

func newCutter(t *testing.T, to string, limit int64) *cutter {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &cutter{ln: ln, limit: limit, cut: make(chan struct{})}
	t.Cleanup(func() { ln.Close(); c.cutAll() })
	go func() {
		for {
			a, err := ln.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", strings.TrimPrefix(to, "tcp:"))
			if err != nil {
				a.Close()
				continue
			}
			c.mu.Lock()
			c.conns = append(c.conns, a, b)
			c.mu.Unlock()
			go c.pipe(b, a)
			go c.pipe(a, b)
		}
	}()
	return c
}

func (c *cutter) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			c.mu.Lock()
			c.n += int64(n)
			over := c.n > c.limit
			c.mu.Unlock()
			if over {
				c.cutAll()
				return
			}
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			if err == io.EOF {
				dst.(*net.TCPConn).CloseWrite()
			}
			return
		}
	}
}

func (c *cutter) cutAll() {
	c.once.Do(func() {
		close(c.cut)
		c.ln.Close()
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, conn := range c.conns {
			conn.Close()
		}
	})
}

// TestGatewayLinkCut: the link between the gateways is cut mid-migration
// for good: past --link-retry, both gateways exit 1 naming the link and
// the flag, and both QEMUs fail (the destination exits), within the
// budget plus 10 s; nothing hangs.
func TestGatewayLinkCut(t *testing.T) {
	const retry = 3 * time.Second
	c := gwCase{2, "none", "none", 2, []string{"--method", "nocomp", "--insecure", "--link-retry", retry.String()}, ""}
	g := newRig(t, c)
	var cut *cutter
	inAddr := g.gateways(t, c, nil, nil, func(out string) string {
		cut = newCutter(t, out, int64(g.ramSize)/8)
		return "tcp:" + cut.ln.Addr().String()
	})
	g.srcQMP.do(t, "migrate", map[string]any{"uri": inAddr})
	select {
	case <-cut.cut:
	case <-time.After(60 * time.Second):
		t.Fatal("the link was never cut")
	}
	cutAt := time.Now()
	within := retry + 10*time.Second
	if st, desc := waitMigration(t, g.srcQMP, within); st != "failed" {
		t.Errorf("source: %s (%s), want failed", st, desc)
	}
	if el := time.Since(cutAt); el < retry {
		t.Errorf("the source failed %v after the cut, inside --link-retry %v", el, retry)
	}
	for _, p := range []*proc{g.in, g.out} {
		if code := p.wait(t); code != 1 || !strings.Contains(p.stderr.String(), "link: ") || !strings.Contains(p.stderr.String(), "--link-retry") {
			t.Errorf("%s exited %d: %s", p.cmd.Args[2], code, p.stderr)
		}
	}
	select {
	case <-g.dst.done:
		if g.dst.cmd.ProcessState.ExitCode() == 0 {
			t.Error("the destination QEMU exited 0")
		}
	case <-time.After(within - time.Since(cutAt)):
		t.Errorf("the destination QEMU still runs %v after the cut", within)
	}
	if el := time.Since(cutAt); el > within {
		t.Errorf("the chain took %v to fail", el)
	}
	g.srcQMP.do(t, "quit", nil)
	g.src.wait(t)
}

// TestGatewayOtherCA: a gateway-out whose certificate another CA signed
// is refused: gateway-in exits 1 with a TLS error and the source fails;
// gateway-out reports the refused handshake and goes on listening.
func TestGatewayOtherCA(t *testing.T) {
	c := gwCase{2, "none", "none", 2, []string{"--method", "zstd"}, ""}
	g := newRig(t, c)
	other, err := certs.Make(filepath.Join(g.dir, "other"), []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	outTLS := []string{"--tls-cert", other.ServerCert, "--tls-key", other.ServerKey, "--tls-ca", g.tls.CA}
	inAddr := g.gateways(t, c, outTLS, g.clientTLS(), func(a string) string { return a })
	g.srcQMP.do(t, "migrate", map[string]any{"uri": inAddr})
	if st, desc := waitMigration(t, g.srcQMP, 30*time.Second); st != "failed" {
		t.Errorf("source: %s (%s), want failed", st, desc)
	}
	if code := g.in.wait(t); code != 1 || !strings.Contains(g.in.stderr.String(), "link: ") ||
		!strings.Contains(g.in.stderr.String(), "certificate signed by unknown authority") {
		t.Errorf("gateway-in exited %d: %s", code, g.in.stderr)
	}
	select {
	case <-g.out.done:
		t.Errorf("gateway-out exited after refusing one connection: %s", g.out.stderr)
	case <-time.After(time.Second):
		g.out.cmd.Process.Kill()
		g.out.wait(t)
		if !strings.Contains(g.out.stderr.String(), "refused a connection from") {
			t.Errorf("gateway-out did not report the refused handshake: %s", g.out.stderr)
		}
	}
	g.srcQMP.do(t, "quit", nil)
	g.src.wait(t)
}
