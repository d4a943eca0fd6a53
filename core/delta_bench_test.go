package core_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/pagewire/pagewire/core"
	"github.com/pagewire/pagewire/plugins/builtin"
	"github.com/pagewire/pagewire/sdk"
)

// BenchmarkDeltaRounds is a multi-round pre-copy of a 64 MiB guest whose
// memory is random (incompressible) and which, between rounds, rewrites
// 8 bytes of 64-byte records at random (16384 updates a round: about
// 14000 distinct dirty pages), as the lab's records-random workload does.
// Each iteration runs the same 8 rounds over one 4-channel transfer
// without a delta cache and with one of 64 MiB (the whole guest), side
// by side, for nocomp and lz4. Per variant: wire MB of the rounds after
// the first (the first pass is the same with or without), the time of
// those rounds, and the ratio of wire bytes; allocs/op covers both.
func BenchmarkDeltaRounds(b *testing.B) {
	const (
		size    = 64 << 20
		rounds  = 8
		updates = 16384
	)
	for _, method := range []string{"nocomp", "lz4"} {
		b.Run(method, func(b *testing.B) {
			m, err := builtin.Lookup(method)
			if err != nil {
				b.Fatal(err)
			}
			var wire [2]uint64
			var took [2]time.Duration
			b.ReportAllocs()
			for b.Loop() {
				for v, cache := range []int64{0, size} {
					w, d := deltaRun(b, m, size, rounds, updates, cache)
					wire[v] += w
					took[v] += d
				}
			}
			n := float64(b.N)
			b.ReportMetric(float64(wire[0])/n/1e6, "plain-MB")
			b.ReportMetric(float64(wire[1])/n/1e6, "delta-MB")
			b.ReportMetric(took[0].Seconds()/n, "plain-s")
			b.ReportMetric(took[1].Seconds()/n, "delta-s")
			b.ReportMetric(float64(wire[0])/float64(wire[1]), "plain/delta-bytes")
		})
	}
}

// deltaRun is one transfer of BenchmarkDeltaRounds: the wire bytes and
// time of the rounds after the first.
func deltaRun(b *testing.B, m sdk.Method, size, rounds, updates int, cache int64) (uint64, time.Duration) {
	const ps = 4096
	r := rand.New(rand.NewPCG(11, 12))
	img := make([]byte, size)
	for i := 0; i < size; i += 8 {
		binary.LittleEndian.PutUint64(img[i:], r.Uint64())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ln, d := tcpTransport(b)
	rc := receive(ctx, ln, core.ReceiverConfig{})
	s, err := core.NewSender(ctx, d, core.Blocks{{Name: "pc.ram", Data: img}},
		core.SenderConfig{Channels: 4, Method: m, DeltaCache: cache})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.SendBlock("pc.ram"); err != nil {
		b.Fatal(err)
	}
	if err := s.Sync(); err != nil {
		b.Fatal(err)
	}
	first := s.Stats().WireBytes
	start := time.Now()
	dirty := make(map[uint64]bool)
	var offs []uint64
	for range rounds - 1 {
		clear(dirty)
		offs = offs[:0]
		for range updates {
			rec := r.IntN(size / 64)
			at := rec*64 + r.IntN(57)
			for k := range 8 {
				img[at+k] = byte(r.Uint32())
			}
			pg := uint64(at / ps * ps)
			if !dirty[pg] {
				dirty[pg] = true
				offs = append(offs, pg)
			}
		}
		if err := s.SendPages("pc.ram", offs); err != nil {
			b.Fatal(err)
		}
		if err := s.Sync(); err != nil {
			b.Fatal(err)
		}
	}
	took := time.Since(start)
	st, err := s.Close()
	if err != nil {
		b.Fatal(err)
	}
	res := wait(b, rc)
	if res.err != nil {
		b.Fatal(res.err)
	}
	if !bytes.Equal(blockData(b, res.mem, "pc.ram"), img) {
		b.Fatalf("cache %d: the received image differs", cache)
	}
	return st.WireBytes - first, took
}
