package main_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pagewire/pagewire/internal/certs"
	"github.com/pagewire/pagewire/internal/corpus"
)

// gwCase is one migration through the gateways.
type gwCase struct {
	qemuChannels int
	srcMethod    string // the source's multifd-compression
	dstMethod    string // the destination's
	linkChannels int
	linkArgs     []string // --method or --plugin, on both gateways
	qemuPlugin   string   // gateway-out's --qemu-plugin, if any
}

// freePort returns a loopback TCP port nobody listens on (QEMU's
// -incoming needs a number).
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// gwRig is two QEMUs (TCG, RAM in files) and the gateways between them.
type gwRig struct {
	dir, qemu        string
	srcRAM, dstRAM   string
	src, dst         *proc
	srcQMP, dstQMP   *qmp
	in, out          *proc
	tls              certs.Files
	dstPort, ramSize int
}

// newRig starts the destination QEMU (listening for the migration) and
// the source QEMU (paused, its RAM the first corpus image).
func newRig(t testing.TB, c gwCase) *gwRig {
	t.Helper()
	images, err := corpus.List()
	if err != nil {
		t.Fatal(err)
	}
	img, err := images[0].Load()
	if err != nil {
		t.Fatal(err)
	}
	return newRigWith(t, c, img, []string{"-S"}, nil)
}

// newRigWith starts the QEMUs with RAM img, srcArgs and dstArgs.
func newRigWith(t testing.TB, c gwCase, img []byte, srcArgs, dstArgs []string) *gwRig {
	t.Helper()
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Fatal("qemu-system-x86_64 not found: 'make test' installs Debian's qemu-system-x86 (scripts/setup.sh)")
	}
	g := &gwRig{dir: t.TempDir(), qemu: qemu, ramSize: len(img)}
	g.srcRAM, g.dstRAM = filepath.Join(g.dir, "src.ram"), filepath.Join(g.dir, "dst.ram")
	if err := os.WriteFile(g.srcRAM, img, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(g.dstRAM, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(g.dstRAM, int64(len(img))); err != nil {
		t.Fatal(err)
	}
	if g.tls, err = certs.Make(filepath.Join(g.dir, "tls"), []string{"127.0.0.1"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	mb := fmt.Sprintf("%dK", len(img)>>10)
	machine := func(ram, qmpSock string, extra ...string) []string {
		return append([]string{"--qemu--", qemu,
			"-machine", "pc-i440fx-7.2,memory-backend=pc.ram", "-accel", "tcg", "-m", mb,
			"-object", "memory-backend-file,id=pc.ram,size=" + mb + ",mem-path=" + ram + ",share=on",
			"-nodefaults", "-vga", "none", "-display", "none",
			"-qmp", "unix:" + qmpSock + ",server=on,wait=off"}, extra...)
	}
	caps := map[string]any{"capabilities": []any{map[string]any{"capability": "multifd", "state": true}}}
	g.dst = start(t, machine(g.dstRAM, filepath.Join(g.dir, "dst.qmp"), append(dstArgs, "-S", "-incoming", "defer")...)...)
	g.dstQMP = dialQMP(t, filepath.Join(g.dir, "dst.qmp"))
	g.dstQMP.do(t, "migrate-set-capabilities", caps)
	g.dstQMP.do(t, "migrate-set-parameters", map[string]any{"multifd-channels": c.qemuChannels, "multifd-compression": c.dstMethod})
	g.dstPort = freePort(t)
	g.dstQMP.do(t, "migrate-incoming", map[string]any{"uri": fmt.Sprintf("tcp:127.0.0.1:%d", g.dstPort)})
	g.src = start(t, machine(g.srcRAM, filepath.Join(g.dir, "src.qmp"), srcArgs...)...)
	g.srcQMP = dialQMP(t, filepath.Join(g.dir, "src.qmp"))
	g.srcQMP.do(t, "migrate-set-capabilities", caps)
	g.srcQMP.do(t, "migrate-set-parameters", map[string]any{"multifd-channels": c.qemuChannels, "multifd-compression": c.srcMethod})
	t.Cleanup(func() {
		g.srcQMP.c.Close()
		g.dstQMP.c.Close()
	})
	return g
}

// gateways starts gateway-out, then gateway-in pointed at linkAddr(the
// gateway-out's address), and returns gateway-in's address.
func (g *gwRig) gateways(t testing.TB, c gwCase, outTLS, inTLS []string, linkAddr func(string) string) string {
	t.Helper()
	args := append([]string{"qemu", "gateway-out", "--listen", "tcp:127.0.0.1:0", "--to", fmt.Sprintf("tcp:127.0.0.1:%d", g.dstPort),
		"--qemu-channels", fmt.Sprint(c.qemuChannels), "--qemu-method", c.dstMethod, "--json"}, outTLS...)
	if c.qemuPlugin != "" {
		args = append(args, "--qemu-plugin", c.qemuPlugin)
	}
	out, outAddr := startRecv(t, append(args, c.linkArgs...)...)
	args = append([]string{"qemu", "gateway-in", "--listen", "tcp:127.0.0.1:0", "--to", linkAddr(outAddr),
		"--qemu-channels", fmt.Sprint(c.qemuChannels), "--qemu-method", c.srcMethod,
		"--channels", fmt.Sprint(c.linkChannels), "--json"}, inTLS...)
	in, inAddr := startRecv(t, append(args, c.linkArgs...)...)
	g.in, g.out = in, out
	return inAddr
}

func (g *gwRig) serverTLS() []string {
	return []string{"--tls-cert", g.tls.ServerCert, "--tls-key", g.tls.ServerKey, "--tls-ca", g.tls.CA}
}

func (g *gwRig) clientTLS() []string {
	return []string{"--tls-cert", g.tls.ClientCert, "--tls-key", g.tls.ClientKey, "--tls-ca", g.tls.CA}
}

// migrationStatus is query-migrate's status and error.
func migrationStatus(t testing.TB, q *qmp) (string, string) {
	var st struct {
		Status string `json:"status"`
		Error  string `json:"error-desc"`
	}
	json.Unmarshal(q.do(t, "query-migrate", nil), &st)
	return st.Status, st.Error
}

// waitMigration polls q until the migration is no longer active.
func waitMigration(t testing.TB, q *qmp, within time.Duration) (string, string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		st, desc := migrationStatus(t, q)
		switch st {
		case "completed", "failed", "cancelled":
			return st, desc
		}
		if time.Now().After(deadline) {
			return st, "still " + st + " after " + within.String()
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestGateway migrates a paused QEMU 7.2 whose RAM is a corpus image to
// another QEMU 7.2 through gateway-in and gateway-out over mutual TLS:
// link methods zstd, lz4 and the zstd Wasm plugin, QEMU zstd in and none
// out, 2 and 4 QEMU channels with another link channel count, and QEMU
// zstd out compressed by the C-built zstd-c.wasm (its stream of frames,
// see plugins/zstd-c/shim.c, into QEMU's own decoder). The destination
// completes, its RAM file is byte-identical to the source's, and it runs
// on 'cont'.
func TestGateway(t *testing.T) {
	wasmZstd := buildWasm(t)
	cdir := t.TempDir()
	buildCPlugins(t, cdir)
	cases := map[string]gwCase{
		"none-2/link-zstd-4":            {2, "none", "none", 4, []string{"--method", "zstd"}, ""},
		"none-4/link-lz4-3":             {4, "none", "none", 3, []string{"--method", "lz4"}, ""},
		"none-2/link-zstd.wasm-2":       {2, "none", "none", 2, []string{"--plugin", wasmZstd}, ""},
		"zstd-4/link-lz4-2/none":        {4, "zstd", "none", 2, []string{"--method", "lz4"}, ""},
		"none-2/link-lz4-2/zstd-c.wasm": {2, "none", "zstd", 2, []string{"--method", "lz4"}, filepath.Join(cdir, "zstd-c.wasm")},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			g := newRig(t, c)
			inAddr := g.gateways(t, c, g.serverTLS(), g.clientTLS(), func(a string) string { return a })
			g.srcQMP.do(t, "migrate", map[string]any{"uri": inAddr})
			if st, desc := waitMigration(t, g.srcQMP, 90*time.Second); st != "completed" {
				t.Fatalf("source: %s: %s\ngateway-in: %s\ngateway-out: %s", st, desc, g.in.stderr, g.out.stderr)
			}
			for _, p := range []*proc{g.in, g.out} {
				if code := p.wait(t); code != 0 {
					t.Fatalf("%s exited %d: %s", p.cmd.Args[2], code, p.stderr)
				}
			}
			if st, desc := waitMigration(t, g.dstQMP, 30*time.Second); st != "completed" {
				t.Fatalf("destination: %s: %s", st, desc)
			}
			src, err := os.ReadFile(g.srcRAM)
			if err != nil {
				t.Fatal(err)
			}
			dst, err := os.ReadFile(g.dstRAM)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(src, dst) {
				t.Fatal("the destination's RAM differs from the source's")
			}
			g.dstQMP.do(t, "cont", nil)
			var run struct {
				Running bool `json:"running"`
			}
			json.Unmarshal(g.dstQMP.do(t, "query-status", nil), &run)
			if !run.Running {
				t.Error("the destination does not run after cont")
			}
			var sum struct {
				Channels []any `json:"channels"`
			}
			if err := json.Unmarshal(g.in.stdout.Bytes(), &sum); err != nil || len(sum.Channels) != c.linkChannels {
				t.Errorf("gateway-in summary %s: %v", g.in.stdout.String(), err)
			}
			g.srcQMP.do(t, "quit", nil)
			g.dstQMP.do(t, "quit", nil)
			g.src.wait(t)
			g.dst.wait(t)
		})
	}
}

// TestGatewayOutQEMUPlugin: gateway-out refuses, with a usage error
// that says why, a --qemu-plugin whose method QEMU does not have, one
// that disagrees with --qemu-method, and a pin it cannot apply.
func TestGatewayOutQEMUPlugin(t *testing.T) {
	dir := t.TempDir()
	buildCPlugins(t, dir)
	zstd, lz4 := filepath.Join(dir, "zstd-c.wasm"), filepath.Join(dir, "lz4-c.wasm")
	base := []string{"qemu", "gateway-out", "--listen", "tcp:127.0.0.1:0", "--to", "tcp:127.0.0.1:1", "--insecure"}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--qemu-plugin", lz4}, "method lz4 (flag 0x3c) is not QEMU's zlib (0x2) or zstd (0x4)"},
		{[]string{"--qemu-plugin", zstd, "--qemu-method", "zlib"}, "runs zstd, but --qemu-method is zlib"},
		{[]string{"--qemu-plugin", zstd, "--qemu-plugin-sha256", "ab"}, `--qemu-plugin-sha256: sha256 "ab": want 64 hex digits`},
		{[]string{"--qemu-plugin-sha256", "ab"}, "--qemu-plugin-sha256 pins a --qemu-plugin; there is none"},
	} {
		p := start(t, append(base, c.args...)...)
		if code := p.wait(t); code != 2 || !strings.Contains(p.stderr.String(), c.want) {
			t.Errorf("%v: exited %d: %s; want 2 and %q", c.args, code, p.stderr, c.want)
		}
	}
}

// cutter is a TCP proxy for the link that cuts every connection once
// limit bytes have gone through.
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
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, conn := range c.conns {
			conn.Close()
		}
	})
}

// TestGatewayLinkCut: the link between the gateways is cut mid-migration:
// both QEMUs fail within 10 s (the destination exits), both gateways exit
// 1 naming the leg, and nothing hangs.
func TestGatewayLinkCut(t *testing.T) {
	c := gwCase{2, "none", "none", 2, []string{"--method", "nocomp", "--insecure"}, ""}
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
	if st, desc := waitMigration(t, g.srcQMP, 10*time.Second); st != "failed" {
		t.Errorf("source: %s (%s), want failed", st, desc)
	}
	for _, p := range []*proc{g.in, g.out} {
		if code := p.wait(t); code != 1 || !strings.Contains(p.stderr.String(), "link") {
			t.Errorf("%s exited %d: %s", p.cmd.Args[2], code, p.stderr)
		}
	}
	select {
	case <-g.dst.done:
		if g.dst.cmd.ProcessState.ExitCode() == 0 {
			t.Error("the destination QEMU exited 0")
		}
	case <-time.After(10*time.Second - time.Since(cutAt)):
		t.Error("the destination QEMU still runs 10s after the cut")
	}
	if el := time.Since(cutAt); el > 10*time.Second {
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
