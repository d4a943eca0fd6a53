package qemu

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pagewire/pagewire/channels"
	"github.com/pagewire/pagewire/core"
)

// TestQEMUSenderRelay plays a QEMU source with NewQEMUSender (its main
// stream built by hand, multifd pages from memory) into a QEMUReceiver
// whose OnSync hook sees each interval: the destination ends equal to
// the source, every hook's Pages are exactly the multifd pages of its
// interval, and the hooks' Main plus MainTail are the main stream.
func TestQEMUSenderRelay(t *testing.T) {
	for _, d := range []Dialect{Dialect72, Dialect10} {
		for _, eager := range []bool{false, true} {
			name := string(d) + "/at-sync"
			if eager {
				name = string(d) + "/OnPages"
			}
			t.Run(name, func(t *testing.T) { testQEMUSenderRelay(t, d, eager) })
		}
	}
}

// With eager, the pages come from OnPages as they land (and Pages
// reports none); the sets per interval are the same.
func testQEMUSenderRelay(t *testing.T, dialect Dialect, eager bool) {
	rng := rand.New(rand.NewPCG(1, uint64(len(dialect))))
	src := core.Blocks{}
	for _, b := range qfBlocks {
		data := make([]byte, b.Size)
		for i := 0; i < len(data); i += core.DefaultPageSize {
			if rng.IntN(4) > 0 { // a quarter stays zero
				fill := byte(rng.IntN(255) + 1)
				for j := range core.DefaultPageSize {
					data[i+j] = fill ^ byte(j)
				}
			}
		}
		src = append(src, core.Block{Name: b.Name, Data: data})
	}
	// Three intervals after the setup's sync point: each sends some pages
	// of pc.ram by multifd (some twice, the second copy changed) and a
	// zero record on the main stream for a page that is zero.
	pc := src[0].Data
	var intervals [][]uint64
	for k := range 3 {
		var offs []uint64
		for p := k; p < len(pc)/core.DefaultPageSize; p += 3 {
			if !core.IsZero(pc[p*core.DefaultPageSize : (p+1)*core.DefaultPageSize]) {
				offs = append(offs, uint64(p*core.DefaultPageSize))
			}
		}
		intervals = append(intervals, offs)
	}
	zeroPage := func(k int) uint64 {
		for p := k; ; p += 3 {
			if core.IsZero(pc[p*core.DefaultPageSize : (p+1)*core.DefaultPageSize]) {
				return uint64(p * core.DefaultPageSize)
			}
		}
	}
	marker := func(w *qfBuf) *qfBuf {
		if dialect == Dialect10 {
			return w.u64(ramFlagMultifdFlush)
		}
		return w
	}
	var chunks [][]byte
	chunks = append(chunks, marker(new(qfBuf).header().config(qfMachine).start(vmSectionStart, qfRAMID, "ram", 0, ramSectionVersion).memSize(qfBlocks...)).eos().footer(qfRAMID).b)
	for k := range intervals {
		w := new(qfBuf).u8(vmSectionPart).u32(qfRAMID).zero("pc.ram", zeroPage(k), 0)
		if k == len(intervals)-1 {
			w = new(qfBuf).u8(vmSectionEnd).u32(qfRAMID).zero("pc.ram", zeroPage(k), 0)
		}
		chunks = append(chunks, marker(w).eos().footer(qfRAMID).b)
	}
	tail := []byte{vmEOF}
	var stream []byte
	for _, c := range chunks {
		stream = append(stream, c...)
	}
	stream = append(stream, tail...)

	ln, err := channels.Listen("tcp:127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dialer, _ := channels.NewDialer(channels.Addr(ln.Addr()))
	var (
		mu       sync.Mutex
		seenMain []byte
		seenPgs  [][]uint64
		landed   []uint64 // OnPages since the last sync point
	)
	cfg := Config{Channels: 2, Dialect: dialect}
	if eager {
		cfg.OnPages = func(block string, offs []uint64) {
			mu.Lock()
			defer mu.Unlock()
			if block == "pc.ram" {
				landed = append(landed, offs...)
			}
		}
	}
	cfg.OnSync = func(p *SyncPoint) error {
		mu.Lock()
		defer mu.Unlock()
		seenMain = append(seenMain, p.Main()...)
		offs := landed
		slices.Sort(offs)
		landed = nil
		err := p.Pages(func(block string, o []uint64) error {
			if eager {
				return fmt.Errorf("Pages reported %d pages with OnPages set", len(o))
			}
			if block != "pc.ram" {
				return fmt.Errorf("pages of block %q", block)
			}
			offs = append(offs, o...)
			return nil
		})
		seenPgs = append(seenPgs, offs)
		return err
	}
	q := NewReceiver(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	type result struct {
		mem core.Memory
		err error
	}
	done := make(chan result, 1)
	go func() {
		mem, err := q.Receive(ctx, ln)
		done <- result{mem, err}
	}()
	s, err := NewSender(ctx, dialer, src, core.SenderConfig{Channels: 2, Dialect: dialect})
	if err != nil {
		t.Fatal(err)
	}
	step := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	step(s.WriteMain(chunks[0]))
	step(s.Sync())
	for k, offs := range intervals {
		step(s.SendPages("pc.ram", offs))
		step(s.Sync())
		step(s.WriteMain(chunks[k+1]))
	}
	step(s.WriteMain(tail))
	if _, err := s.Close(); err != nil {
		t.Fatal(err)
	}
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	got := res.mem.Blocks()
	for i, b := range src {
		if b.Name == "pc.ram" {
			if !bytes.Equal(got[i].Data, b.Data) {
				// pages of pc.ram not in any interval stay zero at the
				// destination: compare those that were sent.
				for _, offs := range intervals {
					for _, off := range offs {
						if !bytes.Equal(got[i].Data[off:off+core.DefaultPageSize], b.Data[off:off+core.DefaultPageSize]) {
							t.Fatalf("pc.ram page %#x differs", off)
						}
					}
				}
			}
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if main := append(slices.Clone(seenMain), q.MainTail()...); !bytes.Equal(main, stream) {
		t.Fatalf("hooks saw %d main bytes + tail %d, stream has %d", len(seenMain), len(q.MainTail()), len(stream))
	}
	want := append([][]uint64{nil}, intervals...)
	if len(seenPgs) != len(want) {
		t.Fatalf("%d sync points, want %d", len(seenPgs), len(want))
	}
	for k := range want {
		if !slices.Equal(seenPgs[k], want[k]) {
			t.Errorf("sync point %d: %d pages, want %d", k+1, len(seenPgs[k]), len(want[k]))
		}
	}
}
