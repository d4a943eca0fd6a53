package main_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pagewire/pagewire/internal/pagegen"
	"github.com/pagewire/pagewire/plugins/zstd"
)

// qemuSpec is a QEMU binary, the machine type it runs and, if set, its
// zero-page-detection parameter (QEMU 9 and later: "multifd" or
// "legacy").
type qemuSpec struct {
	bin, machine, zeroPages string
}

// qemuOf returns the QEMU of a version, machine pc-i440fx-7.2 (the one
// both versions have): "7.2" is Debian 12's qemu-system-x86_64
// ($PAGEWIRE_QEMU72 overrides), "10.0" the one scripts/qemu10.sh unpacks
// from bookworm-backports into build/qemu10 ($PAGEWIRE_QEMU10 overrides).
// The binary must say it is that version.
func qemuOf(t testing.TB, version string) qemuSpec {
	t.Helper()
	var bin string
	switch version {
	case "7.2":
		bin = os.Getenv("PAGEWIRE_QEMU72")
		if bin == "" {
			p, err := exec.LookPath("qemu-system-x86_64")
			if err != nil {
				t.Fatal("qemu-system-x86_64 not found: 'make test' installs Debian's qemu-system-x86 (scripts/setup.sh)")
			}
			bin = p
		}
	case "10.0":
		bin = os.Getenv("PAGEWIRE_QEMU10")
		if bin == "" {
			p, err := filepath.Abs(filepath.Join("..", "..", "build", "qemu10", "bin", "qemu-system-x86_64"))
			if err != nil {
				t.Fatal(err)
			}
			bin = p
		}
	default:
		t.Fatalf("no QEMU %s", version)
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatalf("%s --version: %v: 'make test' installs QEMU %s (scripts/setup.sh, scripts/qemu10.sh)", bin, err, version)
	}
	if !strings.Contains(string(out), "version "+version+".") {
		t.Fatalf("%s is not QEMU %s: %s", bin, version, bytes.TrimSpace(out))
	}
	return qemuSpec{bin: bin, machine: "pc-i440fx-7.2"}
}

// qemuRecvCase is one migration from a real QEMU into 'pagewire qemu
// recv'.
type qemuRecvCase struct {
	channels  int
	method    string // multifd-compression
	zeroPages string // zero-page-detection
	running   bool   // a booted guest that dirties memory, else paused
	machine   string // pc-i440fx-10.0 or pc-i440fx-7.2
}

// TestQEMU10Source migrates a live QEMU 10.0 (TCG) into 'pagewire qemu
// recv' without telling it the method (it detects it): compression none,
// zlib and zstd, zero-page-detection multifd and legacy, 2, 4 and 8
// channels, paused and running guests, machine types pc-i440fx-10.0
// (QEMU 10's own dialect) and pc-i440fx-7.2 (whose compat properties
// make QEMU 10 flush after each section: the 7.2 dialect on the wire).
// The received pc.ram is byte-identical to the source's RAM file once the
// source completed, and the summary names the dialect.
func TestQEMU10Source(t *testing.T) {
	q := qemuOf(t, "10.0")
	const m10, m72 = "pc-i440fx-10.0", "pc-i440fx-7.2"
	cases := []qemuRecvCase{
		{2, "none", "multifd", false, m10},
		{4, "zlib", "multifd", false, m10},
		{8, "zstd", "multifd", false, m10},
		{8, "none", "legacy", false, m10},
		{4, "zstd", "multifd", false, m72},
		{8, "none", "legacy", false, m72},
		{2, "zlib", "legacy", false, m72},
		{4, "zstd", "legacy", false, m72},
		{4, "none", "multifd", true, m10},
		{2, "zstd", "multifd", true, m10},
		{8, "zlib", "legacy", true, m72},
	}
	for _, c := range cases {
		state := "paused"
		if c.running {
			state = "running"
		}
		t.Run(fmt.Sprintf("%s/%s/%d/%s/%s", c.method, c.zeroPages, c.channels, state, c.machine), func(t *testing.T) {
			q := q
			q.machine = c.machine
			qemuIntoRecv(t, q, c)
		})
	}
	// In a build with the native zstd, the pure-Go one decodes QEMU's
	// stream too (PAGEWIRE_ZSTD=go). (No '=' in a subtest's name: QEMU's
	// option parser takes it out of the QMP socket's path.)
	if zstd.Native {
		for _, c := range []qemuRecvCase{{8, "zstd", "multifd", false, m10}, {2, "zstd", "multifd", true, m10}} {
			t.Run(fmt.Sprintf("zstd-go/%d/running-%v", c.channels, c.running), func(t *testing.T) {
				t.Setenv("PAGEWIRE_ZSTD", "go")
				q := q
				q.machine = c.machine
				qemuIntoRecv(t, q, c)
			})
		}
	}
}

// qemuIntoRecv runs one qemuRecvCase with the source QEMU q.
func qemuIntoRecv(t *testing.T, q qemuSpec, c qemuRecvCase) {
	dir := t.TempDir()
	ramFile := filepath.Join(dir, "guest-ram.img")
	// N MiB + 64 KiB: TCG QEMU loses dirty bits on RAM blocks that are a
	// multiple of 64 pages. Debian's kernel does not boot in 64 MiB.
	ram := 64<<20 + 64<<10
	if c.running {
		ram = 128<<20 + 64<<10
	}
	img := make([]byte, ram)
	if !c.running {
		pagegen.Fill(img, 4096, pagegen.DefaultMix, uint64(c.channels*7+len(c.method)))
	}
	if err := os.WriteFile(ramFile, img, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	r, addr := startRecv(t, "qemu", "recv", "--listen", "tcp:127.0.0.1:0", "--out", out, "--channels", fmt.Sprint(c.channels), "--json")
	sock := filepath.Join(dir, "qmp.sock")
	mb := fmt.Sprintf("%dK", ram>>10)
	args := []string{"--qemu--", q.bin,
		"-machine", q.machine + ",memory-backend=pc.ram", "-accel", "tcg", "-m", mb,
		"-object", "memory-backend-file,id=pc.ram,size=" + mb + ",mem-path=" + ramFile + ",share=on",
		"-nodefaults", "-vga", "none", "-display", "none",
		"-qmp", "unix:" + sock + ",server=on,wait=off"}
	console := filepath.Join(dir, "console.log")
	if c.running {
		kernel, initrd := guestFiles(t)
		args = append(args, "-cpu", "max", "-kernel", kernel, "-initrd", initrd,
			"-append", "console=ttyS0 pw_secs=30 nokaslr init_on_free=1", "-serial", "file:"+console)
	} else {
		args = append(args, "-S")
	}
	src := start(t, args...)
	qm := dialQMP(t, sock)
	defer qm.c.Close()
	if c.running {
		waitConsole(t, console, "PAGEWIRE-READY", 90*time.Second)
	}
	qm.do(t, "migrate-set-capabilities", map[string]any{"capabilities": []any{map[string]any{"capability": "multifd", "state": true}}})
	qm.do(t, "migrate-set-parameters", map[string]any{"multifd-channels": c.channels, "multifd-compression": c.method, "zero-page-detection": c.zeroPages})
	if c.running {
		// Slow enough for several rounds while the guest dirties memory.
		qm.do(t, "migrate-set-parameters", map[string]any{"max-bandwidth": 32 << 20, "downtime-limit": 50})
	}
	qm.do(t, "migrate", map[string]any{"uri": addr})
	if st, desc := waitMigration(t, qm, 120*time.Second); st != "completed" {
		t.Fatalf("source migration %s: %s; receiver: %s", st, desc, r.stderr)
	}
	if code := r.wait(t); code != 0 {
		t.Fatalf("qemu recv exited %d: %s", code, r.stderr)
	}
	var info struct {
		RAM struct {
			DirtySyncCount int `json:"dirty-sync-count"`
		} `json:"ram"`
	}
	json.Unmarshal(qm.do(t, "query-migrate", nil), &info)
	qm.do(t, "quit", nil)
	src.wait(t)
	want, err := os.ReadFile(ramFile)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(out, "pc.ram.raw"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("received pc.ram differs from the source's RAM file in %d pages", pagesDiffer(got, want))
	}
	var sum struct {
		Machine        string `json:"machine"`
		Method         string `json:"method"`
		Implementation string `json:"implementation"`
		Dialect        string `json:"dialect"`
		Channels       []any  `json:"channels"`
	}
	if err := json.Unmarshal(r.stdout.Bytes(), &sum); err != nil {
		t.Fatalf("summary: %v: %s", err, r.stdout.String())
	}
	if want := wantZstd(); c.method == "zstd" && !strings.HasPrefix(sum.Implementation, want) {
		t.Errorf("zstd ran on %q, want %s", sum.Implementation, want)
	}
	wantDialect := map[string]string{"pc-i440fx-10.0": "10.0", "pc-i440fx-7.2": "7.2"}[q.machine]
	if sum.Machine != q.machine || len(sum.Channels) != c.channels || sum.Dialect != wantDialect {
		t.Errorf("summary (want dialect %s): %s", wantDialect, r.stdout.String())
	}
	if c.running && info.RAM.DirtySyncCount < 3 {
		t.Errorf("%d dirty syncs: the guest did not keep the migration busy", info.RAM.DirtySyncCount)
	}
	t.Logf("dialect %s, method %s (%s), %d dirty syncs", sum.Dialect, sum.Method, sum.Implementation, info.RAM.DirtySyncCount)
}

// wantZstd is the zstd the CLI runs: libzstd in a build with the native
// tier, unless PAGEWIRE_ZSTD=go.
func wantZstd() string {
	if zstd.Native && os.Getenv("PAGEWIRE_ZSTD") != "go" {
		return "libzstd "
	}
	return "klauspost/compress "
}

// waitConsole waits until the guest's serial console log holds s.
func waitConsole(t testing.TB, console, s string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		b, _ := os.ReadFile(console)
		if bytes.Contains(b, []byte(s)) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the guest did not print %s within %v:\n%s", s, within, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// pagesDiffer counts the 4 KiB pages in which a and b differ, and every
// page of the longer one past the shorter's end.
func pagesDiffer(a, b []byte) int {
	n := 0
	for i := 0; i < max(len(a), len(b)); i += 4096 {
		if i+4096 > min(len(a), len(b)) || !bytes.Equal(a[i:i+4096], b[i:i+4096]) {
			n++
		}
	}
	return n
}

// TestQEMU10Gateways migrates through gateway-in and gateway-out between
// live QEMUs of both versions: 10.0 -> 10.0 on machine pc-i440fx-10.0
// (QEMU 10's own dialect, which gateway-out's QEMU sender speaks to the
// destination), and on pc-i440fx-7.2 10.0 -> 10.0, 7.2 -> 10.0 and
// 10.0 -> 7.2 (the 7.2 machine type, whose compat properties make QEMU 10
// flush after each section). The destination completes with the
// source's RAM and runs on 'cont'.
func TestQEMU10Gateways(t *testing.T) {
	type gwQEMUCase struct {
		name     string
		src, dst string
		machine  string
		zero     string
		gw       gwCase
		zstdGo   bool // PAGEWIRE_ZSTD=go: the pure-Go zstd in a native build
	}
	cases := []gwQEMUCase{
		{"10.0-10.0/pc-i440fx-10.0", "10.0", "10.0", "pc-i440fx-10.0", "", gwCase{4, "zstd", "zstd", 2, []string{"--method", "zstd"}, ""}, false},
		{"10.0-10.0/pc-i440fx-7.2", "10.0", "10.0", "pc-i440fx-7.2", "", gwCase{2, "none", "none", 2, []string{"--method", "lz4"}, ""}, false},
		{"7.2-10.0", "7.2", "10.0", "pc-i440fx-7.2", "", gwCase{2, "zstd", "none", 3, []string{"--method", "zstd"}, ""}, false},
		{"10.0-7.2", "10.0", "7.2", "pc-i440fx-7.2", "legacy", gwCase{4, "none", "zlib", 2, []string{"--method", "lz4"}, ""}, false},
		{"10.0-7.2/zero-multifd", "10.0", "7.2", "pc-i440fx-7.2", "multifd", gwCase{2, "zstd", "none", 2, []string{"--method", "zstd"}, ""}, false},
	}
	if zstd.Native {
		// QEMU's zstd stream into the pure-Go decoder, and the pure-Go
		// encoder's stream into QEMU's decoder, on both sides of the link.
		cases = append(cases, gwQEMUCase{"10.0-10.0/zstd-go", "10.0", "10.0", "pc-i440fx-10.0", "", gwCase{4, "zstd", "zstd", 2, []string{"--method", "zstd"}, ""}, true})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.zstdGo {
				t.Setenv("PAGEWIRE_ZSTD", "go")
			}
			src, dst := qemuOf(t, c.src), qemuOf(t, c.dst)
			src.machine, dst.machine = c.machine, c.machine
			if c.src == "10.0" {
				src.zeroPages = c.zero
			}
			img := make([]byte, 64<<20+64<<10)
			pagegen.Fill(img, 4096, pagegen.DefaultMix, 42)
			g := newRigQEMU(t, c.gw, img, src, dst, []string{"-S"}, nil)
			inAddr := g.gateways(t, c.gw, g.serverTLS(), g.clientTLS(), func(a string) string { return a })
			g.srcQMP.do(t, "migrate", map[string]any{"uri": inAddr})
			st, desc := waitMigration(t, g.srcQMP, 90*time.Second)
			dstSt, dstDesc := waitMigration(t, g.dstQMP, 30*time.Second)
			if st != "completed" || dstSt != "completed" {
				t.Fatalf("source: %s: %s\ndestination: %s: %s\ngateway-in: %s\ngateway-out: %s", st, desc, dstSt, dstDesc, g.in.stderr, g.out.stderr)
			}
			for _, p := range []*proc{g.in, g.out} {
				if code := p.wait(t); code != 0 {
					t.Fatalf("%s exited %d: %s", p.cmd.Args[2], code, p.stderr)
				}
			}
			srcRAM, _ := os.ReadFile(g.srcRAM)
			dstRAM, _ := os.ReadFile(g.dstRAM)
			if !bytes.Equal(srcRAM, dstRAM) {
				t.Fatalf("the destination's RAM differs from the source's in %d pages", pagesDiffer(srcRAM, dstRAM))
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
				QEMUDialect string `json:"qemu_dialect"`
			}
			json.Unmarshal(g.out.stdout.Bytes(), &sum)
			t.Logf("gateway-out: QEMU dialect %q", sum.QEMUDialect)
			var in struct {
				Implementation string `json:"implementation"`
			}
			json.Unmarshal(g.in.stdout.Bytes(), &in)
			if want := wantZstd(); c.gw.linkArgs[1] == "zstd" && !strings.HasPrefix(in.Implementation, want) {
				t.Errorf("gateway-in's zstd ran on %q, want %s", in.Implementation, want)
			}
			g.srcQMP.do(t, "quit", nil)
			g.dstQMP.do(t, "quit", nil)
			g.src.wait(t)
			g.dst.wait(t)
		})
	}
}
