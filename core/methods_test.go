package core_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/pagewire/pagewire/core"
	"github.com/pagewire/pagewire/internal/corpus"
	"github.com/pagewire/pagewire/plugins/builtin"
)

// TestMethodsRoundTrip sends a real guest image with every built-in method
// over tcp with 1 and 4 channels, and pages again after a Sync, so that
// stream methods carry history across packets and rounds.
func TestMethodsRoundTrip(t *testing.T) {
	img, err := corpus.LoadFirst()
	if err != nil {
		t.Fatal(err)
	}
	src := bytes.Clone(img)
	for _, name := range builtin.Methods().Names() {
		m, _ := builtin.Methods().Lookup(name)
		for _, n := range []int{1, 4} {
			t.Run(fmt.Sprintf("%s/%d", name, n), func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				copy(src, img)
				ln, d := tcpTransport(t)
				rc := receive(ctx, ln, core.ReceiverConfig{Method: m})
				s, err := core.NewSender(ctx, d, core.Blocks{{Name: "pc.ram", Data: src}}, core.SenderConfig{Channels: n, Method: m})
				if err != nil {
					t.Fatal(err)
				}
				if err := s.SendBlock("pc.ram"); err != nil {
					t.Fatal(err)
				}
				if err := s.Sync(); err != nil {
					t.Fatal(err)
				}
				// Round 2: every 7th page changes.
				var dirty []uint64
				for off := 0; off < len(src); off += 7 * 4096 {
					src[off] ^= 0xff
					dirty = append(dirty, uint64(off))
				}
				if err := s.SendPages("pc.ram", dirty); err != nil {
					t.Fatal(err)
				}
				st, err := s.Close()
				if err != nil {
					t.Fatal(err)
				}
				res := wait(t, rc)
				if res.err != nil {
					t.Fatal(res.err)
				}
				if !bytes.Equal(blockData(t, res.mem, "pc.ram"), src) {
					t.Fatal("received image differs")
				}
				// auto sends raw when the link is not what limits, as here.
				if name != "nocomp" && name != "auto" && st.Ratio() < 2 {
					t.Errorf("ratio %.2f", st.Ratio())
				}
			})
		}
	}
}

// TestMethodMismatchAtHandshake: a receiver that expects one method
// refuses a sender of another before any page moves, on both ends.
func TestMethodMismatchAtHandshake(t *testing.T) {
	lz4, _ := builtin.Methods().Lookup("lz4")
	zstd, _ := builtin.Methods().Lookup("zstd")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ln, d := tcpTransport(t)
	rc := receive(ctx, ln, core.ReceiverConfig{Method: zstd})
	_, err := core.NewSender(ctx, d, core.Blocks{{Name: "pc.ram", Data: make([]byte, 1<<20)}}, core.SenderConfig{Method: lz4})
	want := "method mismatch: sender uses lz4 (flag 0x3c), receiver expects zstd (flag 0x4)"
	var re *core.RemoteError
	if !errors.As(err, &re) || !bytes.Contains([]byte(re.Msg), []byte(want)) {
		t.Errorf("sender: %v, want the receiver's %q", err, want)
	}
	res := wait(t, rc)
	if !errors.Is(res.err, core.ErrMethodMismatch) || !bytes.Contains([]byte(res.err.Error()), []byte(want)) {
		t.Errorf("receiver: %v, want %q", res.err, want)
	}
}
