package guest

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

// workload builds the workload binary (cached in build/guest) into a
// temporary directory.
func workload(t *testing.T) string {
	t.Helper()
	root, err := Root()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := BuildWorkload(root, t.TempDir())
	if err != nil {
		t.Fatalf("%v\n(the guest workload needs gcc and static glibc; 'make setup' and scripts/guest.sh fetch the guest kernel and busybox)", err)
	}
	return bin
}

// start runs the workload on the host with args, returning its stdout
// lines as they come; it is killed (by PID) when the test ends.
func start(t *testing.T, bin string, args ...string) (<-chan string, *exec.Cmd) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 100)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		cmd.Wait()
		if stderr.Len() > 0 {
			t.Logf("workload stderr: %s", stderr.Bytes())
		}
	})
	return lines, cmd
}

// TestWorkloadHost runs each workload on the host, with 16 MiB: it gets
// ready, then prints a progress line every second at its rate (within
// 10%).
func TestWorkloadHost(t *testing.T) {
	bin := workload(t)
	for _, w := range Workloads() {
		t.Run(w.Kind, func(t *testing.T) {
			t.Parallel()
			w.MemMiB = 16
			args := w.Args()
			cache := t.TempDir()
			if w.Kind == "idle" {
				args = append(args, "--cache-dir", cache, "--cache", "8")
			}
			lines, cmd := start(t, bin, args...)
			var console bytes.Buffer
			deadline := time.After(20 * time.Second)
			for len(ParseProgress(console.Bytes())) < 2 {
				select {
				case l, ok := <-lines:
					if !ok {
						t.Fatalf("the workload exited:\n%s", console.Bytes())
					}
					console.WriteString(l + "\n")
				case <-deadline:
					t.Fatalf("no 2 progress lines within 20s:\n%s", console.Bytes())
				}
			}
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			if !Ready(console.Bytes()) || strings.Index(console.String(), "PAGEWIRE-READY") > strings.Index(console.String(), "PW-PROGRESS") {
				t.Fatalf("no PAGEWIRE-READY before the progress lines:\n%s", console.Bytes())
			}
			want := int64(w.Rate)
			if w.Kind == "idle" {
				want = 0
			}
			for i, p := range ParseProgress(console.Bytes()) {
				if d := p.Rate - want; d*10 > want || -d*10 > want {
					t.Errorf("line %d: rate %d, want %d ±10%%:\n%s", i, p.Rate, want, console.Bytes())
				}
				if p.T < time.Duration(i+1)*time.Second || p.T > time.Duration(i+1)*time.Second+500*time.Millisecond {
					t.Errorf("line %d: t=%v, want %ds:\n%s", i, p.T, i+1, console.Bytes())
				}
			}
			if w.Kind == "idle" {
				var size int64
				files, _ := os.ReadDir(cache)
				for _, f := range files {
					fi, _ := f.Info()
					size += fi.Size()
				}
				if size != 8<<20 {
					t.Errorf("idle wrote %d bytes of cache files, want 8 MiB", size)
				}
			}
			t.Logf("%s", console.Bytes())
		})
	}
}

// TestFillCompressibility dumps each workload's filled memory: records'
// table rows compress at least 2.5x with zstd (not all zero: less than
// 10x), the random fills do not compress.
func TestFillCompressibility(t *testing.T) {
	bin := workload(t)
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	for _, w := range Workloads() {
		dump := filepath.Join(t.TempDir(), "mem")
		args := append(Workload{Kind: w.Kind, MemMiB: 16}.Args(), "--seed", "1", "--dump", dump)
		if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("workload %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		mem, err := os.ReadFile(dump)
		if err != nil {
			t.Fatal(err)
		}
		if len(mem) != 16<<20 {
			t.Fatalf("%s: dumped %d bytes, want 16 MiB", w.Kind, len(mem))
		}
		whole := float64(len(mem)) / float64(len(enc.EncodeAll(mem, nil)))
		var pages int
		for i := 0; i < len(mem); i += 4096 {
			pages += len(enc.EncodeAll(mem[i:i+4096], nil))
		}
		perPage := float64(len(mem)) / float64(pages)
		t.Logf("%s: zstd ratio %.2f whole, %.2f page by page", w.Kind, whole, perPage)
		switch w.Kind {
		case "idle", "records":
			if whole < 2.5 || perPage < 2.5 || whole > 10 {
				t.Errorf("%s: zstd ratio %.2f (%.2f page by page), want 2.5-10", w.Kind, whole, perPage)
			}
		default:
			if whole >= 1.05 || perPage >= 1.05 {
				t.Errorf("%s: zstd ratio %.2f (%.2f page by page), want < 1.05", w.Kind, whole, perPage)
			}
		}
	}
}

// TestGuestBoot boots the lab guest (TCG) with the records workload on
// 64 MiB, in 256 MiB + 64 KiB of RAM: within 120s the console shows
// PAGEWIRE-READY and a progress line with updates.
func TestGuestBoot(t *testing.T) {
	root, err := Root()
	if err != nil {
		t.Fatal(err)
	}
	kernel, err := Kernel(root)
	if err != nil {
		t.Fatal(err)
	}
	busybox, err := Busybox(root)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	initrd := filepath.Join(dir, "initramfs.cpio")
	if err := Initramfs(initrd, busybox, workload(t)); err != nil {
		t.Fatal(err)
	}
	w := Records
	w.MemMiB = 64
	console := filepath.Join(dir, "console.log")
	args := append(QEMUArgs(kernel, initrd, Append(w), 262208), "-serial", "file:"+console)
	qemu := exec.Command("qemu-system-x86_64", args...)
	var stderr bytes.Buffer
	qemu.Stderr = &stderr
	if err := qemu.Start(); err != nil {
		t.Fatalf("%v: run 'make setup' (it installs qemu-system-x86)", err)
	}
	exited := make(chan struct{})
	go func() {
		qemu.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		qemu.Process.Kill()
		<-exited
	})
	begin := time.Now()
	deadline := time.After(120 * time.Second)
	var ready time.Duration
	for {
		b, _ := os.ReadFile(console)
		if ready == 0 && Ready(b) {
			ready = time.Since(begin)
		}
		if msg := Failed(b); msg != "" {
			t.Fatalf("%s\n%s", msg, b)
		}
		if ps := ParseProgress(b); ready != 0 && len(ps) > 0 && ps[len(ps)-1].Rate > 0 {
			t.Logf("PAGEWIRE-READY after %v, first progress with updates after %v:\n%s",
				ready.Round(time.Millisecond), time.Since(begin).Round(time.Millisecond), b)
			return
		}
		select {
		case <-exited:
			t.Fatalf("QEMU exited: %v\n%s\nconsole:\n%s", qemu.ProcessState, stderr.Bytes(), b)
		case <-deadline:
			t.Fatalf("no PAGEWIRE-READY and progress within 120s (ready: %v):\n%s", ready != 0, b)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func TestAppendAndParse(t *testing.T) {
	got := Append(Records)
	want := "console=ttyS0 quiet nokaslr init_on_free=1 pw_work=records pw_mem=512 pw_rate=20000 pw_record=64 pw_update=8"
	if got != want {
		t.Errorf("Append(Records) = %q, want %q", got, want)
	}
	if got, want := Append(Idle), "console=ttyS0 quiet nokaslr init_on_free=1 pw_work=idle pw_mem=512"; got != want {
		t.Errorf("Append(Idle) = %q, want %q", got, want)
	}
	console := []byte("boot\r\nPAGEWIRE-READY\r\nPW-PROGRESS t=1.000 updates=20001 rate=19999\r\n" +
		"[ 1.2] x PW-PROGRESS t=4.002 updates=40001 rate=6666\r\nPW-PROGRESS t=5.000 upd")
	if !Ready(console) || Ready([]byte("PAGEWIRE-REA")) {
		t.Error("Ready")
	}
	ps := ParseProgress(console)
	wantPs := []Progress{{time.Second, 20001, 19999}, {4002 * time.Millisecond, 40001, 6666}}
	if fmt.Sprint(ps) != fmt.Sprint(wantPs) {
		t.Errorf("ParseProgress = %v, want %v", ps, wantPs)
	}
}
