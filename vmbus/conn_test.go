package vmbus_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pagewire/pagewire/vmbus"
)

// seqpacketPair returns the two ends of a unix SOCK_SEQPACKET socketpair.
func seqpacketPair(t testing.TB) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var conns [2]*net.UnixConn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "seqpacket")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c.(*net.UnixConn)
	}
	return conns[0], conns[1]
}

var (
	ifType     = [16]byte{0xf0, 0x0d}
	ifInstance = [16]byte{0xbe, 0xef}
)

// offers is a primary (relid 1) with n sub-channels (relids 2..n+1).
func offers(n int) []vmbus.Offer {
	out := []vmbus.Offer{{IfType: ifType, IfInstance: ifInstance, Relid: 1, ConnectionID: 1}}
	for i := 1; i <= n; i++ {
		out = append(out, vmbus.Offer{IfType: ifType, IfInstance: ifInstance, Relid: uint32(i + 1), SubChannelIndex: uint16(i)})
	}
	return out
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// pair connects a guest and a host in this process.
func pair(t testing.TB, gcfg vmbus.GuestConfig, hcfg vmbus.HostConfig) (*vmbus.Guest, *vmbus.Host) {
	t.Helper()
	gc, hc := seqpacketPair(t)
	h, err := vmbus.NewHost(hc, hcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	g, err := vmbus.NewGuest(ctxT(t), gc, gcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g, h
}

func TestConnectOffersOpenClose(t *testing.T) {
	small := vmbus.ChannelConfig{SendSize: 16 * vmbus.PageSize, RecvSize: 8 * vmbus.PageSize, FrameSize: 1000}
	g, h := pair(t, vmbus.GuestConfig{Channel: small}, vmbus.HostConfig{Offers: offers(3)})
	if g.State() != vmbus.Connected || g.Version() != vmbus.VersionV5_3 {
		t.Fatalf("state %v version %#x", g.State(), g.Version())
	}
	got := g.Offers()
	if len(got) != 4 || got[0].Relid != 1 || got[3].SubChannelIndex != 3 {
		t.Fatalf("offers %+v", got)
	}
	if o, ok := g.Lookup(3); !ok || o.SubChannelIndex != 2 {
		t.Fatalf("lookup sub-channel relid 3: %+v %v", o, ok)
	}
	if _, ok := g.Lookup(9); ok {
		t.Fatal("lookup of an unknown relid succeeded")
	}
	ctx := ctxT(t)
	for _, relid := range []uint32{1, 2, 4} {
		gch, err := g.Open(ctx, relid)
		if err != nil {
			t.Fatal(err)
		}
		hch, err := h.Accept(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if hch.Relid() != relid || hch.SubChannel() != gch.SubChannel() {
			t.Fatalf("host got relid %d sub %d, guest opened %d sub %d", hch.Relid(), hch.SubChannel(), relid, gch.SubChannel())
		}
		exchange(t, gch, hch, 100_000)
		if _, err := g.Open(ctx, relid); err == nil {
			t.Fatal("second open of an open channel succeeded")
		}
		if err := gch.Close(); err != nil {
			t.Fatal(err)
		}
		if n, err := hch.Read(make([]byte, 10)); err != io.EOF {
			t.Fatalf("host read after the guest closed: %d, %v", n, err)
		}
		if _, err := hch.Write([]byte("x")); err == nil {
			t.Fatal("host write to a closed channel succeeded")
		}
		hch.Close()
	}
	if _, err := g.Open(ctx, 1); err != nil { // closed channels open again
		t.Fatalf("reopen: %v", err)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-h.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("host did not see the guest go")
	}
	if g.State() != vmbus.Disconnected || h.State() != vmbus.Disconnected {
		t.Fatalf("states after close: guest %v host %v", g.State(), h.State())
	}
}

// exchange moves n bytes each way at once, in odd-sized writes.
func exchange(t *testing.T, a, b io.ReadWriter, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for i, rw := range []io.ReadWriter{a, b} {
		src := pattern(i+1, n)
		wg.Go(func() {
			for p := src; len(p) > 0; {
				k := min(len(p), 777*(i+1))
				if _, err := rw.Write(p[:k]); err != nil {
					errs <- err
					return
				}
				p = p[k:]
			}
		})
		other := []io.ReadWriter{b, a}[i]
		wg.Go(func() {
			got := make([]byte, n)
			if _, err := io.ReadFull(other, got); err != nil {
				errs <- err
				return
			}
			if !bytes.Equal(got, src) {
				errs <- errors.New("bytes differ")
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestVersionWalkDown(t *testing.T) {
	g, h := pair(t, vmbus.GuestConfig{}, vmbus.HostConfig{Versions: []uint32{vmbus.VersionWin8}, Offers: offers(0)})
	if g.Version() != vmbus.VersionWin8 || h.Version() != vmbus.VersionWin8 {
		t.Fatalf("versions %#x %#x", g.Version(), h.Version())
	}
}

func TestNoCommonVersion(t *testing.T) {
	gc, hc := seqpacketPair(t)
	h, err := vmbus.NewHost(hc, vmbus.HostConfig{Versions: []uint32{vmbus.VersionWin7}})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	_, err = vmbus.NewGuest(ctxT(t), gc, vmbus.GuestConfig{Versions: []uint32{vmbus.VersionV5_3, vmbus.VersionWin10}})
	if !errors.Is(err, vmbus.ErrNoVersion) {
		t.Fatalf("got %v, want ErrNoVersion", err)
	}
}

func TestRescind(t *testing.T) {
	g, h := pair(t, vmbus.GuestConfig{Channel: vmbus.ChannelConfig{SendSize: 3 * vmbus.PageSize, RecvSize: 3 * vmbus.PageSize}},
		vmbus.HostConfig{Offers: offers(1)})
	ctx := ctxT(t)
	gch, err := g.Open(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer gch.Close()
	hch, err := h.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The guest fills the ring; its blocked Write ends with the rescind.
	werr := make(chan error, 1)
	go func() {
		_, err := gch.Write(make([]byte, 1<<20))
		werr <- err
	}()
	time.Sleep(20 * time.Millisecond)
	if err := h.Rescind(2); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-werr:
		if !errors.Is(err, vmbus.ErrRescinded) {
			t.Fatalf("write: %v, want ErrRescinded", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("write not released by the rescind")
	}
	hch.Close()
	if _, err := g.Open(ctx, 2); !errors.Is(err, vmbus.ErrRescinded) && !errors.Is(err, vmbus.ErrUnknownChannel) {
		t.Fatalf("open after rescind: %v", err)
	}
	if err := h.Rescind(2); err == nil {
		t.Fatal("second rescind succeeded")
	}
}

func TestPeerGone(t *testing.T) {
	g, h := pair(t, vmbus.GuestConfig{}, vmbus.HostConfig{Offers: offers(0)})
	ctx := ctxT(t)
	gch, err := g.Open(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer gch.Close()
	hch, err := h.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hch.Write([]byte("last words")); err != nil {
		t.Fatal(err)
	}
	h.Close()
	hch.Close()
	buf := make([]byte, 64)
	n, err := gch.Read(buf)
	if string(buf[:n]) != "last words" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	// The host's Close wrote an end-of-stream frame: EOF, or the peer is
	// gone if the connection ended first.
	if _, err := gch.Read(buf); err != io.EOF && !errors.Is(err, vmbus.ErrPeerGone) {
		t.Fatalf("read after the host went: %v", err)
	}
	select {
	case <-g.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("guest did not see the host go")
	}
	if !errors.Is(g.Err(), vmbus.ErrPeerGone) {
		t.Fatalf("guest error %v", g.Err())
	}
}

func TestPipeDeadline(t *testing.T) {
	a, b, err := vmbus.NewPipe(vmbus.ChannelConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	defer b.Close()
	a.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, err = a.Read(make([]byte, 1))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past deadline: %v", err)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("not a net.Error timeout: %v", err)
	}
	a.SetReadDeadline(time.Time{})
	exchange(t, a, b, 3<<20)
}

// TestChannelCommitsPerFrame: a reader that never finds the ring empty
// still gives the space back (one goroutine, write then read, many times
// the ring's size).
func TestChannelCommitsPerFrame(t *testing.T) {
	a, b, err := vmbus.NewPipe(vmbus.ChannelConfig{SendSize: 3 * vmbus.PageSize, RecvSize: 3 * vmbus.PageSize})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	defer b.Close()
	a.SetWriteDeadline(time.Now().Add(10 * time.Second))
	src, dst := pattern(5, 3000), make([]byte, 3000)
	for i := range 100 {
		if _, err := a.Write(src); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		if _, err := io.ReadFull(b, dst[:1000]); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(b, dst[1000:]); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(src, dst) {
			t.Fatal("bytes differ")
		}
	}
}
