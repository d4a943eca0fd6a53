package main_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/pagewire/pagewire/internal/pagegen"
)

// TestGoPluginCLI: plugin inspect and plugin test work on a go-plugin
// binary, and demo runs its method, with and without a pinned sha256.
func TestGoPluginCLI(t *testing.T) {
	bin := buildGoPlugin(t, t.TempDir(), "zstd")
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

// TestGoPluginSend: 'pagewire send --plugin' with a go-plugin to a
// built-in receiver, from a raw image file (its pages copied to the
// plugin: the file is not sealed) and from a .zst image (in a sealed
// memfd the plugin maps), and with --plugin-no-share: the image arrives
// intact every time.
func TestGoPluginSend(t *testing.T) {
	dir := t.TempDir()
	bin := buildGoPlugin(t, dir, "zstd")
	img := pagegen.Image(16<<20, 4096, 5)
	raw := filepath.Join(dir, "in.img")
	if err := os.WriteFile(raw, img, 0o644); err != nil {
		t.Fatal(err)
	}
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	zst := filepath.Join(dir, "in.img.zst")
	if err := os.WriteFile(zst, enc.EncodeAll(img, nil), 0o644); err != nil {
		t.Fatal(err)
	}
	enc.Close()
	want := sha256.Sum256(img)
	for _, tc := range []struct {
		name   string
		args   []string
		image  string
		shared bool
	}{
		{"raw", nil, raw, false},
		{"zst", nil, zst, true},
		{"zst, no share", []string{"--plugin-no-share"}, zst, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out.img")
			r, addr := startRecv(t, "recv", "--listen", "tcp:127.0.0.1:0", "--out", out, "--method", "zstd", "--channels", "2")
			args := append([]string{"send", "--to", addr, "--channels", "2", "--json", "--plugin", bin}, tc.args...)
			s := start(t, append(args, tc.image)...)
			if code := s.wait(t); code != 0 {
				t.Fatalf("send exited %d: %s", code, s.stderr)
			}
			if code := r.wait(t); code != 0 {
				t.Fatalf("recv exited %d: %s", code, r.stderr)
			}
			if got := fileSHA(t, out); got != hex.EncodeToString(want[:]) {
				t.Fatal("the received image differs")
			}
			var sum struct {
				Shared *uint64 `json:"plugin_shared_packets"`
				Copied *uint64 `json:"plugin_copied_packets"`
			}
			if err := json.Unmarshal(s.stdout.Bytes(), &sum); err != nil || sum.Shared == nil || sum.Copied == nil {
				t.Fatalf("send summary: %v: %s", err, s.stdout.String())
			}
			if (*sum.Shared > 0) != tc.shared || (*sum.Copied > 0) == tc.shared {
				t.Errorf("%d packets by offset, %d copied; shared memory expected: %v", *sum.Shared, *sum.Copied, tc.shared)
			}
		})
	}
}
