package goplugin_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pagewire/pagewire/core"
	"github.com/pagewire/pagewire/goplugin"
	"github.com/pagewire/pagewire/internal/pagegen"
	"github.com/pagewire/pagewire/plugins/zstd"
	"github.com/pagewire/pagewire/sdk"
	"github.com/pagewire/pagewire/sdk/plugintest"
	"github.com/pagewire/pagewire/wasm"
)

// paths are the two ways packets travel to a plugin: on the data plane
// (the default on Linux) and inside the gRPC messages.
var paths = []struct {
	name string
	cfg  goplugin.Config
}{{"plane", goplugin.Config{}}, {"messages", goplugin.Config{NoDataPlane: true}}}

// TestConformance runs the conformance kit against every go-plugin build,
// both data paths.
func TestConformance(t *testing.T) {
	for _, path := range paths {
		for _, name := range []string{"nocomp", "zlib", "zstd", "lz4", "rle"} {
			t.Run(path.name+"/"+name, func(t *testing.T) {
				m := load(t, name, path.cfg)
				if m.Info().Name != name {
					t.Fatalf("info: %+v", m.Info())
				}
				plugintest.Run(t, m)
			})
		}
	}
}

// TestDataPlane: on Linux the default path is the data plane, and
// NoDataPlane turns it off, for senders and receivers alike. Either way
// the engine may keep payloads where the plugin's ends have them
// (core.InPlaceSender, core.InPlaceReceiver).
func TestDataPlane(t *testing.T) {
	for _, path := range paths {
		m := load(t, "zstd", path.cfg)
		s, err := m.NewSender(0, sdk.Options{})
		if err != nil {
			t.Fatal(err)
		}
		r, err := m.NewReceiver(0, sdk.Options{})
		if err != nil {
			t.Fatal(err)
		}
		want := path.name == "plane"
		if goplugin.OnDataPlane(s) != want || goplugin.OnDataPlane(r) != want {
			t.Errorf("%s: sender shared %v, receiver shared %v", path.name, goplugin.OnDataPlane(s), goplugin.OnDataPlane(r))
		}
		_, sip := s.(core.InPlaceSender)
		_, rip := r.(core.InPlaceReceiver)
		if !sip || !rip {
			t.Errorf("%s: sender in place %v, receiver in place %v", path.name, sip, rip)
		}
		s.Close()
		r.Close()
	}
}

func TestInspect(t *testing.T) {
	m := load(t, "zstd", goplugin.Config{})
	in := m.Inspect()
	b, _ := os.ReadFile(bins["zstd"])
	sum := sha256.Sum256(b)
	if in.Method != "zstd" || in.Flag != 4 || in.Protocol != goplugin.ProtocolVersion || in.Size != int64(len(b)) || in.File != "pw-zstd" {
		t.Errorf("%+v", in)
	}
	if in.SHA256 != strings.ToLower(hexString(sum[:])) {
		t.Errorf("sha256 %s", in.SHA256)
	}
	if m.Pid() <= 0 {
		t.Errorf("pid %d", m.Pid())
	}
}

func hexString(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

// TestChecksum: a pinned sha256 lets the right binary run and refuses
// any other.
func TestChecksum(t *testing.T) {
	b, err := os.ReadFile(bins["lz4"])
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	load(t, "lz4", goplugin.Config{SHA256: sum[:]})
	sum[0] ^= 1
	_, err = goplugin.Load(bins["lz4"], goplugin.Config{SHA256: sum[:]})
	if !errors.Is(err, goplugin.ErrChecksum) || !strings.Contains(err.Error(), "pw-lz4") {
		t.Fatalf("wrong checksum: %v", err)
	}
}

// TestLoadErrors: a plugin of another protocol version, a binary that is
// not a plugin, and a missing file fail at load with a clear error.
func TestLoadErrors(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		mode, path, want string
	}{
		{"plugin-v2", self, "speaks another protocol version"},
		{"not-plugin", self, "not a pagewire go-plugin"},
		{"", "/nonexistent/plugin", "no such file"},
	}
	for _, c := range cases {
		t.Run(c.mode, func(t *testing.T) {
			if c.mode != "" {
				t.Setenv("PAGEWIRE_GOPLUGIN_TEST_MODE", c.mode)
			}
			start := time.Now()
			m, err := goplugin.Load(c.path, goplugin.Config{})
			if err == nil {
				m.Close()
				t.Fatal("loaded")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("%v, want it to contain %q", err, c.want)
			}
			if c.mode != "" && !errors.Is(err, goplugin.ErrPlugin) {
				t.Errorf("%v is no ErrPlugin", err)
			}
			if el := time.Since(start); el > 5*time.Second {
				t.Errorf("took %v", el)
			}
			t.Log(err)
		})
	}
}

// records is a slog handler that keeps what it gets.
type records struct {
	mu   sync.Mutex
	msgs []string
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	var b strings.Builder
	b.WriteString(rec.Message)
	rec.Attrs(func(a slog.Attr) bool {
		b.WriteString(" " + a.String())
		return true
	})
	r.mu.Lock()
	r.msgs = append(r.msgs, b.String())
	r.mu.Unlock()
	return nil
}
func (r *records) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *records) WithGroup(string) slog.Handler      { return r }

func (r *records) find(s string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range r.msgs {
		if strings.Contains(m, s) {
			return true
		}
	}
	return false
}

// TestPluginLog: the plugin's slog output reaches the host's logger.
func TestPluginLog(t *testing.T) {
	rec := &records{}
	load(t, "zstd", goplugin.Config{Log: slog.New(rec)})
	deadline := time.Now().Add(5 * time.Second)
	for !rec.find("pagewire plugin serving plugin=pw-zstd") {
		if time.Now().After(deadline) {
			t.Fatalf("no plugin log line in %q", rec.msgs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// packets are the pages of n packets of a mixed image, 128 pages each
// but a few smaller ones.
func packets(n int) [][][]byte {
	img := pagegen.Image(n*128*4096, 4096, 7)
	var out [][][]byte
	off := 0
	for i := range n {
		np := 128
		if i%5 == 3 {
			np = 1 + i%100
		}
		var pages [][]byte
		for range np {
			pages = append(pages, img[off:off+4096])
			off += 4096
		}
		out = append(out, pages)
	}
	return out
}

// payloads runs the packets through a sender of m on channel 1.
func payloads(t *testing.T, m sdk.Method, pkts [][][]byte) [][]byte {
	t.Helper()
	s, err := m.NewSender(1, sdk.Options{Level: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var out [][]byte
	for i, pages := range pkts {
		p, err := s.Prepare(&sdk.Packet{Pages: pages, Seq: uint64(i + 1)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

// accept decodes the payloads with a receiver of m and checks the pages.
func accept(t *testing.T, m sdk.Method, pkts [][][]byte, pls [][]byte) {
	t.Helper()
	r, err := m.NewReceiver(1, sdk.Options{Level: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for i, pages := range pkts {
		dst := make([][]byte, len(pages))
		for j := range dst {
			dst[j] = make([]byte, 4096)
		}
		if err := r.Recv(&sdk.Packet{Pages: dst, Seq: uint64(i + 1)}, pls[i]); err != nil {
			t.Fatalf("%s: packet %d: %v", m.Info().Name, i+1, err)
		}
		for j := range dst {
			if !bytes.Equal(dst[j], pages[j]) {
				t.Fatalf("%s: packet %d page %d differs", m.Info().Name, i+1, j)
			}
		}
	}
}

// TestWireCompat: the go-plugin zstd sender produces the same wire bytes
// as the built-in zstd and the .wasm zstd, and each receiver accepts the
// others' payloads.
func TestWireCompat(t *testing.T) {
	for _, path := range paths {
		t.Run(path.name, func(t *testing.T) { testWireCompat(t, path.cfg) })
	}
}

func testWireCompat(t *testing.T, cfg goplugin.Config) {
	gp := load(t, "zstd", cfg)
	// Byte-identical payloads need one implementation: the plugins here
	// are built pure Go, so the built-in is too, even in a libzstd build.
	builtin := zstd.NewGo()
	wm, err := wasm.Load(context.Background(), wasms["zstd"], wasm.Config{CacheDir: "-"})
	if err != nil {
		t.Fatal(err)
	}
	defer wm.Close(context.Background())
	pkts := packets(24)
	fromGP := payloads(t, gp, pkts)
	for _, other := range []sdk.Method{builtin, wm} {
		want := payloads(t, other, pkts)
		for i := range want {
			if !bytes.Equal(fromGP[i], want[i]) {
				t.Fatalf("%T: packet %d: go-plugin payload of %d bytes differs from %d bytes", other, i+1, len(fromGP[i]), len(want[i]))
			}
		}
		accept(t, other, pkts, fromGP) // go-plugin sender -> other receiver
		accept(t, gp, pkts, want)      // other sender -> go-plugin receiver
	}
}

// TestCorrupt: a corrupt payload comes back as sdk.ErrCorrupt naming the
// plugin and the channel, and the channel carries on.
func TestCorrupt(t *testing.T) {
	gp := load(t, "zstd", goplugin.Config{})
	r, err := gp.NewReceiver(3, sdk.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	err = r.Recv(&sdk.Packet{Pages: [][]byte{make([]byte, 4096)}, Seq: 1}, []byte("garbage"))
	if !errors.Is(err, sdk.ErrCorrupt) || !strings.Contains(err.Error(), "pw-zstd, channel 3") {
		t.Fatalf("%v", err)
	}
}
