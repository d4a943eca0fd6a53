package wasm_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pagewire/pagewire/core"
	"github.com/pagewire/pagewire/examples/wasm-go/rle"
	"github.com/pagewire/pagewire/internal/pagegen"
	"github.com/pagewire/pagewire/plugins/builtin"
	"github.com/pagewire/pagewire/plugins/zstd"
	"github.com/pagewire/pagewire/sdk"
	"github.com/pagewire/pagewire/sdk/plugintest"
	"github.com/pagewire/pagewire/wasm"
)

var modules = map[string]string{} // name -> .wasm path

// TestMain builds the built-in methods, the C-built codecs and the
// misbehaving test plugins as Wasm modules, runs the tests, and checks no
// goroutine is left.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pagewire-wasm")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	builds := map[string]string{
		"nocomp": "../plugins/nocomp/plugin", "zlib": "../plugins/zlib/plugin",
		"zstd": "../plugins/zstd/plugin", "lz4": "../plugins/lz4/plugin",
		"loop": "./testdata/loop", "exit": "./testdata/exit", "v2": "./testdata/v2", "badimport": "./testdata/badimport",
		"badsig": "./testdata/badsig",
	}
	cmd := exec.Command("make", "-s", "-C", "../examples/wasm-c", "OUT="+filepath.Join(dir, "rle-c.wasm"))
	if b, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build examples/wasm-c (make test installs clang and wasi-libc): %v\n%s", err, b)
		os.Exit(1)
	}
	modules["rle-c"] = filepath.Join(dir, "rle-c.wasm")
	// The C-built codecs (fast tier); their library objects are cached
	// across runs, so this is a link after the first time.
	cmd = exec.Command("../scripts/build-c-plugins.sh", dir)
	if b, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "scripts/build-c-plugins.sh: %v\n%s", err, b)
		os.Exit(1)
	}
	modules["zstd-c"] = filepath.Join(dir, "zstd-c.wasm")
	modules["lz4-c"] = filepath.Join(dir, "lz4-c.wasm")
	// Test modules written in C against plugins/csrc/pagewire.h.
	for _, name := range []string{"spin", "startloop", "hog", "deaf"} {
		modules[name] = filepath.Join(dir, name+".wasm")
		cmd := exec.Command("clang", "--target=wasm32-wasi", "-O2", "-mexec-model=reactor", "-Wall", "-Wextra", "-Werror",
			"-I../plugins/csrc", "-Wl,--gc-sections", "-o", modules[name], "testdata/"+name+"/"+name+".c")
		if b, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build testdata/%s: %v\n%s", name, err, b)
			os.Exit(1)
		}
	}
	builds["rle-go"] = "../examples/wasm-go"
	for name, pkg := range builds {
		out := filepath.Join(dir, name+".wasm")
		cmd := exec.Command("go", "build", "-buildmode=c-shared", "-o", out, pkg)
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
		if b, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", name, err, b)
			os.Exit(1)
		}
		modules[name] = out
	}
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

func load(t testing.TB, name string, cfg wasm.Config) *wasm.Module {
	t.Helper()
	if cfg.CacheDir == "" {
		cfg.CacheDir = filepath.Join(os.TempDir(), "pagewire-wasm-test-cache")
	}
	m, err := wasm.Load(context.Background(), modules[name], cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(context.Background()) })
	return m
}

// builtinMethod is the built-in method called name, built from the same
// Go code as the Go-built modules: zstd is the pure-Go one even in a
// libzstd build, so that their bytes can be compared.
func builtinMethod(t testing.TB, name string) sdk.Method {
	if name == "zstd" {
		return zstd.NewGo()
	}
	m, err := builtin.Methods().Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestInspect(t *testing.T) {
	for _, name := range []string{"nocomp", "zlib", "zstd", "lz4"} {
		m := load(t, name, wasm.Config{})
		want := builtinMethod(t, name).Info()
		if got := m.Info(); got != want {
			t.Errorf("%s: info %+v, want %+v", name, got, want)
		}
		in := m.Inspect()
		if in.ABI != 1 || in.Size == 0 || len(in.SHA256) != 64 || !contains(in.Exports, "pagewire_prepare") {
			t.Errorf("%s: %+v", name, in)
		}
		for i, imp := range in.Imports {
			if !strings.HasPrefix(imp, "wasi_snapshot_preview1.") {
				t.Errorf("%s imports %s", name, imp)
			}
			if i > 0 && in.Imports[i-1] == imp {
				t.Errorf("%s: %s listed twice", name, imp)
			}
		}
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// pages returns n packets of 128 synthetic guest pages.
func packets(n int) [][][]byte {
	img := make([]byte, n*128*4096)
	pagegen.Fill(img, 4096, pagegen.Mix{Zero: 5, Text: 45, Binary: 35}, 9)
	out := make([][][]byte, n)
	for i := range out {
		for j := range 128 {
			off := (i*128 + j) * 4096
			out[i] = append(out[i], img[off:off+4096])
		}
	}
	return out
}

// TestInterop: a Wasm sender's payloads decode with the built-in
// receiver and the other way round, packet after packet on one stream.
func TestInterop(t *testing.T) {
	pkts := packets(12)
	o := sdk.Options{PageSize: 4096, PacketPages: 128}
	for _, name := range []string{"nocomp", "zlib", "zstd", "lz4"} {
		w := load(t, name, wasm.Config{})
		b := builtinMethod(t, name)
		for _, dir := range []struct {
			label  string
			s, r   sdk.Method
			sameAs bool
		}{{"wasm->builtin", w, b, true}, {"builtin->wasm", b, w, true}} {
			t.Run(name+"/"+dir.label, func(t *testing.T) {
				snd, err := dir.s.NewSender(0, o)
				if err != nil {
					t.Fatal(err)
				}
				defer snd.Close()
				rcv, err := dir.r.NewReceiver(0, o)
				if err != nil {
					t.Fatal(err)
				}
				defer rcv.Close()
				ref, _ := b.NewSender(0, o) // the built-in's own bytes
				defer ref.Close()
				var payload, want []byte
				for i, p := range pkts {
					if payload, err = snd.Prepare(&sdk.Packet{Pages: p}, payload[:0]); err != nil {
						t.Fatal(err)
					}
					want, _ = ref.Prepare(&sdk.Packet{Pages: p}, want[:0])
					if !bytes.Equal(payload, want) {
						t.Errorf("packet %d: wasm and built-in %s produce different bytes (%d vs %d)", i, name, len(payload), len(want))
					}
					dst := make([][]byte, len(p))
					for j := range dst {
						dst[j] = make([]byte, 4096)
					}
					if err := rcv.Recv(&sdk.Packet{Pages: dst}, payload); err != nil {
						t.Fatalf("packet %d: %v", i, err)
					}
					for j := range dst {
						if !bytes.Equal(dst[j], p[j]) {
							t.Fatalf("packet %d page %d differs", i, j)
						}
					}
				}
			})
		}
	}
}

// TestEngineTransfer moves an image with a Wasm sender and a built-in
// receiver, and the other way round, through the engine: the Go-built
// zstd, and the C-built zstd and lz4 (whose bytes differ from the
// built-in's but must decode to the same image).
func TestEngineTransfer(t *testing.T) {
	img := pagegen.Image(8<<20, 4096, 3)
	var pairs [][2]sdk.Method
	for _, c := range [][2]string{{"zstd", "zstd"}, {"zstd-c", "zstd"}, {"lz4-c", "lz4"}} {
		w := load(t, c[0], wasm.Config{})
		b := builtinMethod(t, c[1])
		pairs = append(pairs, [2]sdk.Method{w, b}, [2]sdk.Method{b, w})
	}
	for _, pair := range pairs {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		p := channelsPipe()
		type res struct {
			mem core.Memory
			err error
		}
		done := make(chan res, 1)
		r := core.NewReceiver(core.ReceiverConfig{Method: pair[1]})
		go func() {
			mem, err := r.Receive(ctx, p)
			done <- res{mem, err}
		}()
		s, err := core.NewSender(ctx, p, core.Blocks{{Name: "pc.ram", Data: img}}, core.SenderConfig{Channels: 3, Method: pair[0]})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.SendBlock("pc.ram"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Close(); err != nil {
			t.Fatal(err)
		}
		got := <-done
		if got.err != nil {
			t.Fatal(got.err)
		}
		if !bytes.Equal(got.mem.Blocks()[0].Data, img) {
			t.Fatal("image differs")
		}
	}
}

// TestSandbox: misbehaving modules fail cleanly, naming module and channel.
func TestSandbox(t *testing.T) {
	ctx := context.Background()
	t.Run("endless loop", func(t *testing.T) {
		m := load(t, "loop", wasm.Config{CallTimeout: 300 * time.Millisecond})
		s, err := m.NewSender(3, sdk.Options{})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, err = s.Prepare(&sdk.Packet{Pages: [][]byte{make([]byte, 4096)}}, nil)
		if !errors.Is(err, wasm.ErrPlugin) || !strings.Contains(err.Error(), "loop.wasm, channel 3: pagewire_prepare: no answer within 300ms") {
			t.Fatalf("%v", err)
		}
		if el := time.Since(start); el > 3*time.Second {
			t.Errorf("stopped after %v", el)
		}
		if _, err := s.Prepare(&sdk.Packet{Pages: [][]byte{make([]byte, 4096)}}, nil); err == nil {
			t.Error("a dead instance answered")
		}
		s.Close()
	})
	t.Run("exit", func(t *testing.T) {
		m := load(t, "exit", wasm.Config{})
		r, err := m.NewReceiver(1, sdk.Options{})
		if err != nil {
			t.Fatal(err)
		}
		err = r.Recv(&sdk.Packet{Pages: [][]byte{make([]byte, 4096)}}, make([]byte, 4096))
		if !errors.Is(err, wasm.ErrPlugin) || !strings.Contains(err.Error(), "exit.wasm, channel 1: pagewire_recv") {
			t.Fatalf("%v", err)
		}
		r.Close()
	})
	t.Run("abi v2", func(t *testing.T) {
		_, err := wasm.Load(ctx, modules["v2"], wasm.Config{CacheDir: "-"})
		if !errors.Is(err, wasm.ErrPlugin) || !strings.Contains(err.Error(), "v2.wasm speaks ABI v2; this host knows v1") {
			t.Fatalf("%v", err)
		}
	})
	t.Run("foreign import", func(t *testing.T) {
		_, err := wasm.Load(ctx, modules["badimport"], wasm.Config{CacheDir: "-"})
		if !errors.Is(err, wasm.ErrPlugin) || !strings.Contains(err.Error(), "imports env.open_socket") {
			t.Fatalf("%v", err)
		}
	})
	t.Run("not wasm", func(t *testing.T) {
		_, err := wasm.LoadBytes(ctx, "junk.wasm", []byte("#!/bin/sh\necho hi\n"), wasm.Config{CacheDir: "-"})
		if !errors.Is(err, wasm.ErrPlugin) || !strings.Contains(err.Error(), "junk.wasm") {
			t.Fatalf("%v", err)
		}
	})
	t.Run("memory limit", func(t *testing.T) {
		quiet := slog.New(slog.NewTextHandler(io.Discard, nil)) // the module's dying words
		m := load(t, "zstd", wasm.Config{MemoryLimit: 4 << 20, Log: quiet})
		if _, err := m.NewSender(0, sdk.Options{}); err == nil {
			t.Fatal("a 4 MiB memory limit let a Go module with 1 MiB buffers run")
		}
	})
	t.Run("corrupt payload", func(t *testing.T) {
		m := load(t, "zstd", wasm.Config{})
		r, err := m.NewReceiver(2, sdk.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		err = r.Recv(&sdk.Packet{Pages: [][]byte{make([]byte, 4096)}}, []byte("definitely not zstd"))
		if !errors.Is(err, sdk.ErrCorrupt) || !strings.Contains(err.Error(), "zstd.wasm, channel 2") {
			t.Fatalf("%v", err)
		}
	})
}

// TestExamplesInterop: the rle example written in C and the one written in
// Go are the same method: each decodes the other's packets, and both
// produce the same bytes as the Go source built in.
func TestExamplesInterop(t *testing.T) {
	c := load(t, "rle-c", wasm.Config{})
	g := load(t, "rle-go", wasm.Config{})
	native := rle.New()
	o := sdk.Options{PageSize: 4096, PacketPages: 128}
	pkts := packets(6)
	for _, pair := range [][2]sdk.Method{{c, g}, {g, c}, {native, c}, {c, native}} {
		snd, err := pair[0].NewSender(0, o)
		if err != nil {
			t.Fatal(err)
		}
		rcv, err := pair[1].NewReceiver(0, o)
		if err != nil {
			t.Fatal(err)
		}
		ref, _ := native.NewSender(0, o)
		for i, p := range pkts {
			payload, err := snd.Prepare(&sdk.Packet{Pages: p}, nil)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := ref.Prepare(&sdk.Packet{Pages: p}, nil)
			if !bytes.Equal(payload, want) {
				t.Fatalf("packet %d: %d bytes, the Go source makes %d", i, len(payload), len(want))
			}
			dst := make([][]byte, len(p))
			for j := range dst {
				dst[j] = make([]byte, 4096)
			}
			if err := rcv.Recv(&sdk.Packet{Pages: dst}, payload); err != nil {
				t.Fatalf("packet %d: %v", i, err)
			}
			for j := range dst {
				if !bytes.Equal(dst[j], p[j]) {
					t.Fatalf("packet %d page %d differs", i, j)
				}
			}
		}
		snd.Close()
		rcv.Close()
	}
}

// TestConformance runs the conformance kit against every module built
// here: the four built-in methods and both examples.
func TestConformance(t *testing.T) {
	for _, name := range []string{"nocomp", "zlib", "zstd", "lz4", "rle-go", "rle-c"} {
		t.Run(name, func(t *testing.T) {
			plugintest.Run(t, load(t, name, wasm.Config{}))
		})
	}
}
