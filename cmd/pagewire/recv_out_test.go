package main_test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestRecvOutChecked: an --out that names a directory, or a file in a
// missing directory, is refused at once (exit 2), before any sender
// arrives, and not after the sender was told every page landed.
func TestRecvOutChecked(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ out, want string }{
		{dir, "is a directory"},
		{filepath.Join(dir, "missing", "guest.img"), "cannot write in"},
	} {
		p := start(t, "recv", "--listen", "tcp:127.0.0.1:0", "--out", c.out)
		if code := p.wait(t); code != 2 || !strings.Contains(p.stderr.String(), c.want) {
			t.Errorf("--out %s: exited %d: %s; want 2 and %q", c.out, code, p.stderr, c.want)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".pagewire-check-*")); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
	if _, err := os.Stat(filepath.Join(dir, "missing")); err == nil {
		t.Error("created the missing directory")
	}
}

// TestRecvSignalLeavesNoPartial: recv ended by SIGTERM in the middle of
// a transfer exits at once and leaves neither IMAGE nor IMAGE.partial.
func TestRecvSignalLeavesNoPartial(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "guest.img")
	data := make([]byte, 64<<20)
	for i := range data {
		data[i] = byte(i>>12) | 1
	}
	if err := os.WriteFile(img, data, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out.img")
	r, addr := startRecv(t, "recv", "--listen", "tcp:127.0.0.1:0", "--out", out)
	s := start(t, "send", "--to", addr, "--max-bandwidth", "8M", img) // about 8 s
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(out + ".partial"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no .partial within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	start := time.Now()
	r.cmd.Process.Signal(syscall.SIGTERM)
	code := r.wait(t)
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("recv took %v to end after SIGTERM", el)
	}
	if code == 0 {
		t.Errorf("recv exited 0 after SIGTERM: %s", r.stderr)
	}
	for _, f := range []string{out, out + ".partial"} {
		if _, err := os.Stat(f); err == nil {
			t.Errorf("%s left behind", f)
		}
	}
	s.wait(t)
}
