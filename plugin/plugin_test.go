package plugin_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/pagewire/pagewire/plugin"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// build builds the nocomp plugin as a Wasm module and as a go-plugin
// executable.
func build(t *testing.T) (wasmPath, exePath string) {
	t.Helper()
	dir := t.TempDir()
	wasmPath, exePath = filepath.Join(dir, "nocomp.wasm"), filepath.Join(dir, "nocomp")
	for _, c := range []struct {
		out string
		env []string
		arg []string
	}{
		{wasmPath, []string{"GOOS=wasip1", "GOARCH=wasm"}, []string{"-buildmode=c-shared"}},
		{exePath, nil, nil},
	} {
		args := append([]string{"build", "-o", c.out}, c.arg...)
		cmd := exec.Command("go", append(args, "github.com/pagewire/pagewire/plugins/nocomp/plugin")...)
		cmd.Env = append(os.Environ(), c.env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", c.out, err, out)
		}
	}
	return wasmPath, exePath
}

func sum(t *testing.T, path string) []byte {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return s[:]
}

func TestOpen(t *testing.T) {
	if testing.Short() {
		t.Skip("builds plugins")
	}
	wasmPath, exePath := build(t)
	// A module named otherwise is still told by its magic.
	magicOnly := filepath.Join(t.TempDir(), "nocomp.mod")
	b, _ := os.ReadFile(wasmPath)
	os.WriteFile(magicOnly, b, 0o644)

	// Loading is bounded by the hosts' own start deadlines.
	ctx := context.Background()
	for _, c := range []struct {
		path string
		kind plugin.Kind
	}{{wasmPath, plugin.Wasm}, {magicOnly, plugin.Wasm}, {exePath, plugin.GoPlugin}} {
		if k, err := plugin.Detect(c.path); k != c.kind || err != nil {
			t.Errorf("Detect(%s) = %q, %v; want %q", filepath.Base(c.path), k, err, c.kind)
		}
		// Pinned to its own sum: opens, and is the method it says.
		p, err := plugin.Open(ctx, c.path, plugin.Config{SHA256: sum(t, c.path)})
		if err != nil {
			t.Errorf("Open(%s): %v", filepath.Base(c.path), err)
			continue
		}
		if info := p.Method.Info(); info.Name != "nocomp" || p.Kind != c.kind {
			t.Errorf("Open(%s): %+v, kind %q", filepath.Base(c.path), info, p.Kind)
		}
		if err := p.Close(); err != nil {
			t.Errorf("Close(%s): %v", filepath.Base(c.path), err)
		}
		if err := p.Close(); err != nil {
			t.Errorf("second Close(%s): %v", filepath.Base(c.path), err)
		}
		// Pinned to another sum: refused before it runs, Wasm modules too.
		wrong := make([]byte, sha256.Size)
		if _, err := plugin.Open(ctx, c.path, plugin.Config{SHA256: wrong}); !errors.Is(err, plugin.ErrChecksum) {
			t.Errorf("Open(%s) with a wrong pin: %v, want ErrChecksum", filepath.Base(c.path), err)
		}
	}
}

func TestDetectErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := plugin.Detect(dir); err == nil || !strings.Contains(err.Error(), "is a directory") {
		t.Errorf("Detect(dir): %v", err)
	}
	if _, err := plugin.Detect(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Detect(missing): %v", err)
	}
	text := filepath.Join(dir, "notes.txt")
	os.WriteFile(text, []byte("not a plugin"), 0o644)
	if _, err := plugin.Detect(text); err == nil || !strings.Contains(err.Error(), "neither a Wasm module") {
		t.Errorf("Detect(text file): %v", err)
	}
	if _, err := plugin.ParseSHA256("abc"); err == nil {
		t.Error("ParseSHA256(abc) succeeded")
	}
}
