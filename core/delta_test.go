package core_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/pagewire/pagewire/core"
	"github.com/pagewire/pagewire/plugins/builtin"
)

// TestDeltaHistories is a property test of delta pages: random
// multi-round histories of a small guest, sent with a delta cache,
// through a receiver whose channels are jittered so that they overtake
// each other. Every round edits a few bytes of some pages (deltas),
// rewrites others whole, turns some to zero and back, and sends some
// pages twice in one interval (on different channels) before sending
// them once more in the next. The cache is small enough that
// pages evict each other. The receiver must end with the source's RAM,
// and deltas must have been used.
func TestDeltaHistories(t *testing.T) {
	for _, method := range []string{"nocomp", "lz4", "zstd"} {
		for seed := range uint64(3) {
			t.Run(fmt.Sprintf("%s/seed-%d", method, seed), func(t *testing.T) {
				deltaHistory(t, method, seed, false)
			})
		}
	}
	// Into a file-backed image (CreateImage, as recv --out): pages are
	// written with pwrite, deltas rebuilt from what the mapping shows.
	for _, method := range []string{"nocomp", "zstd"} {
		t.Run(method+"/image", func(t *testing.T) { deltaHistory(t, method, 7, true) })
	}
}

func deltaHistory(t *testing.T, method string, seed uint64, image bool) {
	const (
		ps     = 4096
		pages  = 512
		rounds = 12
	)
	r := rand.New(rand.NewPCG(seed, 99))
	img := make([]byte, pages*ps)
	for i := range img {
		img[i] = byte(r.Uint32())
	}
	m, err := builtin.Lookup(method)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ln, d := tcpTransport(t)
	var rcfg core.ReceiverConfig
	if image {
		path := filepath.Join(t.TempDir(), "image")
		rcfg.Alloc = func(infos []core.BlockInfo) (core.Memory, error) {
			return core.CreateImage(path, infos[0].Name, int64(infos[0].Size))
		}
	}
	rc := receive(ctx, jitterListener{ln}, rcfg)
	s, err := core.NewSender(ctx, d, core.Blocks{{Name: "pc.ram", Data: img}},
		core.SenderConfig{Channels: 4, Method: m, DeltaCache: 300 * ps})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SendBlock("pc.ram"); err != nil {
		t.Fatal(err)
	}
	page := func(i int) []byte { return img[i*ps : (i+1)*ps] }
	for range rounds {
		if err := s.Sync(); err != nil {
			t.Fatal(err)
		}
		var dirty, twice []uint64
		for i := range pages {
			pg := page(i)
			switch x := r.IntN(20); {
			case x < 6: // a few bytes: a delta
				for range 1 + r.IntN(6) {
					pg[r.IntN(ps)] ^= byte(1 + r.IntN(255))
				}
			case x == 6: // rewritten whole: too large a delta
				for j := range pg {
					pg[j] = byte(r.Uint32())
				}
			case x == 7: // becomes zero
				clear(pg)
			case x == 8: // zero or not, now something again
				pg[r.IntN(ps)] = byte(1 + r.IntN(255))
			case x == 9: // sent twice in this interval
				pg[r.IntN(ps)]++
				twice = append(twice, uint64(i*ps))
			default:
				continue
			}
			dirty = append(dirty, uint64(i*ps))
		}
		if err := s.SendPages("pc.ram", dirty); err != nil {
			t.Fatal(err)
		}
		// Again in the same interval: the engine may put the copies on
		// different channels. (The source may not change while pages
		// are queued, so the copies are the same here; the cache cannot
		// know which one the receiver keeps in general.)
		if err := s.SendPages("pc.ram", twice); err != nil {
			t.Fatal(err)
		}
		// The receiver holds either copy: the next interval sends them
		// again (whole: their cache entries are invalid).
		if err := s.Sync(); err != nil {
			t.Fatal(err)
		}
		if err := s.SendPages("pc.ram", twice); err != nil {
			t.Fatal(err)
		}
	}
	st, err := s.Close()
	if err != nil {
		t.Fatal(err)
	}
	res := wait(t, rc)
	if res.err != nil {
		t.Fatal(res.err)
	}
	if c, ok := res.mem.(interface{ Close() error }); ok { // an image
		defer c.Close()
	}
	got := blockData(t, res.mem, "pc.ram")
	for i := range pages {
		if !bytes.Equal(got[i*ps:(i+1)*ps], page(i)) {
			t.Fatalf("page %d differs from the source's", i)
		}
	}
	if st.DeltaPages == 0 || res.stats.DeltaPages != st.DeltaPages {
		t.Fatalf("delta pages: sender %d, receiver %d", st.DeltaPages, res.stats.DeltaPages)
	}
	t.Logf("%d of %d normal pages as deltas, %d wire bytes", st.DeltaPages, st.NormalPages, st.WireBytes)
}

// TestDeltaConfig: a delta cache with the 7.2 dialect is refused before
// anything is sent.
func TestDeltaConfig(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	img := make([]byte, 64*4096)
	for _, dialect := range []core.Dialect{core.Dialect72} {
		ln, d := tcpTransport(t)
		rc := receive(ctx, ln, core.ReceiverConfig{})
		_, err := core.NewSender(ctx, d, core.Blocks{{Name: "pc.ram", Data: img}},
			core.SenderConfig{Channels: 2, Dialect: dialect, DeltaCache: 1 << 20})
		if err == nil || err.Error() != "a delta cache needs the 10.0 dialect" {
			t.Fatalf("dialect %s: %v", dialect, err)
		}
		cancel()
		wait(t, rc)
	}
}

// TestDeltaNotOffered: a delta packet in a transfer whose hello did not
// offer delta pages is refused as a bad packet.
func TestDeltaNotOffered(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	img := make([]byte, 64*4096)
	img[5] = 1
	ln, d := tcpTransport(t)
	rc := receive(ctx, ln, core.ReceiverConfig{})
	defer core.SetDeltaHelloHook(func(offer *bool) { *offer = false })()
	s, err := core.NewSender(ctx, d, core.Blocks{{Name: "pc.ram", Data: img}},
		core.SenderConfig{Channels: 2, DeltaCache: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	s.SendBlock("pc.ram")
	s.Sync()
	img[6] = 2
	s.SendPages("pc.ram", []uint64{0})
	_, err = s.Close()
	res := wait(t, rc)
	if !errors.Is(res.err, core.ErrBadPacket) || !errors.Is(err, core.ErrBadPacket) {
		t.Fatalf("receiver: %v\nsender: %v", res.err, err)
	}
}
