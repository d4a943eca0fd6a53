package main_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pagewire/pagewire/internal/corpus"
)

// bulkImage writes the bulk benchmark's 1 GiB guest image: six copies of
// the corpus image linux-busy-128M and one of linux-mix-256M, 56% zero
// pages.
func bulkImage(b *testing.B, dir string) (string, int) {
	b.Helper()
	images, err := corpus.List()
	if err != nil {
		b.Fatal(err)
	}
	byName := map[string]corpus.Image{}
	for _, im := range images {
		byName[im.Name] = im
	}
	path := filepath.Join(dir, "bulk.img")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	size := 0
	for _, name := range []string{"linux-busy-128M", "linux-busy-128M", "linux-busy-128M", "linux-mix-256M",
		"linux-busy-128M", "linux-busy-128M", "linux-busy-128M"} {
		im, ok := byName[name]
		if !ok {
			b.Fatalf("corpus image %s missing", name)
		}
		data, err := im.Load()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := f.Write(data); err != nil {
			b.Fatal(err)
		}
		size += len(data)
	}
	return path, size
}

// procCPU is a process's user+system seconds, read from /proc while it
// runs.
func procCPU(pid int) float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	u, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (u + st) / 100
}

// bulkRun is one transfer's figures.
type bulkRun struct {
	wall, cpu time.Duration
	wire      int64
}

// qemuMigrate migrates img (paused, RAM from a file) from a source QEMU
// q to a destination QEMU q whose RAM is a new file, with multifd over
// loopback TCP: QEMU's total-time, both QEMUs' CPU during the migration,
// and the bytes QEMU counted on the wire.
func qemuMigrate(b *testing.B, q qemuSpec, dir, img string, size, channels int, method string) bulkRun {
	b.Helper()
	mem := fmt.Sprintf("%dK", size>>10)
	dstImg := filepath.Join(dir, "qemu-dst.img")
	os.Remove(dstImg)
	machine := func(ram, sock string, extra ...string) []string {
		return append([]string{"--qemu--", q.bin, "-machine", q.machine + ",memory-backend=pc.ram", "-accel", "tcg", "-m", mem,
			"-object", "memory-backend-file,id=pc.ram,size=" + mem + ",mem-path=" + ram + ",share=on",
			"-nodefaults", "-vga", "none", "-display", "none", "-S", "-qmp", "unix:" + sock + ",server=on,wait=off"}, extra...)
	}
	dstSock, srcSock := filepath.Join(dir, "dst.sock"), filepath.Join(dir, "src.sock")
	dst := start(b, machine(dstImg, dstSock, "-incoming", "defer")...)
	src := start(b, machine(img, srcSock)...)
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
	cpu0 := procCPU(src.cmd.Process.Pid) + procCPU(dst.cmd.Process.Pid)
	sq.do(b, "migrate", map[string]any{"uri": "tcp:127.0.0.1:" + info.SocketAddress[0].Port})
	deadline := time.Now().Add(5 * time.Minute)
	for {
		var st struct {
			Status    string `json:"status"`
			TotalTime int64  `json:"total-time"`
			Error     string `json:"error-desc"`
			RAM       struct {
				Transferred int64 `json:"transferred"`
			} `json:"ram"`
		}
		json.Unmarshal(sq.do(b, "query-migrate", nil), &st)
		if st.Status == "completed" {
			// The destination has loaded everything once it says so.
			for {
				var d struct {
					Status string `json:"status"`
				}
				json.Unmarshal(dq.do(b, "query-migrate", nil), &d)
				if d.Status == "completed" || time.Now().After(deadline) {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			cpu := procCPU(src.cmd.Process.Pid) + procCPU(dst.cmd.Process.Pid) - cpu0
			sq.do(b, "quit", nil)
			dq.do(b, "quit", nil)
			src.wait(b)
			dst.wait(b)
			return bulkRun{wall: time.Duration(st.TotalTime) * time.Millisecond, cpu: time.Duration(cpu * float64(time.Second)), wire: st.RAM.Transferred}
		}
		if st.Status == "failed" || time.Now().After(deadline) {
			b.Fatalf("QEMU migration %s: %s", st.Status, st.Error)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// pagewireBulk sends img with 'pagewire send' to 'pagewire recv' into a
// new file in outDir over loopback TCP: the wall clock from starting the
// sender until both have exited, both processes' CPU, and the wire bytes
// the sender counted.
func pagewireBulk(b *testing.B, outDir, img string, channels int, method string) bulkRun {
	b.Helper()
	out := filepath.Join(outDir, "pw-out.img")
	os.Remove(out)
	defer os.Remove(out)
	r, addr := startRecv(b, "recv", "--listen", "tcp:127.0.0.1:0", "--out", out)
	begin := time.Now()
	s := start(b, "send", "--to", addr, "--channels", fmt.Sprint(channels), "--method", method, "--json", img)
	if code := s.wait(b); code != 0 {
		b.Fatalf("send exited %d: %s", code, s.stderr)
	}
	if code := r.wait(b); code != 0 {
		b.Fatalf("recv exited %d: %s", code, r.stderr)
	}
	wall := time.Since(begin)
	var sum struct {
		WireBytes    int64 `json:"wire_bytes"`
		ControlBytes int64 `json:"control_bytes"`
	}
	if err := json.Unmarshal(s.stdout.Bytes(), &sum); err != nil {
		b.Fatalf("send summary: %v: %s", err, s.stdout.String())
	}
	cpu := s.cmd.ProcessState.UserTime() + s.cmd.ProcessState.SystemTime() +
		r.cmd.ProcessState.UserTime() + r.cmd.ProcessState.SystemTime()
	return bulkRun{wall: wall, cpu: cpu, wire: sum.WireBytes + sum.ControlBytes}
}

// BenchmarkBulk is the bulk path against QEMU 10.0 (issue 18's table):
// a paused guest's 1 GiB image made of the corpus images (56% zero
// pages), 4 channels over loopback, both ends on this machine, QEMU 10's
// none and zstd QEMU to QEMU (its destination's RAM a new file) beside
// pagewire's nocomp, zstd and lz4 send to recv into a new file (as
// 'recv --out' writes) and, for nocomp, into a new file in /dev/shm
// (memory, no disk-backed page cache; the CLI has no anonymous-memory
// destination). Every
// iteration runs every row once, in turn. Per row: wall seconds, CPU
// seconds of both ends, wire MB; and each pagewire row's time as a
// fraction of QEMU 10 none's and zstd's (x-faster metrics).
//
// A QEMU row's wall time is QEMU's own total-time (the source's); a
// pagewire row's is from starting the sender to both processes' exit, so
// process start and image mapping count against pagewire.
func BenchmarkBulk(b *testing.B) {
	q := qemuOf(b, "10.0")
	q.machine = "pc-i440fx-10.0"
	dir := b.TempDir()
	img, size := bulkImage(b, dir)
	rows := []struct {
		name, qemu, pw, out string
	}{
		{"qemu10-none", "none", "", dir},
		{"qemu10-zstd", "zstd", "", dir},
		{"pw-nocomp", "", "nocomp", dir},
		{"pw-nocomp-shm", "", "nocomp", "/dev/shm"},
		{"pw-zstd", "", "zstd", dir},
		{"pw-lz4", "", "lz4", dir},
	}
	sum := make([]bulkRun, len(rows))
	for b.Loop() {
		for i, r := range rows {
			var run bulkRun
			if r.qemu != "" {
				run = qemuMigrate(b, q, dir, img, size, 4, r.qemu)
			} else {
				run = pagewireBulk(b, r.out, img, 4, r.pw)
			}
			sum[i].wall += run.wall
			sum[i].cpu += run.cpu
			sum[i].wire += run.wire
		}
	}
	n := float64(b.N)
	for i, r := range rows {
		b.ReportMetric(sum[i].wall.Seconds()/n, r.name+"-s")
		b.ReportMetric(sum[i].cpu.Seconds()/n, r.name+"-cpu-s")
		b.ReportMetric(float64(sum[i].wire)/n/1e6, r.name+"-MB")
	}
	for i := 2; i < len(rows); i++ {
		b.ReportMetric(sum[0].wall.Seconds()/sum[i].wall.Seconds(), rows[i].name+"/qemu10-none-x")
		b.ReportMetric(sum[1].wall.Seconds()/sum[i].wall.Seconds(), rows[i].name+"/qemu10-zstd-x")
	}
}
