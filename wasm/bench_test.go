package wasm_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/pagewire/pagewire/internal/corpus"
	"github.com/pagewire/pagewire/internal/xfer"
	"github.com/pagewire/pagewire/sdk"
	"github.com/pagewire/pagewire/wasm"
)

// transferTime is xfer.Time, failing the benchmark on error.
func transferTime(b *testing.B, img, dst []byte, ms, mr sdk.Method) time.Duration {
	d, err := xfer.Time(img, dst, ms, mr)
	if err != nil {
		b.Fatal(err)
	}
	return d
}

// BenchmarkWasmVsBuiltin transfers a real guest image end to end with each
// method built in and as a Wasm plugin on both ends, side by side in every
// iteration; wasm/builtin is the plugin's throughput over the built-in's.
func BenchmarkWasmVsBuiltin(b *testing.B) {
	images, err := corpus.List()
	if err != nil {
		b.Fatal(err)
	}
	img, err := images[0].Load()
	if err != nil {
		b.Fatal(err)
	}
	dst := make([]byte, len(img))
	for _, c := range []struct {
		name    string
		trusted bool
	}{{"nocomp", false}, {"lz4", false}, {"zstd", false}, {"zlib", false}, {"lz4", true}, {"zstd", true}} {
		name := c.name
		w := load(b, name, wasm.Config{Trusted: c.trusted})
		bi := builtin(b, name)
		label := name
		if c.trusted {
			label += "/trusted"
		}
		b.Run(label, func(b *testing.B) {
			b.SetBytes(int64(len(img)))
			var tw, tb time.Duration
			for b.Loop() {
				tb += transferTime(b, img, dst, bi, bi)
				tw += transferTime(b, img, dst, w, w)
			}
			mb := float64(len(img)) * float64(b.N) / 1e6
			b.ReportMetric(mb/tb.Seconds(), "builtin-MB/s")
			b.ReportMetric(mb/tw.Seconds(), "wasm-MB/s")
			b.ReportMetric(tb.Seconds()/tw.Seconds(), "wasm/builtin")
		})
	}
}

// BenchmarkCompile: compiling the zstd module cold (no cache) and from a
// warm on-disk cache with a fresh runtime, as a new process would.
func BenchmarkCompile(b *testing.B) {
	dir := b.TempDir()
	ctx := context.Background()
	bytes, err := os.ReadFile(modules["zstd"])
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct{ name, cache string }{{"cold", "-"}, {"cached", dir}} {
		if c.cache != "-" { // warm it
			m, err := wasm.LoadBytes(ctx, "zstd.wasm", bytes, wasm.Config{CacheDir: c.cache})
			if err != nil {
				b.Fatal(err)
			}
			m.Close(ctx)
		}
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				m, err := wasm.LoadBytes(ctx, "zstd.wasm", bytes, wasm.Config{CacheDir: c.cache})
				if err != nil {
					b.Fatal(err)
				}
				m.Close(ctx)
			}
		})
	}
}

// BenchmarkInstantiate is the cost of one channel: a new instance of the
// zstd module with its buffers and send setup.
func BenchmarkInstantiate(b *testing.B) {
	m := load(b, "zstd", wasm.Config{})
	for b.Loop() {
		s, err := m.NewSender(0, sdk.Options{})
		if err != nil {
			b.Fatal(err)
		}
		s.Close()
	}
}
