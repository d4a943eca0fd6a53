package core_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pagewire/pagewire/core"
)

// lying is memory filled with 0xaa that claims to start as zeros, so a
// test can see which zero pages the receiver left unread.
type lying struct{ core.Memory }

func (lying) Zeroed() bool { return true }

// TestZeroedDestination: on memory that starts as zeros (ZeroedMemory,
// from Alloc) the receiver leaves a zero page alone when it has not
// written that page, and clears one it has, in both dialects; on other
// memory it clears every zero page.
func TestZeroedDestination(t *testing.T) {
	const ps, pages = 4096, 256
	src := make([]byte, pages*ps)
	for i := range src[:pages/2*ps] {
		src[i] = byte(i>>12) | 1 // the first half; the second is zero
	}
	var second []uint64 // round 2 zeroes the first 16 pages
	for p := range 16 {
		second = append(second, uint64(p*ps))
	}
	for _, dialect := range []core.Dialect{core.Dialect10, core.Dialect72} {
		for _, zeroed := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/zeroed=%v", dialect, zeroed), func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				img := bytes.Clone(src)
				alloc := func(infos []core.BlockInfo) (core.Memory, error) {
					mem := core.Blocks{{Name: infos[0].Name, Data: bytes.Repeat([]byte{0xaa}, int(infos[0].Size))}}
					if zeroed {
						return lying{mem}, nil
					}
					return mem, nil
				}
				ln, d := tcpTransport(t)
				rc := receive(ctx, ln, core.ReceiverConfig{Alloc: alloc})
				s, err := core.NewSender(ctx, d, core.Blocks{{Name: "pc.ram", Data: img}}, core.SenderConfig{Channels: 2, Dialect: dialect})
				if err != nil {
					t.Fatal(err)
				}
				if err := s.SendBlock("pc.ram"); err != nil {
					t.Fatal(err)
				}
				if err := s.Sync(); err != nil {
					t.Fatal(err)
				}
				clear(img[:16*ps])
				if err := s.SendPages("pc.ram", second); err != nil {
					t.Fatal(err)
				}
				if _, err := s.Close(); err != nil {
					t.Fatal(err)
				}
				res := wait(t, rc)
				if res.err != nil {
					t.Fatal(res.err)
				}
				got := blockData(t, res.mem, "pc.ram")
				want := bytes.Clone(img)
				if zeroed {
					// never written: left as the memory was
					copy(want[pages/2*ps:], bytes.Repeat([]byte{0xaa}, pages/2*ps))
				}
				for p := range pages {
					if !bytes.Equal(got[p*ps:(p+1)*ps], want[p*ps:(p+1)*ps]) {
						t.Fatalf("page %d: %x..., want %x...", p, got[p*ps:p*ps+4], want[p*ps:p*ps+4])
					}
				}
			})
		}
	}
}
