package main_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestGoPluginCLI: plugin inspect and plugin test work on a go-plugin
// binary, and demo runs its method, with and without a pinned sha256.
func TestGoPluginCLI(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "zstd-plugin")
	if b, err := exec.Command("go", "build", "-o", bin, "../../plugins/zstd/plugin").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, b)
	}
	p := start(t, "plugin", "inspect", "--json", bin)
	if code := p.wait(t); code != 0 {
		t.Fatalf("inspect exited %d: %s", code, p.stderr)
	}
	var in struct {
		Kind     string `json:"kind"`
		Protocol int    `json:"protocol"`
		Method   string `json:"method"`
		Flag     uint32 `json:"flag"`
		SHA256   string `json:"sha256"`
	}
	if err := json.Unmarshal(p.stdout.Bytes(), &in); err != nil || in.Kind != "go-plugin" || in.Protocol != 1 || in.Method != "zstd" || in.Flag != 4 || len(in.SHA256) != 64 {
		t.Fatalf("inspect: %+v (%v): %s", in, err, p.stdout.String())
	}
	p = start(t, "plugin", "test", bin)
	if code := p.wait(t); code != 0 {
		t.Fatalf("plugin test exited %d: %s%s", code, p.stdout.String(), p.stderr)
	}
	if out := p.stdout.String(); strings.Count(out, "PASS ") != 10 || !strings.Contains(out, "every conformance check passed") {
		t.Errorf("plugin test: %s", out)
	}
	b, _ := os.ReadFile(bin)
	sum := sha256.Sum256(b)
	p = start(t, "demo", "--plugin", bin, "--plugin-sha256", hex.EncodeToString(sum[:]), "--size", "8M", "--rounds", "2", "--channels", "2")
	if code := p.wait(t); code != 0 || !strings.Contains(p.stderr.String(), "verified") {
		t.Fatalf("demo exited %d: %s", code, p.stderr)
	}
	sum[0] ^= 1
	p = start(t, "demo", "--plugin", bin, "--plugin-sha256", hex.EncodeToString(sum[:]), "--size", "8M")
	if code := p.wait(t); code != 1 || !strings.Contains(p.stderr.String(), "checksum mismatch") {
		t.Fatalf("demo with a wrong pin exited %d: %s", code, p.stderr)
	}
}
