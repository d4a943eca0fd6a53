package vmbus_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pagewire/pagewire/vmbus"
)

// Roles of the peer process in the benchmarks (peerEnv "ROLE:ARG").
// ring-*: a guest that opens channel 1 of the host at the socket ARG;
// sock-*: the end of a SOCK_SEQPACKET socketpair inherited as fd 3. The
// *-stream roles count packets until the stop packet and answer it with
// their signal count; the *-pingpong roles echo every packet.
const (
	stopType = vmbus.PacketSynch // the ring's stop packet
	stopLen  = 1                 // the socket's stop message
)

func benchPeer(role, arg string) int {
	ctx := context.Background()
	buf := make([]byte, vmbus.MaxPacketLen)
	switch role {
	case "ring-stream", "ring-pingpong":
		g, err := vmbus.Dial(ctx, arg, vmbus.GuestConfig{})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer g.Close()
		ch, err := g.Open(ctx, 1)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer ch.Close()
		in, out := ch.In(), ch.Out()
		for {
			d, n, err := in.Read(ctx, buf)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			if d.Type == stopType {
				var b [8]byte
				binary.LittleEndian.PutUint64(b[:], ch.Signals())
				if err := out.Write(ctx, vmbus.Header{Type: stopType}, b[:]); err != nil {
					return 1
				}
				in.Read(ctx, buf) // the host's last word: it has read the answer
				return 0
			}
			if role == "ring-pingpong" {
				if err := out.Write(ctx, vmbus.Header{Type: vmbus.PacketDataInband, TransID: d.TransID}, buf[:n]); err != nil {
					fmt.Fprintln(os.Stderr, err)
					return 1
				}
			}
		}
	case "sock-stream", "sock-pingpong":
		fd := 3
		for {
			n, err := unix.Read(fd, buf)
			if err != nil || n == 0 {
				return 1
			}
			if n == stopLen {
				unix.Write(fd, buf[:1])
				return 0
			}
			if role == "sock-pingpong" {
				if _, err := unix.Write(fd, buf[:n]); err != nil {
					return 1
				}
			}
		}
	}
	return 2
}

// procPeer is a peer process of a benchmark, killed and reaped by Close.
type procPeer struct {
	cmd *exec.Cmd
}

func startBenchPeer(b *testing.B, role, arg string, extra *os.File) *procPeer {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.bench=^$")
	cmd.Env = append(os.Environ(), peerEnv+"=bench-"+role+":"+arg)
	cmd.Stderr = os.Stderr
	if extra != nil {
		cmd.ExtraFiles = []*os.File{extra}
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	p := &procPeer{cmd}
	b.Cleanup(p.close)
	return p
}

func (p *procPeer) close() {
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		<-done
	}
}

// BenchmarkProcesses moves packets between this process and a peer
// process: over a VMBus channel (rings in a shared memfd, eventfd
// signals) and over a unix SOCK_SEQPACKET socketpair (one write and one
// read syscall per packet), with a memcpy of the payload as the floor,
// all in the same run. stream: one-way, as fast as the reader drains;
// pingpong: the peer echoes each packet, ns/op is a round trip. sig/op
// counts the eventfd signals of both ends per packet.
func BenchmarkProcesses(b *testing.B) {
	for _, s := range benchSizes {
		b.Run("ring-stream/"+s.name, func(b *testing.B) { benchProcRing(b, s.n, false) })
		b.Run("unix-stream/"+s.name, func(b *testing.B) { benchProcSock(b, s.n, false) })
		b.Run("ring-pingpong/"+s.name, func(b *testing.B) { benchProcRing(b, s.n, true) })
		b.Run("unix-pingpong/"+s.name, func(b *testing.B) { benchProcSock(b, s.n, true) })
		b.Run("memcpy/"+s.name, func(b *testing.B) { benchMemcpy(b, s.n) })
	}
}

func benchProcRing(b *testing.B, size int, pingpong bool) {
	path := filepath.Join(b.TempDir(), "bench.sock")
	ln, err := vmbus.Listen(path, vmbus.HostConfig{Offers: offers(0)})
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	role := "ring-stream"
	if pingpong {
		role = "ring-pingpong"
	}
	startBenchPeer(b, role, path, nil)
	h, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ch, err := h.Accept(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer ch.Close()
	in, out := ch.In(), ch.Out()
	payload, buf := pattern(1, size), make([]byte, vmbus.MaxPacketLen)
	hdr := vmbus.Header{Type: vmbus.PacketDataInband}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		hdr.TransID = uint64(i)
		if err := out.Write(ctx, hdr, payload); err != nil {
			b.Fatal(err)
		}
		if pingpong {
			if _, n, err := in.Read(ctx, buf); err != nil || n < size {
				b.Fatal(n, err)
			}
		}
	}
	// The stop packet's answer: every packet has been read.
	if err := out.Write(ctx, vmbus.Header{Type: stopType}, nil); err != nil {
		b.Fatal(err)
	}
	d, n, err := in.Read(ctx, buf)
	if err != nil || d.Type != stopType || n < 8 {
		b.Fatal(d, n, err)
	}
	b.StopTimer()
	peerSignals := binary.LittleEndian.Uint64(buf)
	out.Write(ctx, vmbus.Header{Type: stopType}, nil)
	b.ReportMetric(float64(ch.Signals()+peerSignals)/float64(b.N), "sig/op")
}

func benchProcSock(b *testing.B, size int, pingpong bool) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Skip("socketpair:", err)
	}
	for _, fd := range fds { // as much buffering as the ring has, if allowed
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 1<<20)
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 1<<20)
	}
	peer := os.NewFile(uintptr(fds[1]), "peer")
	role := "sock-stream"
	if pingpong {
		role = "sock-pingpong"
	}
	startBenchPeer(b, role, "", peer)
	peer.Close()
	fd := fds[0]
	defer unix.Close(fd)
	payload, buf := pattern(1, size), make([]byte, size)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := unix.Write(fd, payload); err != nil {
			b.Fatal(err)
		}
		if pingpong {
			if n, err := unix.Read(fd, buf); err != nil || n != size {
				b.Fatal(n, err)
			}
		}
	}
	if _, err := unix.Write(fd, payload[:stopLen]); err != nil {
		b.Fatal(err)
	}
	if n, err := unix.Read(fd, buf); err != nil || n != stopLen {
		b.Fatal(n, err)
	}
	b.StopTimer()
}

// BenchmarkPingPong is BenchmarkProcesses' pingpong in one process: a
// VMBus channel pair (NewPipe) and a socketpair, an echo goroutine on
// the far end; ns/op is a round trip.
func BenchmarkPingPong(b *testing.B) {
	for _, s := range benchSizes {
		b.Run("ring/"+s.name, func(b *testing.B) { benchPipePingPong(b, s.n) })
		b.Run("socketpair/"+s.name, func(b *testing.B) { benchSocketpairPingPong(b, s.n) })
	}
}

func benchPipePingPong(b *testing.B, size int) {
	a, z, err := vmbus.NewPipe(vmbus.ChannelConfig{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	var wg sync.WaitGroup
	wg.Go(func() { // echo
		buf := make([]byte, vmbus.MaxPacketLen)
		for {
			d, n, err := z.In().Read(ctx, buf)
			if err != nil || d.Type == stopType {
				return
			}
			if z.Out().Write(ctx, vmbus.Header{Type: vmbus.PacketDataInband}, buf[:n]) != nil {
				return
			}
		}
	})
	payload, buf := pattern(1, size), make([]byte, vmbus.MaxPacketLen)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := a.Out().Write(ctx, vmbus.Header{Type: vmbus.PacketDataInband}, payload); err != nil {
			b.Fatal(err)
		}
		if _, _, err := a.In().Read(ctx, buf); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	a.Out().Write(ctx, vmbus.Header{Type: stopType}, nil)
	wg.Wait()
	b.ReportMetric(float64(a.Signals()+z.Signals())/float64(b.N), "sig/op")
	a.Close()
	z.Close()
}

func benchSocketpairPingPong(b *testing.B, size int) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Skip("socketpair:", err)
	}
	defer unix.Close(fds[0])
	var wg sync.WaitGroup
	wg.Go(func() {
		defer unix.Close(fds[1])
		buf := make([]byte, size)
		for {
			n, err := unix.Read(fds[1], buf)
			if err != nil || n == 0 || n == stopLen {
				return
			}
			if _, err := unix.Write(fds[1], buf[:n]); err != nil {
				return
			}
		}
	})
	payload, buf := pattern(1, size), make([]byte, size)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := unix.Write(fds[0], payload); err != nil {
			b.Fatal(err)
		}
		if _, err := unix.Read(fds[0], buf); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	unix.Write(fds[0], payload[:stopLen])
	wg.Wait()
}

// BenchmarkChannelStream is the stream a transport sees: Channel.Write
// and Read (frames of up to 64 KiB) through a NewPipe pair, against a
// unix stream socketpair through net.Conn.
func BenchmarkChannelStream(b *testing.B) {
	const chunk = 256 << 10
	b.Run("vmbus", func(b *testing.B) {
		a, z, err := vmbus.NewPipe(vmbus.ChannelConfig{})
		if err != nil {
			b.Fatal(err)
		}
		benchStream(b, a, z, chunk)
		a.Close()
		z.Close()
	})
	b.Run("unix", func(b *testing.B) {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			b.Skip(err)
		}
		var conns [2]net.Conn
		for i, fd := range fds {
			f := os.NewFile(uintptr(fd), "s")
			conns[i], _ = net.FileConn(f)
			f.Close()
		}
		benchStream(b, conns[0], conns[1], chunk)
		conns[0].Close()
		conns[1].Close()
	})
}

func benchStream(b *testing.B, w io.Writer, r io.Reader, chunk int) {
	src := pattern(3, chunk)
	b.SetBytes(int64(chunk))
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	wg.Go(func() {
		for range b.N {
			if _, err := w.Write(src); err != nil {
				return
			}
		}
	})
	br := bufio.NewReaderSize(r, 0)
	dst := make([]byte, chunk)
	for range b.N {
		if _, err := io.ReadFull(br, dst); err != nil {
			b.Fatal(err)
		}
	}
	wg.Wait()
}
