package main_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
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
	otherClient      certs.Pair // another client certificate of the same CA
	dstPort, ramSize int
	inArgs           []string // gateway-in's own flags, beside the link's
	// gwQMP gives each gateway --qmp, a monitor of its QEMU's own.
	gwQMP bool
}

// newRig starts the destination QEMU (listening for the migration) and
// the source QEMU (paused, its RAM the first corpus image).
func newRig(t testing.TB, c gwCase) *gwRig {
	t.Helper()
	img, err := corpus.LoadFirst()
	if err != nil {
		t.Fatal(err)
	}
	return newRigWith(t, c, img, []string{"-S"}, nil)
}

// newRigWith starts the QEMUs (Debian's 7.2 on both ends) with RAM img,
// srcArgs and dstArgs.
func newRigWith(t testing.TB, c gwCase, img []byte, srcArgs, dstArgs []string) *gwRig {
	t.Helper()
	q := qemuOf(t, "7.2")
	return newRigQEMU(t, c, img, q, q, srcArgs, dstArgs)
}

// newRigQEMU starts the destination QEMU dst, listening for the
// migration, and the source QEMU src, with RAM img, srcArgs and dstArgs.
func newRigQEMU(t testing.TB, c gwCase, img []byte, src, dst qemuSpec, srcArgs, dstArgs []string) *gwRig {
	t.Helper()
	g := &gwRig{dir: t.TempDir(), qemu: src.bin, ramSize: len(img)}
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
	var err error
	var others []certs.Pair
	if g.tls, others, err = certs.MakeClients(filepath.Join(g.dir, "tls"), []string{"127.0.0.1"}, time.Hour, 1); err != nil {
		t.Fatal(err)
	}
	g.otherClient = others[0]
	mb := fmt.Sprintf("%dK", len(img)>>10)
	// Each QEMU has a second monitor for its gateway's --qmp.
	machine := func(q qemuSpec, ram, qmpSock string, extra ...string) []string {
		return append([]string{"--qemu--", q.bin,
			"-machine", q.machine + ",memory-backend=pc.ram", "-accel", "tcg", "-m", mb,
			"-object", "memory-backend-file,id=pc.ram,size=" + mb + ",mem-path=" + ram + ",share=on",
			"-nodefaults", "-vga", "none", "-display", "none",
			"-qmp", "unix:" + qmpSock + ",server=on,wait=off",
			"-qmp", "unix:" + strings.TrimSuffix(qmpSock, ".qmp") + "-gw.qmp,server=on,wait=off"}, extra...)
	}
	caps := map[string]any{"capabilities": []any{
		map[string]any{"capability": "multifd", "state": true},
		map[string]any{"capability": "events", "state": true},
	}}
	g.dst = start(t, machine(dst, g.dstRAM, filepath.Join(g.dir, "dst.qmp"), append(dstArgs, "-S", "-incoming", "defer")...)...)
	g.dstQMP = dialQMP(t, filepath.Join(g.dir, "dst.qmp"))
	g.dstQMP.do(t, "migrate-set-capabilities", caps)
	g.dstQMP.do(t, "migrate-set-parameters", map[string]any{"multifd-channels": c.qemuChannels, "multifd-compression": c.dstMethod})
	if dst.zeroPages != "" {
		g.dstQMP.do(t, "migrate-set-parameters", map[string]any{"zero-page-detection": dst.zeroPages})
	}
	g.dstPort = freePort(t)
	g.dstQMP.do(t, "migrate-incoming", map[string]any{"uri": fmt.Sprintf("tcp:127.0.0.1:%d", g.dstPort)})
	g.src = start(t, machine(src, g.srcRAM, filepath.Join(g.dir, "src.qmp"), srcArgs...)...)
	g.srcQMP = dialQMP(t, filepath.Join(g.dir, "src.qmp"))
	g.srcQMP.do(t, "migrate-set-capabilities", caps)
	g.srcQMP.do(t, "migrate-set-parameters", map[string]any{"multifd-channels": c.qemuChannels, "multifd-compression": c.srcMethod})
	if src.zeroPages != "" {
		g.srcQMP.do(t, "migrate-set-parameters", map[string]any{"zero-page-detection": src.zeroPages})
	}
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
	if g.gwQMP {
		args = append(args, "--qmp", filepath.Join(g.dir, "dst-gw.qmp"))
	}
	out, outAddr := startRecv(t, append(args, c.linkArgs...)...)
	args = append([]string{"qemu", "gateway-in", "--listen", "tcp:127.0.0.1:0", "--to", linkAddr(outAddr),
		"--qemu-channels", fmt.Sprint(c.qemuChannels), "--qemu-method", c.srcMethod,
		"--channels", fmt.Sprint(c.linkChannels), "--json"}, inTLS...)
	args = append(args, g.inArgs...)
	if g.gwQMP {
		args = append(args, "--qmp", filepath.Join(g.dir, "src-gw.qmp"))
	}
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

// settle waits for both gateways to exit 0 and the destination to
// complete, quits both QEMUs, and checks that the destination's RAM file
// equals the source's, of size bytes.
func (g *gwRig) settle(t *testing.T, size int) {
	t.Helper()
	for _, p := range []*proc{g.in, g.out} {
		if code := p.wait(t); code != 0 {
			t.Fatalf("%s exited %d: %s", p.cmd.Args[2], code, p.stderr)
		}
	}
	if st, desc := waitMigration(t, g.dstQMP, 30*time.Second); st != "completed" {
		t.Fatalf("destination: %s: %s", st, desc)
	}
	g.srcQMP.do(t, "quit", nil)
	g.dstQMP.do(t, "quit", nil)
	g.src.wait(t)
	g.dst.wait(t)
	src, _ := os.ReadFile(g.srcRAM)
	dst, _ := os.ReadFile(g.dstRAM)
	if len(src) != size || !bytes.Equal(src, dst) {
		t.Fatalf("the destination's RAM differs from the source's in %d pages", pagesDiffer(src, dst))
	}
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
// on 'cont'. One case gives both gateways --qmp: a paused source sends
// no STOP, so gateway-out says it has no end-to-end downtime, and
// gateway-in does not wait for the event before the stream's tail.
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
			g.gwQMP = name == "none-4/link-lz4-3"
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
			if g.gwQMP {
				if want := "no end-to-end downtime: gateway-in did not say when the source stopped"; !strings.Contains(g.out.stderr.String(), want) {
					t.Errorf("gateway-out's stderr does not say %q: %s", want, g.out.stderr)
				}
				if strings.Contains(g.out.stdout.String(), "e2e_downtime_ms") {
					t.Errorf("gateway-out reports a downtime it cannot know: %s", g.out.stdout.String())
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
