package goplugin_test

import (
	"bytes"
	"testing"

	"github.com/pagewire/pagewire/core"
	"github.com/pagewire/pagewire/goplugin"
	"github.com/pagewire/pagewire/internal/corpus"
	"github.com/pagewire/pagewire/internal/pagegen"
	"github.com/pagewire/pagewire/internal/xfer"
	"github.com/pagewire/pagewire/plugins/builtin"
	"github.com/pagewire/pagewire/sdk"
)

// BenchmarkGoPluginVsBuiltin transfers the first corpus image
// (linux-busy-128M) end to end with zstd and lz4 built in and as go-plugin
// binaries on both ends, side by side in every iteration;
// plugin/builtin is the plugin's throughput over the built-in's. Both
// ends are in this process, on the machine's cores with the plugin
// process (cmd/pagewire's BenchmarkTwoHosts gives each end a core).
//
// The source is in shared memory (a memfd), as a VMM's guest RAM is, so
// the plugin maps it ("shared"); "copied" is heap memory, whose pages
// are copied to the plugin.
func BenchmarkGoPluginVsBuiltin(b *testing.B) {
	images, err := corpus.List()
	if err != nil {
		b.Fatal(err)
	}
	img, err := images[0].Load()
	if err != nil {
		b.Fatal(err)
	}
	im, err := core.ReadImage(bytes.NewReader(img), "pc.ram")
	if err != nil {
		b.Fatal(err)
	}
	defer im.Close()
	heap := core.Blocks{{Name: "pc.ram", Data: img}}
	dst := make([]byte, len(img))
	for _, name := range []string{"zstd", "lz4"} {
		gp := load(b, name, goplugin.Config{})
		bi, err := builtin.Methods().Lookup(name)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(name+"/shared", func(b *testing.B) { xfer.Compare(b, im, dst, bi, gp, "plugin") })
		b.Run(name+"/copied", func(b *testing.B) { xfer.Compare(b, heap, dst, bi, gp, "plugin") })
	}
}

// BenchmarkRoundTrip512K is one Prepare of a full 128-page (512 KiB)
// packet with nocomp: the call's cost, both ways, on the data plane and
// with the bytes in the gRPC messages.
func BenchmarkRoundTrip512K(b *testing.B) {
	img := pagegen.Image(128*4096, 4096, 1)
	p := &sdk.Packet{Seq: 1}
	for i := range 128 {
		p.Pages = append(p.Pages, img[i*4096:(i+1)*4096])
	}
	for _, path := range paths {
		b.Run(path.name, func(b *testing.B) {
			m := load(b, "nocomp", path.cfg)
			s, err := m.NewSender(0, sdk.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			out := make([]byte, 0, sdk.MaxPayload(128, 4096))
			b.ReportAllocs()
			b.SetBytes(int64(len(img)))
			for b.Loop() {
				out, err = s.Prepare(p, out[:0])
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkStart is starting a plugin process (handshake, mTLS, Info) and
// killing it.
func BenchmarkStart(b *testing.B) {
	for b.Loop() {
		m, err := goplugin.Load(bins["zstd"], goplugin.Config{})
		if err != nil {
			b.Fatal(err)
		}
		m.Close()
	}
}
