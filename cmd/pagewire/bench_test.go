package main_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/pagewire/pagewire/internal/pagegen"
)

// qemuMigrate starts a destination and a source QEMU 7.2 (TCG, paused,
// RAM from files) and migrates src.img with multifd over loopback TCP;
// it returns QEMU's own total-time of the migration.
func qemuMigrate(b *testing.B, qemu, dir, srcImg string, size, channels int, method string) time.Duration {
	b.Helper()
	mem := fmt.Sprintf("%dM", size>>20)
	machine := func(img, sock string, extra ...string) []string {
		args := []string{"--qemu--", qemu, "-machine", "pc-i440fx-7.2,memory-backend=pc.ram", "-accel", "tcg", "-m", mem,
			"-object", "memory-backend-file,id=pc.ram,size=" + mem + ",mem-path=" + img + ",share=on",
			"-nodefaults", "-vga", "none", "-display", "none", "-S", "-qmp", "unix:" + sock + ",server=on,wait=off"}
		return append(args, extra...)
	}
	dstSock, srcSock := filepath.Join(dir, "dst.sock"), filepath.Join(dir, "src.sock")
	dst := start(b, machine(filepath.Join(dir, "dst.img"), dstSock, "-incoming", "defer")...)
	src := start(b, machine(srcImg, srcSock)...)
	caps := map[string]any{"capabilities": []any{map[string]any{"capability": "multifd", "state": true}}}
	params := map[string]any{"multifd-channels": channels, "multifd-compression": method}
	dq := dialQMP(b, dstSock)
	defer dq.c.Close()
	dq.do(b, "migrate-set-capabilities", caps)
	dq.do(b, "migrate-set-parameters", params)
	dq.do(b, "migrate-incoming", map[string]any{"uri": "tcp:127.0.0.1:0"})
	var info struct {
		SocketAddress []struct {
			Port string `json:"port"`
		} `json:"socket-address"`
	}
	json.Unmarshal(dq.do(b, "query-migrate", nil), &info)
	if len(info.SocketAddress) == 0 {
		b.Fatal("destination QEMU reports no listening address")
	}
	sq := dialQMP(b, srcSock)
	defer sq.c.Close()
	sq.do(b, "migrate-set-capabilities", caps)
	params["max-bandwidth"] = int64(1) << 40 // 7.2 defaults to 128 MiB/s
	sq.do(b, "migrate-set-parameters", params)
	sq.do(b, "migrate", map[string]any{"uri": "tcp:127.0.0.1:" + info.SocketAddress[0].Port})
	deadline := time.Now().Add(5 * time.Minute)
	for {
		var st struct {
			Status    string `json:"status"`
			TotalTime int64  `json:"total-time"`
			Error     string `json:"error-desc"`
		}
		json.Unmarshal(sq.do(b, "query-migrate", nil), &st)
		if st.Status == "completed" {
			sq.do(b, "quit", nil)
			dq.do(b, "quit", nil)
			src.wait(b)
			dst.wait(b)
			return time.Duration(st.TotalTime) * time.Millisecond
		}
		if st.Status == "failed" || time.Now().After(deadline) {
			b.Fatalf("QEMU migration %s: %s", st.Status, st.Error)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pagewireTransfer sends img with 'pagewire send' to 'pagewire recv' over
// loopback TCP and returns the wall-clock time from starting the sender
// to both processes having exited.
func pagewireTransfer(b *testing.B, dir, img string, channels int, method string) time.Duration {
	b.Helper()
	r, addr := startRecv(b, "recv", "--listen", "tcp:127.0.0.1:0", "--out", filepath.Join(dir, "out.img"))
	begin := time.Now() // wall clock, like QEMU's total-time: sizing and mapping the images count
	s := start(b, "send", "--to", addr, "--channels", fmt.Sprint(channels), "--method", method, "--json", img)
	if code := s.wait(b); code != 0 {
		b.Fatalf("send exited %d: %s", code, s.stderr)
	}
	if code := r.wait(b); code != 0 {
		b.Fatalf("recv exited %d: %s", code, r.stderr)
	}
	return time.Since(begin)
}

// BenchmarkVsQEMU migrates the same 1 GiB guest image (the demo's page
// mix) with QEMU 7.2's own multifd, QEMU to QEMU, and with pagewire send
// to pagewire recv, over 4 loopback channels, side by side in every
// iteration: pagewire/qemu is how many times faster pagewire is (the
// project aims at 3x). Both destinations write into a file's page cache.
func BenchmarkVsQEMU(b *testing.B) {
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		b.Fatal("qemu-system-x86_64 not found (make bench installs it)")
	}
	const size = 1 << 30
	dir := b.TempDir()
	img := filepath.Join(dir, "src.img")
	if err := os.WriteFile(img, pagegen.Image(size, 4096, 1), 0o644); err != nil {
		b.Fatal(err)
	}
	for _, m := range []struct{ qemu, pw string }{{"none", "nocomp"}, {"zstd", "zstd"}} {
		b.Run(m.pw, func(b *testing.B) {
			b.SetBytes(size)
			var tq, tp time.Duration
			for b.Loop() {
				tq += qemuMigrate(b, qemu, dir, img, size, 4, m.qemu)
				tp += pagewireTransfer(b, dir, img, 4, m.pw)
			}
			gb := float64(size) * float64(b.N) / 1e9
			b.ReportMetric(gb/tq.Seconds(), "qemu-GB/s")
			b.ReportMetric(gb/tp.Seconds(), "pagewire-GB/s")
			b.ReportMetric(tq.Seconds()/tp.Seconds(), "pagewire/qemu")
		})
	}
}
