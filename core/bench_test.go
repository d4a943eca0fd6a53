package core_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/pagewire/pagewire/channels"
	"github.com/pagewire/pagewire/core"
	"github.com/pagewire/pagewire/internal/corpus"
	"github.com/pagewire/pagewire/internal/pagegen"
	"github.com/pagewire/pagewire/plugins/builtin"
	"github.com/pagewire/pagewire/sdk"
)

// benchImages are the images the end-to-end benchmarks move: a synthetic
// one without zero pages (the engine and the plain copy move exactly the
// same bytes) and a real guest image.
func benchImages(b *testing.B) []struct {
	name string
	img  []byte
} {
	b.Helper()
	out := []struct {
		name string
		img  []byte
	}{}
	img := make([]byte, 128<<20)
	pagegen.Fill(img, 4096, pagegen.Mix{Zero: 0, Text: 40, Binary: 40}, 1)
	out = append(out, struct {
		name string
		img  []byte
	}{"synthetic-nonzero-128M", img})
	images, err := corpus.List()
	if err != nil {
		b.Fatal(err)
	}
	real, err := images[0].Load()
	if err != nil {
		b.Fatal(err)
	}
	return append(out, struct {
		name string
		img  []byte
	}{images[0].Name, real})
}

// engineTransfer moves img with the engine (nocomp) over loopback TCP into
// dst, or into memory the receiver allocates when dst is nil, and returns
// how long it took.
func engineTransfer(b *testing.B, img, dst []byte, n int, m ...sdk.Method) time.Duration {
	ln, d := tcpTransport(b)
	ctx := context.Background()
	start := time.Now()
	var rcfg core.ReceiverConfig
	scfg := core.SenderConfig{Channels: n}
	if len(m) > 0 {
		rcfg.Method, scfg.Method = m[0], m[0]
	}
	if dst != nil {
		rcfg.Memory = core.Blocks{{Name: "pc.ram", Data: dst}}
	}
	rc := receive(ctx, ln, rcfg)
	s, err := core.NewSender(ctx, d, core.Blocks{{Name: "pc.ram", Data: img}}, scfg)
	if err != nil {
		b.Fatal(err)
	}
	if err := s.SendBlock("pc.ram"); err != nil {
		b.Fatal(err)
	}
	st, err := s.Close()
	if err != nil {
		b.Fatal(err)
	}
	if res := wait(b, rc); res.err != nil {
		b.Fatal(res.err)
	}
	lastRatio = st.Ratio()
	return time.Since(start)
}

var lastRatio float64

// BenchmarkTransferMethods moves a real guest image end to end over
// loopback TCP with every built-in method and 1, 2 and 4 channels; MB/s
// is of guest RAM, ratio is RAM bytes per wire byte.
func BenchmarkTransferMethods(b *testing.B) {
	images, err := corpus.List()
	if err != nil {
		b.Fatal(err)
	}
	img, err := images[0].Load()
	if err != nil {
		b.Fatal(err)
	}
	dst := bytes.Clone(img)
	for _, name := range builtin.Methods().Names() {
		m, _ := builtin.Methods().Lookup(name)
		for _, n := range []int{1, 2, 4} {
			b.Run(fmt.Sprintf("%s/%s/ch=%d", images[0].Name, name, n), func(b *testing.B) {
				b.SetBytes(int64(len(img)))
				b.ReportAllocs()
				for b.Loop() {
					engineTransfer(b, img, dst, n, m)
				}
				b.ReportMetric(lastRatio, "ratio")
			})
		}
	}
}

// plainCopy moves img over n loopback TCP connections, each carrying one
// n-th of it, straight into dst, and returns how long it took.
func plainCopy(b *testing.B, img, dst []byte, n int) time.Duration {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	part := (len(img)/n + 4095) &^ 4095
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range n {
			c, err := ln.Accept()
			if err != nil {
				errs <- err
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				var idx [1]byte
				if _, err := io.ReadFull(c, idx[:]); err != nil {
					errs <- err
					return
				}
				lo := min(int(idx[0])*part, len(dst))
				hi := min(lo+part, len(dst))
				if _, err := io.ReadFull(c, dst[lo:hi]); err != nil {
					errs <- err
				}
			}()
		}
	}()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			lo := min(i*part, len(img))
			hi := min(lo+part, len(img))
			if _, err := c.Write([]byte{byte(i)}); err != nil {
				errs <- err
				return
			}
			if _, err := c.Write(img[lo:hi]); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	return el
}

// BenchmarkTransferVsCopy runs, in every iteration, one nocomp transfer
// with the engine and one plain copy of the same image over the same
// number of loopback TCP connections, and reports both rates and their
// ratio (engine / copy; the target is at least 0.9).
func BenchmarkTransferVsCopy(b *testing.B) {
	for _, im := range benchImages(b) {
		for _, n := range []int{1, 4, 8} {
			b.Run(fmt.Sprintf("%s/ch=%d", im.name, n), func(b *testing.B) {
				dst := make([]byte, len(im.img))
				copy(dst, im.img) // fault the destination in
				var te, tc time.Duration
				b.SetBytes(int64(len(im.img)))
				b.ReportAllocs()
				for b.Loop() {
					te += engineTransfer(b, im.img, dst, n)
					tc += plainCopy(b, im.img, dst, n)
				}
				if !bytes.Equal(dst, im.img) {
					b.Fatal("destination differs")
				}
				mb := float64(len(im.img)) * float64(b.N) / 1e6
				b.ReportMetric(mb/te.Seconds(), "engine-MB/s")
				b.ReportMetric(mb/tc.Seconds(), "copy-MB/s")
				b.ReportMetric(tc.Seconds()/te.Seconds(), "engine/copy")
			})
		}
	}
}

// BenchmarkSteadyState keeps one 4-channel transfer open and sends the
// whole image again in every iteration, followed by a Sync: allocs/op is
// what a pre-copy round of 128 MiB costs once the transfer runs.
func BenchmarkSteadyState(b *testing.B) {
	img := make([]byte, 128<<20)
	pagegen.Fill(img, 4096, pagegen.DefaultMix, 2)
	dst := make([]byte, len(img))
	ln, d := tcpTransport(b)
	ctx := context.Background()
	rc := receive(ctx, ln, core.ReceiverConfig{Memory: core.Blocks{{Name: "pc.ram", Data: dst}}})
	s, err := core.NewSender(ctx, d, core.Blocks{{Name: "pc.ram", Data: img}}, core.SenderConfig{Channels: 4})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(img)))
	b.ReportAllocs()
	for b.Loop() {
		if err := s.SendBlock("pc.ram"); err != nil {
			b.Fatal(err)
		}
		if err := s.Sync(); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if _, err := s.Close(); err != nil {
		b.Fatal(err)
	}
	if res := wait(b, rc); res.err != nil {
		b.Fatal(res.err)
	}
	if !bytes.Equal(dst, img) {
		b.Fatal("destination differs")
	}
}

// BenchmarkZeroDetect scans every page of a real guest image for zero
// pages with core.IsZero and with a memcmp-style baseline (bytes.Equal
// against a zero page), side by side.
func BenchmarkZeroDetect(b *testing.B) {
	images, err := corpus.List()
	if err != nil {
		b.Fatal(err)
	}
	img, err := images[0].Load()
	if err != nil {
		b.Fatal(err)
	}
	zero := make([]byte, 4096)
	onlyZero := bytes.Repeat([]byte{1}, 64<<20)
	clear(onlyZero) // real memory, not the kernel's shared zero page
	for _, c := range []struct {
		name string
		img  []byte
	}{{images[0].Name, img}, {"all-zero-64M", onlyZero}} {
		b.Run(c.name+"/IsZero", func(b *testing.B) {
			b.SetBytes(int64(len(c.img)))
			for b.Loop() {
				n := 0
				for off := 0; off < len(c.img); off += 4096 {
					if core.IsZero(c.img[off : off+4096]) {
						n++
					}
				}
				sink = n
			}
		})
		b.Run(c.name+"/memcmp", func(b *testing.B) {
			b.SetBytes(int64(len(c.img)))
			for b.Loop() {
				n := 0
				for off := 0; off < len(c.img); off += 4096 {
					if bytes.Equal(c.img[off:off+4096], zero) {
						n++
					}
				}
				sink = n
			}
		})
	}
}

var sink int

var _ = channels.Addr

// BenchmarkTransferFreshMemory is a whole 4-channel transfer of 1 GiB into
// destination memory the receiver allocates from the sender's block list,
// as the CLI and the demo do: page faults on fresh memory are part of it.
func BenchmarkTransferFreshMemory(b *testing.B) {
	img := pagegen.Image(1<<30, 4096, 1)
	b.SetBytes(int64(len(img)))
	b.ReportAllocs()
	for b.Loop() {
		engineTransfer(b, img, nil, 4)
	}
}
