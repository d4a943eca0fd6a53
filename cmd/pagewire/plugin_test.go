package main_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// buildWasm builds the zstd method as a Wasm plugin for the CLI tests.
func buildWasm(t testing.TB) string { return buildGoWasm(t, t.TempDir(), "zstd") }

// buildGoWasm builds plugins/CODEC as a Go-built Wasm module, dir/CODEC.wasm.
func buildGoWasm(t testing.TB, dir, codec string) string {
	t.Helper()
	out := filepath.Join(dir, codec+".wasm")
	cmd := exec.Command("go", "build", "-buildmode=c-shared", "-o", out, "../../plugins/"+codec+"/plugin")
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s for wasip1: %v\n%s", codec, err, b)
	}
	return out
}

// buildGoPlugin builds plugins/CODEC as a go-plugin executable, dir/CODEC,
// with this test binary's build tags (as make build does: zstd on
// libzstd).
func buildGoPlugin(t testing.TB, dir, codec string) string {
	t.Helper()
	out := filepath.Join(dir, codec)
	if b, err := exec.Command("go", "build", "-tags", buildTags(), "-o", out, "../../plugins/"+codec+"/plugin").CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", codec, err, b)
	}
	return out
}

// buildCPlugins builds the C-built modules, dir/zstd-c.wasm and
// dir/lz4-c.wasm.
func buildCPlugins(t testing.TB, dir string) {
	t.Helper()
	if b, err := exec.Command("../../scripts/build-c-plugins.sh", dir).CombinedOutput(); err != nil {
		t.Fatalf("scripts/build-c-plugins.sh: %v\n%s", err, b)
	}
}

// TestPluginCLI: plugin inspect describes a module, and demo, send and
// recv run their method from it.
func TestPluginCLI(t *testing.T) {
	mod := buildWasm(t)
	p := start(t, "plugin", "inspect", "--json", mod)
	if code := p.wait(t); code != 0 {
		t.Fatalf("inspect exited %d: %s", code, p.stderr)
	}
	var in struct {
		ABI     int      `json:"abi"`
		Method  string   `json:"method"`
		Flag    uint32   `json:"flag"`
		SHA256  string   `json:"sha256"`
		Tier    string   `json:"tier"`
		Exports []string `json:"exports"`
	}
	if err := json.Unmarshal(p.stdout.Bytes(), &in); err != nil || in.ABI != 1 || in.Method != "zstd" || in.Flag != 4 || len(in.SHA256) != 64 || in.Tier != "checked" {
		t.Fatalf("inspect: %+v (%v): %s", in, err, p.stdout.String())
	}

	p = start(t, "demo", "--plugin", mod, "--size", "8M", "--rounds", "2", "--channels", "2")
	if code := p.wait(t); code != 0 {
		t.Fatalf("demo exited %d: %s", code, p.stderr)
	}
	if s := p.stderr.String(); !strings.Contains(s, "2 channels, zstd") || !strings.Contains(s, "verified") {
		t.Errorf("demo: %s", s)
	}

	p = start(t, "plugin", "test", mod)
	if code := p.wait(t); code != 0 {
		t.Fatalf("plugin test exited %d: %s%s", code, p.stdout.String(), p.stderr)
	}
	if out := p.stdout.String(); strings.Count(out, "PASS ") != 10 || !strings.Contains(out, "every conformance check passed") {
		t.Errorf("plugin test: %s", out)
	}

	bad := filepath.Join(t.TempDir(), "bad.wasm")
	os.WriteFile(bad, []byte("not wasm"), 0o644)
	p = start(t, "demo", "--plugin", bad)
	if code := p.wait(t); code != 1 || !strings.Contains(p.stderr.String(), "pagewire: wasm plugin failed: bad.wasm") {
		t.Errorf("bad plugin: exit %d: %s", code, p.stderr)
	}
}

// TestPluginCLIFast: plugin inspect shows that the C-built zstd runs in
// the fast tier, and plugin test passes it.
func TestPluginCLIFast(t *testing.T) {
	dir := t.TempDir()
	buildCPlugins(t, dir)
	mod := filepath.Join(dir, "zstd-c.wasm")
	p := start(t, "plugin", "inspect", mod)
	if code := p.wait(t); code != 0 {
		t.Fatalf("inspect exited %d: %s", code, p.stderr)
	}
	if out := p.stdout.String(); !strings.Contains(out, "tier     fast (imports pagewire.check and nothing from WASI") || !strings.Contains(out, "  pagewire.check\n") {
		t.Errorf("inspect: %s", out)
	}
	for _, args := range [][]string{{"plugin", "test", mod}, {"plugin", "test", "--strict", mod}} {
		p = start(t, args...)
		if code := p.wait(t); code != 0 {
			t.Fatalf("%v exited %d: %s%s", args, code, p.stdout.String(), p.stderr)
		}
		if out := p.stdout.String(); !strings.Contains(out, "every conformance check passed") {
			t.Errorf("%v: %s", args, out)
		}
	}
}
