package main_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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
