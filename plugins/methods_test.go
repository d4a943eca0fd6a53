// Package plugins_test checks every built-in method against the same
// contract: packets of real guest pages round-trip through one sender and
// one receiver per channel, corrupt and truncated payloads are errors,
// and nothing decodes past a packet's pages.
package plugins_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/pagewire/pagewire/internal/corpus"
	"github.com/pagewire/pagewire/plugins/auto"
	"github.com/pagewire/pagewire/plugins/lz4"
	"github.com/pagewire/pagewire/plugins/nocomp"
	"github.com/pagewire/pagewire/plugins/zlib"
	"github.com/pagewire/pagewire/plugins/zstd"
	"github.com/pagewire/pagewire/sdk"
)

// methods are the built-in methods, zstd in pure Go, and, in a build
// with the native tier (the libzstd tag), zstd on libzstd as well.
var methods = func() []sdk.Method {
	ms := []sdk.Method{nocomp.New(), zlib.New(), zstd.NewGo(), lz4.New(), auto.New()}
	if zstd.Native {
		ms = append(ms, zstd.New())
	}
	return ms
}()

// label names a method in test and benchmark names: its name, and
// zstd-libzstd for the native zstd.
func label(m sdk.Method) string {
	if z, ok := m.(zstd.Method); ok && strings.HasPrefix(z.Implementation(), "libzstd") {
		return "zstd-libzstd"
	}
	return m.Info().Name
}

const ps = 4096

var opts = sdk.Options{PageSize: ps, PacketPages: 128}

// packets cuts the non-zero pages of a corpus image into packets.
func packets(t testing.TB, n int) [][][]byte {
	t.Helper()
	img, err := corpus.LoadFirst()
	if err != nil {
		t.Fatal(err)
	}
	var out [][][]byte
	var cur [][]byte
	for off := 0; off < len(img) && len(out) < n; off += ps {
		pg := img[off : off+ps]
		if bytes.Equal(pg, make([]byte, ps)) {
			continue
		}
		cur = append(cur, pg)
		if len(cur) == 128 || len(cur) == 1+len(out)%128 && len(out)%7 == 3 {
			out = append(out, cur)
			cur = nil
		}
	}
	return out
}

func alloc(pages int) [][]byte {
	out := make([][]byte, pages)
	for i := range out {
		out[i] = make([]byte, ps)
	}
	return out
}

func TestRoundTrip(t *testing.T) {
	pkts := packets(t, 30)
	for _, m := range methods {
		for _, level := range []int{0, 3, 9} {
			t.Run(fmt.Sprintf("%s/level=%d", label(m), level), func(t *testing.T) {
				o := opts
				o.Level = level
				snd, err := m.NewSender(0, o)
				if _, ok := m.(*auto.Method); ok && level != 0 {
					if err == nil || !strings.Contains(err.Error(), "auto picks its own levels") {
						t.Fatalf("auto with level %d: %v, want an error", level, err)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				defer snd.Close()
				rcv, err := m.NewReceiver(0, o)
				if err != nil {
					t.Fatal(err)
				}
				defer rcv.Close()
				var payload []byte
				raw, wire := 0, 0
				for i, pages := range pkts {
					payload, err = snd.Prepare(&sdk.Packet{Pages: pages, Seq: uint64(i + 1)}, payload[:0])
					if err != nil {
						t.Fatal(err)
					}
					if max := sdk.MaxPayload(128, ps); len(payload) > max {
						t.Fatalf("packet %d: %d bytes, more than %d", i, len(payload), max)
					}
					dst := alloc(len(pages))
					if err := rcv.Recv(&sdk.Packet{Pages: dst, Seq: uint64(i + 1)}, payload); err != nil {
						t.Fatalf("packet %d: %v", i, err)
					}
					for j := range pages {
						if !bytes.Equal(dst[j], pages[j]) {
							t.Fatalf("packet %d page %d differs", i, j)
						}
					}
					raw += len(pages) * ps
					wire += len(payload)
				}
				t.Logf("ratio %.2f", float64(raw)/float64(wire))
			})
		}
	}
}

// TestBadPayload: truncated, corrupted and overlong payloads are errors
// wrapping sdk.ErrCorrupt, never a panic, and never fill more than the
// packet's pages.
func TestBadPayload(t *testing.T) {
	pkts := packets(t, 3)
	for _, m := range methods {
		name := label(m)
		cases := map[string]func(p []byte) []byte{
			"truncated": func(p []byte) []byte { return p[:len(p)/2] },
			"empty":     func(p []byte) []byte { return nil },
			"garbage": func(p []byte) []byte {
				q := bytes.Clone(p)
				for i := len(q) / 3; i < len(q); i += 7 {
					q[i] ^= 0x5a
				}
				return q
			},
			"extra": func(p []byte) []byte { return append(bytes.Clone(p), p...) },
		}
		for cname, mangle := range cases {
			t.Run(name+"/"+cname, func(t *testing.T) {
				snd, _ := m.NewSender(0, opts)
				rcv, _ := m.NewReceiver(0, opts)
				defer snd.Close()
				defer rcv.Close()
				// One good packet first, so stream methods have history.
				payload, _ := snd.Prepare(&sdk.Packet{Pages: pkts[0]}, nil)
				if err := rcv.Recv(&sdk.Packet{Pages: alloc(len(pkts[0]))}, payload); err != nil {
					t.Fatal(err)
				}
				payload, _ = snd.Prepare(&sdk.Packet{Pages: pkts[1]}, nil)
				bad := mangle(payload)
				dst := alloc(len(pkts[1]))
				err := rcv.Recv(&sdk.Packet{Pages: dst}, bad)
				if cname == "garbage" && (name == "nocomp" || name == "auto" && payload[0] == 0) {
					return // nocomp cannot tell garbage from pages (nor auto sending raw)
				}
				if !errors.Is(err, sdk.ErrCorrupt) {
					t.Fatalf("Recv: %v, want ErrCorrupt", err)
				}
			})
		}
	}
}
