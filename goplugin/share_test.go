package goplugin_test

import (
	"bytes"
	"testing"

	"github.com/pagewire/pagewire/core"
	"github.com/pagewire/pagewire/goplugin"
	"github.com/pagewire/pagewire/internal/pagegen"
	"github.com/pagewire/pagewire/internal/xfer"
	"github.com/pagewire/pagewire/plugins/builtin"
	"github.com/pagewire/pagewire/sdk"
)

// transfer moves mem's block from a sender using ms to a receiver using
// mr and returns what arrived and how many packets carried pages.
func transfer(t *testing.T, mem core.Memory, ms, mr sdk.Method) ([]byte, uint64) {
	t.Helper()
	dst := make([]byte, len(mem.Blocks()[0].Data))
	_, st, err := xfer.Run(mem, dst, ms, mr)
	if err != nil {
		t.Fatal(err)
	}
	return dst, st.Packets
}

// TestSharedMemory: a sender whose memory is a shared mapping (a memfd
// image) lets the plugin map it and sends every packet by offset; the
// pages arrive intact at a built-in receiver. Heap memory, or
// NoSharedMemory, copies the pages instead, with the same result.
func TestSharedMemory(t *testing.T) {
	img := pagegen.Image(8<<20, 4096, 3)
	im, err := core.ReadImage(bytes.NewReader(img), "pc.ram")
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	bi, err := builtin.Methods().Lookup("zstd")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		mem    core.Memory
		cfg    goplugin.Config
		shared bool
	}{
		{"memfd", im, goplugin.Config{}, true},
		{"memfd, NoSharedMemory", im, goplugin.Config{NoSharedMemory: true}, false},
		{"heap", core.Blocks{{Name: "pc.ram", Data: img}}, goplugin.Config{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := load(t, "zstd", tc.cfg)
			for round := range 2 { // the second transfer shares the memory again
				before := goplugin.PacketsByOffset(m)
				got, packets := transfer(t, tc.mem, m, bi)
				if !bytes.Equal(got, img) {
					t.Fatalf("round %d: the received image differs", round)
				}
				want := uint64(0)
				if tc.shared {
					want = packets
				}
				if n := goplugin.PacketsByOffset(m) - before; n != want || packets == 0 {
					t.Errorf("round %d: %d of %d packets went by offset, want %d", round, n, packets, want)
				}
			}
		})
	}
}
