package main_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pagewire/pagewire/internal/lab/guest"
)

// guestInit is the running guest's /init: it announces itself, rewrites
// 2 MiB of memory for pw_secs seconds (so pre-copy needs several rounds),
// then idles.
const guestInit = `#!/bin/busybox sh
/bin/busybox mkdir -p /proc /tmp
/bin/busybox --install -s /bin
mount -t proc proc /proc
secs=$(sed -n 's/.*pw_secs=\([0-9]*\).*/\1/p' /proc/cmdline)
echo PAGEWIRE-READY
end=$(( $(date +%s) + secs ))
while [ $(date +%s) -lt $end ]; do
	dd if=/dev/urandom of=/tmp/dirty bs=64k count=32 2>/dev/null
done
echo PAGEWIRE-IDLE
while true; do sleep 1000; done
`

// guestFiles returns the kernel and an initramfs for the running guest,
// from build/guest (scripts/guest.sh, run by 'make setup').
func guestFiles(t *testing.T) (kernel, initrd string) {
	t.Helper()
	dir := filepath.Join("..", "..", "build", "guest")
	kernel = filepath.Join(dir, "vmlinuz")
	bb, err := os.ReadFile(filepath.Join(dir, "busybox"))
	if err != nil {
		t.Fatalf("%v: run 'make setup' (scripts/guest.sh fetches Debian's kernel and busybox-static)", err)
	}
	if _, err := os.Stat(kernel); err != nil {
		t.Fatalf("%v: run 'make setup'", err)
	}
	initrd = filepath.Join(t.TempDir(), "initramfs.cpio")
	arc := guest.CPIO([]guest.File{
		{Name: "bin", Mode: 0o040755},
		{Name: "dev", Mode: 0o040755},
		{Name: "bin/busybox", Mode: 0o100755, Data: bb},
		{Name: "init", Mode: 0o100755, Data: []byte(guestInit)},
	})
	if err := os.WriteFile(initrd, arc, 0o644); err != nil {
		t.Fatal(err)
	}
	return kernel, initrd
}

// TestGatewayRunningGuest migrates a running Debian guest (TCG) that
// keeps rewriting memory through the gateways: several pre-copy rounds,
// and at completion the destination's RAM is the source's. The RAM is
// 131136K, not a multiple of 64 pages, because of QEMU 7.2's TCG
// dirty-bitmap bug (../shared/vectors/qemu-7.2/README.md).
func TestGatewayRunningGuest(t *testing.T) {
	kernel, initrd := guestFiles(t)
	c := gwCase{qemuChannels: 2, srcMethod: "none", dstMethod: "none", linkChannels: 3, linkArgs: []string{"--method", "zstd"}}
	const size = 131136 << 10
	guest := []string{"-cpu", "max", "-kernel", kernel, "-initrd", initrd,
		"-append", "console=ttyS0 pw_secs=8 nokaslr init_on_free=1"}
	dir := t.TempDir()
	console := filepath.Join(dir, "console.log")
	g := newRigWith(t, c, make([]byte, size), append(guest, "-serial", "file:"+console), append(guest, "-serial", "null"))
	deadline := time.Now().Add(90 * time.Second)
	for {
		b, _ := os.ReadFile(console)
		if bytes.Contains(b, []byte("PAGEWIRE-READY")) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the guest did not boot within 90s:\n%s", b)
		}
		time.Sleep(100 * time.Millisecond)
	}
	inAddr := g.gateways(t, c, g.serverTLS(), g.clientTLS(), func(a string) string { return a })
	g.srcQMP.do(t, "migrate-set-parameters", map[string]any{"max-bandwidth": 32 << 20, "downtime-limit": 20})
	g.srcQMP.do(t, "migrate", map[string]any{"uri": inAddr})
	if st, desc := waitMigration(t, g.srcQMP, 120*time.Second); st != "completed" {
		t.Fatalf("source: %s: %s\ngateway-in: %s\ngateway-out: %s", st, desc, g.in.stderr, g.out.stderr)
	}
	var info struct {
		RAM struct {
			DirtySyncCount int `json:"dirty-sync-count"`
		} `json:"ram"`
	}
	json.Unmarshal(g.srcQMP.do(t, "query-migrate", nil), &info)
	g.settle(t, size)
	b, _ := os.ReadFile(console)
	t.Logf("%d pre-copy rounds; guest: %s", info.RAM.DirtySyncCount, strings.TrimSpace(string(b[max(0, len(b)-200):])))
	if info.RAM.DirtySyncCount < 3 {
		t.Errorf("%d dirty syncs: the guest did not keep the migration busy", info.RAM.DirtySyncCount)
	}
}
