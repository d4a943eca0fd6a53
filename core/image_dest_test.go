package core_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pagewire/pagewire/core"
	"github.com/pagewire/pagewire/internal/pagegen"
	"github.com/pagewire/pagewire/plugins/builtin"
)

// TestReceiveIntoImage receives into file-backed images (CreateImage, as
// 'recv --out' does), where pages go to the file with pwrite while zero
// pages and hooks use the mapping: on ext4 (the test's temp dir) and
// tmpfs (/dev/shm), nocomp, lz4 and zstd, 4 channels, three rounds
// separated by SYNCs in which pages are rewritten, zeroed and rewritten
// again. The file holds the source's last state, byte for byte.
func TestReceiveIntoImage(t *testing.T) {
	const size = 8 << 20
	for _, dir := range []string{t.TempDir(), "/dev/shm"} {
		for _, method := range []string{"nocomp", "lz4", "zstd"} {
			t.Run(filepath.Base(dir)+"/"+method, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				out, err := os.MkdirTemp(dir, "pagewire-image-test-")
				if err != nil {
					t.Fatal(err)
				}
				defer os.RemoveAll(out)
				path := filepath.Join(out, "out.img")
				var img *core.Image
				ln, d := tcpTransport(t)
				rc := receive(ctx, ln, core.ReceiverConfig{Alloc: func(bs []core.BlockInfo) (core.Memory, error) {
					img, err = core.CreateImage(path, bs[0].Name, int64(bs[0].Size))
					return img, err
				}})
				src := pagegen.Image(size, 4096, 11)
				m, err := builtin.Methods().Lookup(method)
				if err != nil {
					t.Fatal(err)
				}
				s, err := core.NewSender(ctx, d, core.Blocks{{Name: "pc.ram", Data: src}}, core.SenderConfig{Channels: 4, Method: m})
				if err != nil {
					t.Fatal(err)
				}
				if err := s.SendBlock("pc.ram"); err != nil {
					t.Fatal(err)
				}
				// The sender reads pages until the next SYNC: change them
				// only after one.
				if err := s.Sync(); err != nil {
					t.Fatal(err)
				}
				// Round two: every fourth page rewritten, every fifth zeroed.
				var offs []uint64
				for p := 0; p < size/4096; p++ {
					switch {
					case p%5 == 0:
						clear(src[p*4096 : (p+1)*4096])
						offs = append(offs, uint64(p*4096))
					case p%4 == 0:
						src[p*4096] ^= 0xff
						offs = append(offs, uint64(p*4096))
					}
				}
				for _, round := range []int{2, 3} {
					if round == 3 { // zeroed pages come back
						for _, off := range offs {
							src[off+7] = byte(round)
						}
					}
					if err := s.SendPages("pc.ram", offs); err != nil {
						t.Fatal(err)
					}
					if err := s.Sync(); err != nil {
						t.Fatal(err)
					}
				}
				if _, err := s.Close(); err != nil {
					t.Fatal(err)
				}
				if res := wait(t, rc); res.err != nil {
					t.Fatal(res.err)
				}
				if err := img.Close(); err != nil {
					t.Fatal(err)
				}
				got, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, src) {
					n := 0
					for i := 0; i < size; i += 4096 {
						if !bytes.Equal(got[i:i+4096], src[i:i+4096]) {
							n++
						}
					}
					t.Fatalf("the image differs from the source in %d pages", n)
				}
			})
		}
	}
}
