package wasm_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/pagewire/pagewire/core"
	"github.com/pagewire/pagewire/internal/corpus"
	"github.com/pagewire/pagewire/internal/xfer"
	"github.com/pagewire/pagewire/sdk"
	"github.com/pagewire/pagewire/wasm"
)

// corpusImage is the first image of the guest-memory corpus.
func corpusImage(b *testing.B) []byte {
	img, err := corpus.LoadFirst()
	if err != nil {
		b.Fatal(err)
	}
	return img
}

// BenchmarkWasmVsBuiltin transfers a real guest image end to end with each
// method built in and as a Wasm plugin on both ends, side by side in every
// iteration; wasm/builtin is the plugin's throughput over the built-in's.
func BenchmarkWasmVsBuiltin(b *testing.B) {
	img := corpusImage(b)
	dst := make([]byte, len(img))
	for _, c := range []struct {
		name    string
		trusted bool
	}{{"nocomp", false}, {"lz4", false}, {"zstd", false}, {"zlib", false}, {"lz4", true}, {"zstd", true}} {
		name := c.name
		w := load(b, name, wasm.Config{Trusted: c.trusted})
		bi := builtinMethod(b, name)
		label := name
		if c.trusted {
			label += "/trusted"
		}
		b.Run(label, func(b *testing.B) { xfer.Compare(b, core.Blocks{{Name: "pc.ram", Data: img}}, dst, bi, w, "wasm") })
	}
}

// BenchmarkCompile: compiling a module cold (no cache) and from a warm
// on-disk cache with a fresh runtime, as a new process would: the
// Go-built zstd (4 MB) and the C-built zstd and lz4.
func BenchmarkCompile(b *testing.B) {
	ctx := context.Background()
	for _, name := range []string{"zstd", "zstd-c", "lz4-c"} {
		dir := b.TempDir()
		bytes, err := os.ReadFile(modules[name])
		if err != nil {
			b.Fatal(err)
		}
		for _, c := range []struct{ name, cache string }{{"cold", "-"}, {"cached", dir}} {
			if c.cache != "-" { // warm it
				m, err := wasm.LoadBytes(ctx, name+".wasm", bytes, wasm.Config{CacheDir: c.cache})
				if err != nil {
					b.Fatal(err)
				}
				m.Close(ctx)
			}
			b.Run(name+"/"+c.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					m, err := wasm.LoadBytes(ctx, name+".wasm", bytes, wasm.Config{CacheDir: c.cache})
					if err != nil {
						b.Fatal(err)
					}
					m.Close(ctx)
				}
			})
		}
	}
}

// BenchmarkInstantiate is the cost of one channel: a new instance of the
// module with its buffers and send setup, and its cleanup.
func BenchmarkInstantiate(b *testing.B) {
	for _, name := range []string{"zstd", "zstd-c", "lz4-c"} {
		m := load(b, name, wasm.Config{})
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				s, err := m.NewSender(0, sdk.Options{})
				if err != nil {
					b.Fatal(err)
				}
				s.Close()
			}
		})
	}
}

// tier is one way of running a codec, for the side-by-side benchmarks.
type tier struct {
	name string
	m    sdk.Method
}

// tiers returns codec built in, as the Go-built module (checked, the
// default, and trusted) and as the C-built module (fast tier).
func tiers(b *testing.B, codec string) []tier {
	return []tier{
		{"builtin", builtinMethod(b, codec)},
		{"go-wasm", load(b, codec, wasm.Config{})},
		{"go-wasm-trusted", load(b, codec, wasm.Config{Trusted: true})},
		{"c-wasm", load(b, codec+"-c", wasm.Config{})},
	}
}

// BenchmarkTiers transfers a real guest image end to end (2 channels,
// in-memory pipe) with zstd and lz4 run by each tier on both ends, side by
// side in every iteration. X-MB/s is each tier's throughput, X/builtin its
// fraction of the built-in's (issue 7's target: c-wasm/builtin >= 0.6).
func BenchmarkTiers(b *testing.B) {
	img := corpusImage(b)
	dst := make([]byte, len(img))
	src := core.Blocks{{Name: "pc.ram", Data: img}}
	for _, codec := range []string{"zstd", "lz4"} {
		ts := tiers(b, codec)
		b.Run(codec, func(b *testing.B) {
			b.SetBytes(int64(len(img)))
			b.ReportAllocs()
			took := make([]time.Duration, len(ts))
			for n := 0; b.Loop(); n++ {
				for k := range ts { // a different tier first each time
					i := (n + k) % len(ts)
					took[i] += xfer.MustTime(b, src, dst, ts[i].m, ts[i].m)
				}
			}
			report(b, ts, took, float64(len(img))*float64(b.N)/1e6)
		})
	}
}

// report puts each tier's MB/s and its fraction of the first tier's
// into b's metrics.
func report(b *testing.B, ts []tier, took []time.Duration, mb float64) {
	for i, t := range ts {
		b.ReportMetric(mb/took[i].Seconds(), t.name+"-MB/s")
		if i > 0 {
			b.ReportMetric(took[0].Seconds()/took[i].Seconds(), t.name+"/builtin")
		}
	}
}

// BenchmarkCodecTiers is one core compressing, then decompressing, every
// non-zero page of a real guest image packet by packet through one
// channel's Sender and Receiver of each tier, the tiers taking turns at
// every packet (compress and decompress are timed apart; the guest-memory
// copies of the Wasm tiers are included).
func BenchmarkCodecTiers(b *testing.B) {
	img := corpusImage(b)
	pkts, pages := corpus.Packets(img)
	size := pages * 4096
	o := sdk.Options{PageSize: 4096, PacketPages: 128}
	dst := make([][]byte, 128)
	for i := range dst {
		dst[i] = make([]byte, 4096)
	}
	for _, codec := range []string{"zstd", "lz4"} {
		ts := tiers(b, codec)
		// Every tier's payloads, made once for the decompress side.
		payloads := make([][][]byte, len(ts))
		for i, t := range ts {
			snd, err := t.m.NewSender(0, o)
			if err != nil {
				b.Fatal(err)
			}
			for _, p := range pkts {
				out, err := snd.Prepare(&sdk.Packet{Pages: p}, nil)
				if err != nil {
					b.Fatal(err)
				}
				payloads[i] = append(payloads[i], out)
			}
			snd.Close()
		}
		b.Run(codec+"/compress", func(b *testing.B) {
			b.SetBytes(int64(size))
			b.ReportAllocs()
			took := make([]time.Duration, len(ts))
			wire := make([]int, len(ts))
			payload := make([]byte, 0, sdk.MaxPayload(128, 4096))
			snds := make([]sdk.Sender, len(ts))
			var err error
			for b.Loop() {
				for i, t := range ts {
					if snds[i], err = t.m.NewSender(0, o); err != nil {
						b.Fatal(err)
					}
					wire[i] = 0
				}
				// Packet by packet, every tier in turn: a change in the
				// machine's load hits all tiers alike.
				for _, p := range pkts {
					for i, snd := range snds {
						start := time.Now()
						if payload, err = snd.Prepare(&sdk.Packet{Pages: p}, payload[:0]); err != nil {
							b.Fatal(err)
						}
						took[i] += time.Since(start)
						wire[i] += len(payload)
					}
				}
				for _, snd := range snds {
					snd.Close()
				}
			}
			report(b, ts, took, float64(size)*float64(b.N)/1e6)
			for i, t := range ts {
				b.ReportMetric(float64(size)/float64(wire[i]), t.name+"-ratio")
			}
		})
		b.Run(codec+"/decompress", func(b *testing.B) {
			b.SetBytes(int64(size))
			b.ReportAllocs()
			took := make([]time.Duration, len(ts))
			rcvs := make([]sdk.Receiver, len(ts))
			var err error
			for b.Loop() {
				for i, t := range ts {
					if rcvs[i], err = t.m.NewReceiver(0, o); err != nil {
						b.Fatal(err)
					}
				}
				for j, p := range pkts {
					for i, rcv := range rcvs {
						start := time.Now()
						if err := rcv.Recv(&sdk.Packet{Pages: dst[:len(p)]}, payloads[i][j]); err != nil {
							b.Fatal(err)
						}
						took[i] += time.Since(start)
					}
				}
				for _, rcv := range rcvs {
					rcv.Close()
				}
			}
			report(b, ts, took, float64(size)*float64(b.N)/1e6)
		})
	}
}

// BenchmarkPacketTiers is one packet of 128 real guest pages through a
// long-lived Sender and Receiver of each tier per iteration (prepare,
// then recv), as a channel runs in steady state: allocs/op is per packet.
func BenchmarkPacketTiers(b *testing.B) {
	img := corpusImage(b)
	pkts, _ := corpus.Packets(img)
	pkts = pkts[:len(pkts)-1] // full packets only
	o := sdk.Options{PageSize: 4096, PacketPages: 128}
	for _, codec := range []string{"zstd", "lz4"} {
		for _, t := range tiers(b, codec) {
			b.Run(codec+"/"+t.name, func(b *testing.B) {
				snd, err := t.m.NewSender(0, o)
				if err != nil {
					b.Fatal(err)
				}
				defer snd.Close()
				rcv, err := t.m.NewReceiver(0, o)
				if err != nil {
					b.Fatal(err)
				}
				defer rcv.Close()
				payload := make([]byte, 0, sdk.MaxPayload(128, 4096))
				dst := make([][]byte, 128)
				for i := range dst {
					dst[i] = make([]byte, 4096)
				}
				sp, rp := sdk.Packet{}, sdk.Packet{Pages: dst}
				step := func(i int) {
					sp.Pages = pkts[i%len(pkts)]
					if payload, err = snd.Prepare(&sp, payload[:0]); err != nil {
						b.Fatal(err)
					}
					if err := rcv.Recv(&rp, payload); err != nil {
						b.Fatal(err)
					}
				}
				for i := range pkts { // warm up: decoders size their tables once
					step(i)
				}
				b.SetBytes(128 * 4096)
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					step(i)
					i++
				}
			})
		}
	}
}
