//go:build cgo && libzstd

package zstd_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/pagewire/pagewire/internal/corpus"
	"github.com/pagewire/pagewire/plugins/zstd"
	"github.com/pagewire/pagewire/sdk"
)

// packets are the non-zero pages of the first corpus image, in packets
// of up to 128.
func packets(t *testing.T) [][][]byte {
	t.Helper()
	img, err := corpus.LoadFirst()
	if err != nil {
		t.Fatal(err)
	}
	pkts, _ := corpus.Packets(img)
	return pkts[:min(len(pkts), 60)]
}

// TestNativeInterop: the native tier and the pure-Go implementation speak
// one stream: each decodes what the other encodes, at zstd levels 1, 3
// and 9, packet by packet on one channel.
func TestNativeInterop(t *testing.T) {
	pkts := packets(t)
	native, pure := zstd.New(), zstd.NewGo()
	if !strings.HasPrefix(native.(zstd.Method).Implementation(), "libzstd ") {
		t.Fatalf("New() in a libzstd build is %q", native.(zstd.Method).Implementation())
	}
	for _, dir := range []struct {
		name     string
		enc, dec sdk.Method
	}{{"libzstd-to-go", native, pure}, {"go-to-libzstd", pure, native}} {
		for _, level := range []int{1, 3, 9} {
			t.Run(fmt.Sprintf("%s/level=%d", dir.name, level), func(t *testing.T) {
				o := sdk.Options{Level: level, PageSize: 4096, PacketPages: 128}
				snd, err := dir.enc.NewSender(0, o)
				if err != nil {
					t.Fatal(err)
				}
				defer snd.Close()
				rcv, err := dir.dec.NewReceiver(0, o)
				if err != nil {
					t.Fatal(err)
				}
				defer rcv.Close()
				var payload []byte
				frames := 0 // payloads that start a zstd frame
				for i, p := range pkts {
					if payload, err = snd.Prepare(&sdk.Packet{Pages: p, Seq: uint64(i + 1)}, payload[:0]); err != nil {
						t.Fatal(err)
					}
					if bytes.HasPrefix(payload, []byte{0x28, 0xb5, 0x2f, 0xfd}) {
						frames++
					}
					dst := make([][]byte, len(p))
					for j := range dst {
						dst[j] = make([]byte, 4096)
					}
					if err := rcv.Recv(&sdk.Packet{Pages: dst, Seq: uint64(i + 1)}, payload); err != nil {
						t.Fatalf("packet %d: %v", i+1, err)
					}
					for j := range p {
						if !bytes.Equal(dst[j], p[j]) {
							t.Fatalf("packet %d page %d differs", i+1, j)
						}
					}
				}
				// The native sender ends a frame before it outgrows its
				// window (4 MiB at level 1): these 60 packets span several.
				if dir.enc == native && level == 1 && frames < 3 {
					t.Errorf("%d frames in %d packets, want one per 4 MiB of pages", frames, len(pkts))
				}
				t.Logf("%d frames", frames)
			})
		}
	}
}

// TestNativeWindow: a frame that asks for a window above MaxWindow is
// refused (a hostile header costs no more memory), and one at the
// limit decodes.
func TestNativeWindow(t *testing.T) {
	page := bytes.Repeat([]byte("pagewire"), 512)
	for _, c := range []struct {
		wlog byte
		ok   bool
	}{{26, true}, {27, false}} {
		// A frame header with a window descriptor (no single segment, no
		// checksum, no content size): exponent wlog-10, mantissa 0; then
		// one raw block holding the page.
		frame := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, (c.wlog - 10) << 3}
		hdr := uint32(len(page))<<3 | 0<<1 | 0 // raw block, not last
		frame = append(frame, byte(hdr), byte(hdr>>8), byte(hdr>>16))
		frame = append(frame, page...)
		rcv, err := zstd.New().NewReceiver(0, sdk.Options{})
		if err != nil {
			t.Fatal(err)
		}
		dst := make([]byte, 4096)
		err = rcv.Recv(&sdk.Packet{Pages: [][]byte{dst}, Seq: 1}, frame)
		rcv.Close()
		if c.ok && (err != nil || !bytes.Equal(dst, page)) {
			t.Errorf("window 2^%d: %v", c.wlog, err)
		}
		if !c.ok && !errors.Is(err, sdk.ErrCorrupt) {
			t.Errorf("window 2^%d: %v, want ErrCorrupt", c.wlog, err)
		}
	}
}

// TestNativeClose: Close twice is harmless, and a channel used after
// Close fails instead of touching freed memory.
func TestNativeClose(t *testing.T) {
	snd, _ := zstd.New().NewSender(0, sdk.Options{})
	rcv, _ := zstd.New().NewReceiver(0, sdk.Options{})
	for range 2 {
		if err := snd.Close(); err != nil {
			t.Fatal(err)
		}
		if err := rcv.Close(); err != nil {
			t.Fatal(err)
		}
	}
	page := make([]byte, 4096)
	if _, err := snd.Prepare(&sdk.Packet{Pages: [][]byte{page}}, nil); err == nil {
		t.Error("Prepare after Close succeeded")
	}
	if err := rcv.Recv(&sdk.Packet{Pages: [][]byte{page}}, []byte{1}); err == nil {
		t.Error("Recv after Close succeeded")
	}
}

// TestNativeEnv: PAGEWIRE_ZSTD=go makes New the pure-Go implementation.
func TestNativeEnv(t *testing.T) {
	t.Setenv("PAGEWIRE_ZSTD", "go")
	if impl := zstd.New().(zstd.Method).Implementation(); !strings.HasPrefix(impl, "klauspost/compress ") {
		t.Fatalf("New() with PAGEWIRE_ZSTD=go is %q", impl)
	}
}
