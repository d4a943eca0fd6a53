package main_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pagewire/pagewire/internal/pagegen"
)

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
	q := qemuOf(b, "7.2")
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
				tq += qemuMigrate(b, q, dir, img, size, 4, m.qemu).wall
				tp += pagewireTransfer(b, dir, img, 4, m.pw)
			}
			gb := float64(size) * float64(b.N) / 1e9
			b.ReportMetric(gb/tq.Seconds(), "qemu-GB/s")
			b.ReportMetric(gb/tp.Seconds(), "pagewire-GB/s")
			b.ReportMetric(tq.Seconds()/tp.Seconds(), "pagewire/qemu")
		})
	}
}
