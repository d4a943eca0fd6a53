package plugins_test

import (
	"bytes"
	"fmt"
	"io"
	"testing"
	"time"

	kzlib "github.com/klauspost/compress/zlib"
	kzstd "github.com/klauspost/compress/zstd"
	plz4 "github.com/pierrec/lz4/v4"

	"github.com/pagewire/pagewire/internal/corpus"
	"github.com/pagewire/pagewire/sdk"
)

// library is the same work done by calling the codec library directly:
// the baseline a method's overhead is measured against.
type library struct {
	compress func(pkts [][][]byte) [][]byte // payload per packet
	// decoder prepares, untimed, what decompress needs and returns the
	// timed part.
	decoder func(payloads [][]byte, pkts [][][]byte) func(dst []byte)
}

var libraries = map[string]func() library{
	"zlib": func() library {
		return library{
			compress: func(pkts [][][]byte) [][]byte {
				var buf bytes.Buffer
				w, _ := kzlib.NewWriterLevel(&buf, 1)
				return flushed(w, &buf, pkts)
			},
			decoder: func(payloads [][]byte, pkts [][][]byte) func(dst []byte) {
				stream := bytes.Join(payloads, nil)
				return func(dst []byte) {
					r, _ := kzlib.NewReader(bytes.NewReader(stream))
					for _, p := range pkts {
						for range p {
							io.ReadFull(r, dst)
						}
					}
				}
			},
		}
	},
	"zstd":         kzstdLibrary,
	"zstd-libzstd": kzstdLibrary, // the native tier against the pure-Go library
	"lz4": func() library {
		return library{
			compress: func(pkts [][][]byte) [][]byte {
				var c plz4.Compressor
				out := make([][]byte, len(pkts))
				buf := make([]byte, plz4.CompressBlockBound(4096))
				for i, p := range pkts {
					o := make([]byte, 0, len(p)*len(buf))
					for _, pg := range p {
						n, _ := c.CompressBlock(pg, buf)
						o = append(o, buf[:n]...)
					}
					out[i] = o
				}
				return out
			},
			decoder: func(payloads [][]byte, pkts [][][]byte) func(dst []byte) {
				// One block per page, as the method's payload holds them.
				var c plz4.Compressor
				var blocks [][]byte
				for _, p := range pkts {
					for _, pg := range p {
						buf := make([]byte, plz4.CompressBlockBound(4096))
						n, _ := c.CompressBlock(pg, buf)
						if n == 0 || n >= len(pg) {
							blocks = append(blocks, nil) // stored: a copy
							continue
						}
						blocks = append(blocks, buf[:n])
					}
				}
				flat := make([][]byte, 0, len(blocks))
				for _, p := range pkts {
					flat = append(flat, p...)
				}
				return func(dst []byte) {
					for i, bl := range blocks {
						if bl == nil {
							copy(dst, flat[i])
							continue
						}
						plz4.UncompressBlock(bl, dst)
					}
				}
			},
		}
	},
}

// flushed writes each packet's pages through w, a streaming encoder
// writing to buf, and flushes it: one payload per packet, as QEMU's zlib
// and zstd lay out a channel's stream.
func flushed(w interface {
	io.Writer
	Flush() error
}, buf *bytes.Buffer, pkts [][][]byte) [][]byte {
	out := make([][]byte, len(pkts))
	for i, p := range pkts {
		for _, pg := range p {
			w.Write(pg)
		}
		w.Flush()
		out[i] = bytes.Clone(buf.Bytes())
		buf.Reset()
	}
	return out
}

// kzstdLibrary is klauspost/compress's zstd at the level and window the
// pure-Go method uses.
func kzstdLibrary() library {
	return library{
		compress: func(pkts [][][]byte) [][]byte {
			var buf bytes.Buffer
			w, _ := kzstd.NewWriter(&buf, kzstd.WithEncoderLevel(kzstd.SpeedFastest), kzstd.WithEncoderConcurrency(1), kzstd.WithEncoderCRC(false), kzstd.WithWindowSize(1<<20))
			return flushed(w, &buf, pkts)
		},
		decoder: func(payloads [][]byte, pkts [][][]byte) func(dst []byte) {
			stream := bytes.Join(payloads, nil)
			return func(dst []byte) {
				r, _ := kzstd.NewReader(bytes.NewReader(stream), kzstd.WithDecoderConcurrency(1), kzstd.WithDecoderLowmem(true))
				defer r.Close()
				for _, p := range pkts {
					for range p {
						io.ReadFull(r, dst)
					}
				}
			}
		},
	}
}

// BenchmarkMethodVsLibrary compresses and decompresses every non-zero page
// of each corpus image, packet by packet, with the pagewire method and
// with its codec library called directly, side by side in every
// iteration. method/lib is the method's throughput over the library's
// (target: at least 0.95); ratio is raw bytes over compressed bytes.
// zstd-libzstd (a build with the libzstd tag) is compared with
// klauspost/compress, the library the pure-Go zstd calls: its method/lib
// is the native tier's gain, not an overhead.
func BenchmarkMethodVsLibrary(b *testing.B) {
	images, err := corpus.List()
	if err != nil {
		b.Fatal(err)
	}
	for _, im := range images {
		img, err := im.Load()
		if err != nil {
			b.Fatal(err)
		}
		pkts, pages := corpus.Packets(img)
		for _, m := range methods[1:] {
			name := label(m)
			lib := libraries[name]()
			b.Run(fmt.Sprintf("%s/%s/compress", im.Name, name), func(b *testing.B) {
				b.SetBytes(int64(pages * ps))
				b.ReportAllocs()
				var tm, tl time.Duration
				var wire int
				for b.Loop() {
					snd, _ := m.NewSender(0, opts)
					payload := make([]byte, 0, sdk.MaxPayload(128, ps))
					start := time.Now()
					wire = 0
					for _, p := range pkts {
						payload, _ = snd.Prepare(&sdk.Packet{Pages: p}, payload[:0])
						wire += len(payload)
					}
					tm += time.Since(start)
					snd.Close()
					start = time.Now()
					lib.compress(pkts)
					tl += time.Since(start)
				}
				mb := float64(pages*ps) * float64(b.N) / 1e6
				b.ReportMetric(mb/tm.Seconds(), "method-MB/s")
				b.ReportMetric(mb/tl.Seconds(), "lib-MB/s")
				b.ReportMetric(tl.Seconds()/tm.Seconds(), "method/lib")
				b.ReportMetric(float64(pages*ps)/float64(wire), "ratio")
			})
			b.Run(fmt.Sprintf("%s/%s/decompress", im.Name, name), func(b *testing.B) {
				snd, _ := m.NewSender(0, opts)
				payloads := make([][]byte, len(pkts))
				for i, p := range pkts {
					out, _ := snd.Prepare(&sdk.Packet{Pages: p}, nil)
					payloads[i] = out
				}
				snd.Close()
				dst := alloc(128)
				libDecode := lib.decoder(payloads, pkts)
				b.SetBytes(int64(pages * ps))
				b.ReportAllocs()
				var tm, tl time.Duration
				for b.Loop() {
					rcv, _ := m.NewReceiver(0, opts)
					start := time.Now()
					for i, p := range pkts {
						if err := rcv.Recv(&sdk.Packet{Pages: dst[:len(p)]}, payloads[i]); err != nil {
							b.Fatal(err)
						}
					}
					tm += time.Since(start)
					rcv.Close()
					start = time.Now()
					libDecode(dst[0])
					tl += time.Since(start)
				}
				mb := float64(pages*ps) * float64(b.N) / 1e6
				b.ReportMetric(mb/tm.Seconds(), "method-MB/s")
				b.ReportMetric(mb/tl.Seconds(), "lib-MB/s")
				b.ReportMetric(tl.Seconds()/tm.Seconds(), "method/lib")
			})
		}
	}
}

// BenchmarkMethodPacket is one packet of 128 real guest pages through a
// long-lived sender and receiver per iteration (prepare, then recv), as a
// channel does in steady state: allocs/op is per packet and must be 0.
func BenchmarkMethodPacket(b *testing.B) {
	images, err := corpus.List()
	if err != nil {
		b.Fatal(err)
	}
	img, err := images[0].Load()
	if err != nil {
		b.Fatal(err)
	}
	pkts, _ := corpus.Packets(img)
	pkts = pkts[:len(pkts)-1] // full packets only
	for _, m := range methods {
		b.Run(label(m), func(b *testing.B) {
			snd, _ := m.NewSender(0, opts)
			rcv, _ := m.NewReceiver(0, opts)
			defer snd.Close()
			defer rcv.Close()
			payload := make([]byte, 0, sdk.MaxPayload(128, ps))
			dst := alloc(128)
			var sp, rp sdk.Packet
			rp.Pages = dst
			// Warm up over every packet once: stream methods set up their
			// decoders, and size their tables to the largest they meet,
			// once per transfer.
			for _, p := range pkts {
				sp.Pages = p
				payload, _ = snd.Prepare(&sp, payload[:0])
				if err := rcv.Recv(&rp, payload); err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(128 * ps)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				sp.Pages = pkts[i%len(pkts)]
				i++
				payload, _ = snd.Prepare(&sp, payload[:0])
				if err := rcv.Recv(&rp, payload); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
