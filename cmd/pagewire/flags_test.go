package main_test

import (
	"encoding/json"
	"os"
	"path/filepath"
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
	// recv --method insists on a method without --channels.
	img := filepath.Join(t.TempDir(), "guest.img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	r, addr := startRecv(t, "recv", "--listen", "tcp:127.0.0.1:0", "--out", t.TempDir()+"/x.img", "--method", "zstd")
	s := start(t, "send", "--to", addr, "--method", "lz4", img)
	s.wait(t)
	if code := r.wait(t); code != 1 || !strings.Contains(r.stderr.String(), "receiver expects zstd") {
		t.Errorf("recv --method zstd against lz4: exited %d: %s", code, r.stderr)
	}
}

// TestJSONError: a command run with --json that fails prints an error
// object on stdout.
func TestJSONError(t *testing.T) {
	p := start(t, "send", "--to", "tcp:127.0.0.1:1", "--json", filepath.Join(t.TempDir(), "missing.img"))
	code := p.wait(t)
	var got struct {
		Error    string `json:"error"`
		ExitCode int    `json:"exit_code"`
	}
	if err := json.Unmarshal(p.stdout.Bytes(), &got); err != nil || got.Error == "" || got.ExitCode != code || code == 0 {
		t.Errorf("exit %d, stdout %q (%v)", code, p.stdout.String(), err)
	}
}
