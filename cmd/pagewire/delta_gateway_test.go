package main_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pagewire/pagewire/internal/lab/guest"
	iqmp "github.com/pagewire/pagewire/internal/qmp"
	"github.com/pagewire/pagewire/plugins/auto"
)

// deltaGuest returns the kernel, and an initramfs of the lab's workload
// updating 8 bytes of random 64-byte records in mib MiB of random
// (incompressible) memory rate times a second, with its kernel command
// line: the guest delta pages are for.
func deltaGuest(t *testing.T, mib, rate int) (kernel, initrd, appendLine string) {
	t.Helper()
	root, err := guest.Root()
	if err != nil {
		t.Fatal(err)
	}
	if kernel, err = guest.Kernel(root); err != nil {
		t.Fatal(err)
	}
	bb, err := guest.Busybox(root)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	wl, err := guest.BuildWorkload(root, dir)
	if err != nil {
		t.Fatal(err)
	}
	initrd = filepath.Join(dir, "initramfs.cpio")
	if err := guest.Initramfs(initrd, bb, wl); err != nil {
		t.Fatal(err)
	}
	w := guest.Workload{Kind: "records-random", MemMiB: mib, Rate: rate, Record: 64, Update: 8}
	return kernel, initrd, guest.Append(w)
}

// TestGatewayDeltaPages migrates a running guest that makes small
// updates to incompressible memory through gateways with --delta-cache
// and the link's default method, auto, between two QEMU 10.0 and
// between two QEMU 7.2: the destination completes with the source's RAM,
// pages crossed the link as deltas, and gateway-in's summary says what
// auto chose for the rest. With --qmp on both gateways, gateway-out's
// end-to-end downtime is the test's own reading of the QMP events (the
// source's last STOP to the destination's MIGRATION completed) within
// 20 ms.
func TestGatewayDeltaPages(t *testing.T) {
	kernel, initrd, appendLine := deltaGuest(t, 48, 5000)
	for _, c := range []struct {
		version, machine string
	}{{"10.0", "pc-i440fx-10.0"}, {"7.2", "pc-i440fx-7.2"}} {
		t.Run(c.version, func(t *testing.T) {
			q := qemuOf(t, c.version)
			q.machine = c.machine
			gc := gwCase{qemuChannels: 2, srcMethod: "none", dstMethod: "none", linkChannels: 2}
			const size = 128<<20 + 64<<10 // not a multiple of 64 pages: TCG's dirty bits
			console := filepath.Join(t.TempDir(), "console.log")
			args := []string{"-cpu", "max", "-kernel", kernel, "-initrd", initrd, "-append", appendLine}
			g := newRigQEMU(t, gc, make([]byte, size), q, q, append(args, "-serial", "file:"+console), append(args, "-serial", "null"))
			deadline := time.Now().Add(90 * time.Second)
			for {
				b, _ := os.ReadFile(console)
				if guest.Ready(b) {
					break
				}
				if f := guest.Failed(b); f != "" || time.Now().After(deadline) {
					t.Fatalf("the guest's workload did not start within 90s (%s):\n%s", f, b)
				}
				time.Sleep(100 * time.Millisecond)
			}
			g.inArgs = []string{"--delta-cache", "64M"}
			g.gwQMP = true
			inAddr := g.gateways(t, gc, g.serverTLS(), g.clientTLS(), func(a string) string { return a })
			g.srcQMP.do(t, "migrate-set-parameters", map[string]any{"max-bandwidth": 64 << 20, "downtime-limit": 300})
			g.srcQMP.do(t, "migrate", map[string]any{"uri": inAddr})
			if st, desc := waitMigration(t, g.srcQMP, 120*time.Second); st != "completed" {
				t.Fatalf("source: %s: %s\ngateway-in: %s\ngateway-out: %s", st, desc, g.in.stderr, g.out.stderr)
			}
			g.settle(t, size)
			var in struct {
				Method      string       `json:"method"`
				NormalPages uint64       `json:"normal_pages"`
				DeltaPages  uint64       `json:"delta_pages"`
				WireBytes   uint64       `json:"wire_bytes"`
				Auto        *auto.Report `json:"auto"`
			}
			if err := json.Unmarshal(g.in.stdout.Bytes(), &in); err != nil {
				t.Fatalf("gateway-in's summary: %v: %s", err, g.in.stdout.String())
			}
			if in.DeltaPages == 0 {
				t.Errorf("no page crossed the link as a delta: %s", g.in.stdout.String())
			}
			var out struct {
				E2E *int64 `json:"e2e_downtime_ms"`
			}
			if err := json.Unmarshal(g.out.stdout.Bytes(), &out); err != nil || out.E2E == nil {
				t.Fatalf("gateway-out's summary has no end-to-end downtime (%v): %s\n%s", err, g.out.stdout.String(), g.out.stderr)
			}
			stop, ok1 := g.srcQMP.event(true, func(e iqmp.Event) bool { return e.Name == "STOP" })
			done, ok2 := g.dstQMP.event(false, iqmp.MigrationStatus("completed"))
			if !ok1 || !ok2 {
				t.Fatalf("the test saw no STOP on the source (%v) or no MIGRATION completed on the destination (%v)", ok1, ok2)
			}
			want := done.Time().Sub(stop.Time())
			if d := time.Duration(*out.E2E)*time.Millisecond - want; d < -20*time.Millisecond || d > 20*time.Millisecond {
				t.Errorf("gateway-out's end-to-end downtime %d ms, the QMP events say %v", *out.E2E, want)
			}
			t.Logf("end-to-end downtime: gateway-out %d ms, QMP events %v", *out.E2E, want)
			if in.Method != "auto" || in.Auto == nil {
				t.Fatalf("the link's method is %q, with no report of auto's choices: %s", in.Method, g.in.stdout.String())
			}
			var whole uint64
			for _, c := range in.Auto.Candidates {
				whole += c.InBytes / 4096
			}
			if whole != in.NormalPages-in.DeltaPages {
				t.Errorf("auto reports %d pages, the link sent %d whole", whole, in.NormalPages-in.DeltaPages)
			}
			t.Logf("link: %d normal pages, %d of them deltas, %d wire bytes; %s", in.NormalPages, in.DeltaPages, in.WireBytes, in.Auto)
		})
	}
}
