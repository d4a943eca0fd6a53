package vmbus_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/pagewire/pagewire/vmbus"
)

var benchSizes = []struct {
	name string
	n    int
}{{"64B", 64}, {"4KiB", 4 << 10}, {"64KiB", 64 << 10}}

// BenchmarkTransfer moves packets from one goroutine to another through a
// 1 MiB ring, compared in the same run with a unix SOCK_SEQPACKET
// socketpair (one write and one read syscall per packet) and with a plain
// memcpy of the payload (the floor: the ring copies each payload twice).
func BenchmarkTransfer(b *testing.B) {
	for _, s := range benchSizes {
		b.Run("ring/"+s.name, func(b *testing.B) { benchRing(b, s.n) })
		b.Run("socketpair/"+s.name, func(b *testing.B) { benchSocketpair(b, s.n) })
		b.Run("memcpy/"+s.name, func(b *testing.B) { benchMemcpy(b, s.n) })
	}
}

func benchRing(b *testing.B, size int) {
	g := newRig(b, 1<<20+vmbus.HeaderSize, 0, vmbus.Config{MaxPacketSize: vmbus.MaxPacketLen})
	payload, buf := pattern(1, size), make([]byte, pad8(size))
	ctx := context.Background()
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	var werr error
	wg.Go(func() {
		for i := range b.N {
			if err := g.ring.Write(ctx, inband(uint64(i)), payload); err != nil {
				werr = err
				g.ring.Close()
				return
			}
		}
	})
	for range b.N {
		if _, _, err := g.ring.Read(ctx, buf); err != nil {
			b.Error(err)
			break
		}
	}
	wg.Wait()
	if werr != nil {
		b.Fatal(werr)
	}
	b.StopTimer()
	c := g.ring.Counters()
	b.ReportMetric(float64(g.toReader.Count())/float64(b.N), "datasig/op")
	b.ReportMetric(float64(c.WriterBlocks)/float64(b.N), "blocks/op")
}

func benchSocketpair(b *testing.B, size int) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Skip("socketpair:", err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	for _, fd := range fds { // as much buffering as the ring has, if allowed
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 1<<20)
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 1<<20)
	}
	payload, buf := pattern(1, size), make([]byte, size)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	var werr error
	wg.Go(func() {
		for range b.N {
			if _, err := unix.Write(fds[0], payload); err != nil {
				werr = err
				unix.Shutdown(fds[0], unix.SHUT_RDWR)
				return
			}
		}
	})
	for range b.N {
		n, err := unix.Read(fds[1], buf)
		if err != nil || n != size {
			b.Error(fmt.Errorf("read %d bytes: %v", n, err))
			break
		}
	}
	wg.Wait()
	if werr != nil {
		b.Fatal(werr)
	}
}

func benchMemcpy(b *testing.B, size int) {
	src, dst := pattern(1, size), make([]byte, size)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	for b.Loop() {
		copy(dst, src)
	}
}
