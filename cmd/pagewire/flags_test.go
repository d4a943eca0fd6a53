package main_test

import (
	"strings"
	"testing"
)

// TestFlagPapercuts: --plugin and a different --method is refused, not
// silently ignored; recv's help shows no defaults for what it takes from
// the sender, and no flags only a sender uses.
func TestFlagPapercuts(t *testing.T) {
	nocomp := buildGoPlugin(t, t.TempDir(), "nocomp")
	p := start(t, "demo", "--size", "1M", "--plugin", nocomp, "--method", "lz4")
	if code := p.wait(t); code != 2 || !strings.Contains(p.stderr.String(), "runs nocomp, but --method is lz4") {
		t.Errorf("--plugin and another --method: exited %d: %s", code, p.stderr)
	}
	help := start(t, "recv", "--help")
	if code := help.wait(t); code != 0 {
		t.Fatalf("recv --help exited %d", code)
	}
	out := help.stdout.String() + help.stderr.String()
	for _, bad := range []string{"--plugin-no-share", "--level", `(default 4)`, `(default "nocomp")`} {
		if strings.Contains(out, bad) {
			t.Errorf("recv --help shows %s:\n%s", bad, out)
		}
	}
	for _, want := range []string{"default: the sender's"} {
		if !strings.Contains(out, want) {
			t.Errorf("recv --help lacks %q", want)
		}
	}
}
