package vmbus_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pagewire/pagewire/vmbus"
)

// raw is a peer that speaks the messages by hand: the test is the other
// end of a Guest or a Host.
type raw struct {
	t  testing.TB
	uc *net.UnixConn
}

func (r raw) send(m vmbus.Message, fds ...int) {
	r.t.Helper()
	b, err := vmbus.MarshalMessage(m)
	if err != nil {
		r.t.Fatal(err)
	}
	r.sendBytes(b, fds...)
}

func (r raw) sendBytes(b []byte, fds ...int) {
	r.t.Helper()
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if _, _, err := r.uc.WriteMsgUnix(b, oob, nil); err != nil {
		r.t.Fatal(err)
	}
}

// recv reads one message within 10s; the fds it carried are closed unless
// keep.
func (r raw) recv(keep bool) (vmbus.Message, []int) {
	r.t.Helper()
	b, oob := make([]byte, 256), make([]byte, 64)
	r.uc.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, oobn, _, _, err := r.uc.ReadMsgUnix(b, oob)
	if err != nil {
		r.t.Fatal(err)
	}
	var fds []int
	cms, _ := unix.ParseSocketControlMessage(oob[:oobn])
	for _, c := range cms {
		f, _ := unix.ParseUnixRights(&c)
		fds = append(fds, f...)
	}
	if !keep {
		for _, fd := range fds {
			unix.Close(fd)
		}
		fds = nil
	}
	m, err := vmbus.ParseMessage(b[:n])
	if err != nil {
		r.t.Fatal(err)
	}
	return m, fds
}

// TestGuestAgainstRawHost checks the guest's side of the wire: the
// version walk, GPADL handles from 0xE1E10 with their bodies, the open,
// and the order of close.
func TestGuestAgainstRawHost(t *testing.T) {
	gc, hc := seqpacketPair(t)
	host := raw{t, hc}
	defer hc.Close()
	type result struct {
		g   *vmbus.Guest
		err error
	}
	done := make(chan result, 1)
	go func() {
		g, err := vmbus.NewGuest(context.Background(), gc, vmbus.GuestConfig{
			Channel: vmbus.ChannelConfig{SendSize: 24 * vmbus.PageSize, RecvSize: 16 * vmbus.PageSize}})
		done <- result{g, err}
	}()
	for _, want := range vmbus.Versions[:4] { // refuse 5.3 .. 5.0, take 4.1
		m, _ := host.recv(false)
		if ini, ok := m.(vmbus.Initiate); !ok || ini.Version != want {
			t.Fatalf("got %+v, want INITIATE_CONTACT %#x", m, want)
		}
		host.send(vmbus.VersionResponse{Supported: false})
	}
	if m, _ := host.recv(false); m.(vmbus.Initiate).Version != vmbus.VersionWin10_1 {
		t.Fatalf("got %+v", m)
	}
	host.send(vmbus.VersionResponse{Supported: true})
	if m, _ := host.recv(false); m != (vmbus.BareMsg{Kind: vmbus.MsgRequestOffers}) {
		t.Fatalf("got %+v, want REQUESTOFFERS", m)
	}
	for _, o := range offers(1) {
		host.send(o)
	}
	host.send(vmbus.BareMsg{Kind: vmbus.MsgAllOffersDelivered})
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	g := r.g
	defer g.Close()
	if g.Version() != vmbus.VersionWin10_1 {
		t.Fatalf("version %#x", g.Version())
	}

	opened := make(chan error, 2)
	for _, relid := range []uint32{1, 2} {
		go func() {
			ch, err := g.Open(context.Background(), relid)
			if err == nil {
				ch.Close()
			}
			opened <- err
		}()
		// 40 pages: 26 PFNs in the header, 14 in one body.
		m, fds := host.recv(true)
		h, ok := m.(vmbus.GPADLHeader)
		if !ok || len(fds) != 1 || h.Relid != relid || h.Pages != 40 || len(h.PFNs) != 26 || h.ByteCount != 40*4096 {
			t.Fatalf("got %+v with %d fds", m, len(fds))
		}
		unix.Close(fds[0])
		if want := vmbus.FirstGPADL + relid - 1; h.GPADL != want {
			t.Fatalf("GPADL handle %#x, want %#x", h.GPADL, want)
		}
		m, _ = host.recv(false)
		if b, ok := m.(vmbus.GPADLBody); !ok || len(b.PFNs) != 14 || b.PFNs[0] != 26 || b.GPADL != h.GPADL {
			t.Fatalf("got %+v, want the body", m)
		}
		if relid == 1 {
			// A refused GPADL fails the open and tears nothing down.
			host.send(vmbus.GPADLCreated{Relid: relid, GPADL: h.GPADL, Status: 0xC0000001})
			if err := <-opened; !errors.Is(err, vmbus.ErrRefused) {
				t.Fatalf("open with a refused GPADL: %v", err)
			}
			continue
		}
		host.send(vmbus.GPADLCreated{Relid: relid, GPADL: h.GPADL})
		m, fds = host.recv(false)
		o, ok := m.(vmbus.OpenChannel)
		if !ok || o.GPADL != h.GPADL || o.DownstreamOffset != 24 || o.OpenID != relid {
			t.Fatalf("got %+v, want OPENCHANNEL", m)
		}
		host.send(vmbus.OpenResult{Relid: relid, OpenID: relid})
		// Close: end-of-stream frame in the ring, CLOSECHANNEL, teardown.
		if m, _ := host.recv(false); m != (vmbus.RelidMsg{Kind: vmbus.MsgCloseChannel, Relid: relid}) {
			t.Fatalf("got %+v, want CLOSECHANNEL", m)
		}
		if m, _ := host.recv(false); m != (vmbus.GPADLTeardown{Relid: relid, GPADL: h.GPADL}) {
			t.Fatalf("got %+v, want GPADL_TEARDOWN", m)
		}
		host.send(vmbus.GPADLTorndown{GPADL: h.GPADL})
		if err := <-opened; err != nil {
			t.Fatal(err)
		}
	}
	// Unload at close (4.1 >= WIN8_1).
	closed := make(chan error, 1)
	go func() { closed <- g.Close() }()
	if m, _ := host.recv(false); m != (vmbus.BareMsg{Kind: vmbus.MsgUnload}) {
		t.Fatalf("got %+v, want UNLOAD", m)
	}
	host.send(vmbus.BareMsg{Kind: vmbus.MsgUnloadResponse})
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
}

// TestHostileHost: a host that lies makes the guest fail with a clear
// error, never panic or hang.
func TestHostileHost(t *testing.T) {
	good := func(m vmbus.Message) []byte { b, _ := vmbus.MarshalMessage(m); return b }
	// wait is a step that reads the guest's next message: offers follow
	// REQUEST_OFFERS, as a real host sends them. Sent before it, an offer
	// may meet a guest still connecting and be refused for that instead.
	wait := []byte{}
	cases := []struct {
		name   string
		reply  [][]byte // after the first INITIATE_CONTACT; nil hangs up, wait reads
		want   error
		detail string // in the error's text, when set
	}{
		{"garbage", [][]byte{{1, 2, 3}}, vmbus.ErrBadMessage, ""},
		{"unknown type", [][]byte{make([]byte, 40)}, vmbus.ErrBadMessage, ""},
		{"offer before version", [][]byte{good(vmbus.Offer{Relid: 1})}, vmbus.ErrBadMessage, ""},
		{"wrong direction", [][]byte{good(vmbus.VersionResponse{Supported: true}), wait, good(vmbus.BareMsg{Kind: vmbus.MsgRequestOffers})}, vmbus.ErrBadMessage, ""},
		{"duplicate offer", [][]byte{good(vmbus.VersionResponse{Supported: true}), wait, good(vmbus.Offer{Relid: 3}), good(vmbus.Offer{Relid: 3})}, vmbus.ErrBadMessage, "already offered"},
		{"relid out of range", [][]byte{good(vmbus.VersionResponse{Supported: true}), wait, good(vmbus.Offer{Relid: 2048})}, vmbus.ErrBadMessage, "child_relid"},
		{"silence", nil, vmbus.ErrTimeout, ""},
		{"hangs up", [][]byte{nil}, vmbus.ErrPeerGone, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			gc, hc := seqpacketPair(t)
			host := raw{t, hc}
			defer hc.Close()
			done := make(chan error, 1)
			go func() {
				g, err := vmbus.NewGuest(context.Background(), gc, vmbus.GuestConfig{Timeout: 300 * time.Millisecond})
				if err == nil {
					g.Close()
				}
				done <- err
			}()
			host.recv(false)
			for _, b := range c.reply {
				if b == nil {
					hc.Close()
					break
				}
				if len(b) == 0 {
					if m, _ := host.recv(false); m != (vmbus.BareMsg{Kind: vmbus.MsgRequestOffers}) {
						t.Fatalf("got %+v, want REQUESTOFFERS", m)
					}
					continue
				}
				host.sendBytes(b)
			}
			select {
			case err := <-done:
				if !errors.Is(err, c.want) || !strings.Contains(fmt.Sprint(err), c.detail) {
					t.Fatalf("got %v, want %v (%q)", err, c.want, c.detail)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("guest hangs")
			}
		})
	}
}

// TestHostileGuest: a guest that lies gets a refusal or loses its
// connection; the host never maps what it must not.
func TestHostileGuest(t *testing.T) {
	memfd := func(size int) int {
		fd, err := unix.MemfdCreate("t", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
		if err != nil {
			t.Fatal(err)
		}
		unix.Ftruncate(fd, int64(size))
		unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK)
		return fd
	}
	pfns := func(n int) []uint64 {
		p := make([]uint64, n)
		for i := range p {
			p[i] = uint64(i)
		}
		return p
	}
	hostCh := make(chan func(*vmbus.Host), 1) // a case's checks on the host side
	efd := func() int { fd, _ := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); return fd }
	type step func(g raw) error // returns the error the host must end with, or nil
	connect := func(g raw) {
		g.send(vmbus.Initiate{Version: vmbus.VersionV5_3})
		if m, _ := g.recv(false); !m.(vmbus.VersionResponse).Supported {
			t.Fatal("refused")
		}
	}
	gpadl := func(g raw, size int) uint32 {
		fd := memfd(size)
		g.send(vmbus.GPADLHeader{Relid: 1, GPADL: 7, ByteCount: uint32(size), Pages: size / 4096, PFNs: pfns(size / 4096)}, fd)
		unix.Close(fd)
		if m, _ := g.recv(false); m.(vmbus.GPADLCreated).Status != 0 {
			t.Fatalf("gpadl refused: %+v", m)
		}
		return 7
	}
	cases := []struct {
		name string
		run  step
		want error // nil: the host answered with a refusal and stays up
	}{
		{"request before contact", func(g raw) error {
			g.send(vmbus.BareMsg{Kind: vmbus.MsgRequestOffers})
			return nil
		}, vmbus.ErrBadMessage},
		{"unknown version", func(g raw) error {
			g.send(vmbus.Initiate{Version: 0x12345})
			if m, _ := g.recv(false); m.(vmbus.VersionResponse).Supported {
				t.Fatal("accepted an unknown version")
			}
			return nil
		}, nil},
		{"pfns not page indices", func(g raw) error {
			connect(g)
			fd := memfd(4 * 4096)
			defer unix.Close(fd)
			g.send(vmbus.GPADLHeader{Relid: 1, GPADL: 7, ByteCount: 4 * 4096, Pages: 4, PFNs: []uint64{0, 1, 5, 3}}, fd)
			return nil
		}, vmbus.ErrBadMessage},
		{"gpadl without memfd", func(g raw) error {
			connect(g)
			g.send(vmbus.GPADLHeader{Relid: 1, GPADL: 7, ByteCount: 4 * 4096, Pages: 4, PFNs: pfns(4)})
			return nil
		}, vmbus.ErrBadMessage},
		{"memfd smaller than promised", func(g raw) error {
			connect(g)
			fd := memfd(4096)
			defer unix.Close(fd)
			g.send(vmbus.GPADLHeader{Relid: 1, GPADL: 7, ByteCount: 4 * 4096, Pages: 4, PFNs: pfns(4)}, fd)
			if m, _ := g.recv(false); m.(vmbus.GPADLCreated).Status == 0 {
				t.Fatal("mapped a memfd smaller than the GPADL")
			}
			return nil
		}, nil},
		{"memfd not sealed against shrinking", func(g raw) error {
			connect(g)
			fd, _ := unix.MemfdCreate("t", unix.MFD_CLOEXEC)
			defer unix.Close(fd)
			unix.Ftruncate(fd, 4*4096)
			g.send(vmbus.GPADLHeader{Relid: 1, GPADL: 7, ByteCount: 4 * 4096, Pages: 4, PFNs: pfns(4)}, fd)
			if m, _ := g.recv(false); m.(vmbus.GPADLCreated).Status == 0 {
				t.Fatal("mapped a memfd the guest can shrink")
			}
			return nil
		}, nil},
		{"gpadl for an unoffered relid", func(g raw) error {
			connect(g)
			fd := memfd(4 * 4096)
			defer unix.Close(fd)
			g.send(vmbus.GPADLHeader{Relid: 9, GPADL: 7, ByteCount: 4 * 4096, Pages: 4, PFNs: pfns(4)}, fd)
			return nil
		}, vmbus.ErrBadMessage},
		{"body for no header", func(g raw) error {
			connect(g)
			g.send(vmbus.GPADLBody{GPADL: 9, PFNs: pfns(2)})
			return nil
		}, vmbus.ErrBadMessage},
		{"open with unknown gpadl", func(g raw) error {
			connect(g)
			a, b := efd(), efd()
			defer unix.Close(a)
			defer unix.Close(b)
			g.send(vmbus.OpenChannel{Relid: 1, OpenID: 1, GPADL: 99, DownstreamOffset: 2}, a, b)
			if m, _ := g.recv(false); m.(vmbus.OpenResult).Status == 0 {
				t.Fatal("opened")
			}
			return nil
		}, vmbus.ErrBadMessage},
		{"open with a bad split", func(g raw) error {
			connect(g)
			h := gpadl(g, 4*4096)
			a, b := efd(), efd()
			defer unix.Close(a)
			defer unix.Close(b)
			g.send(vmbus.OpenChannel{Relid: 1, OpenID: 1, GPADL: h, DownstreamOffset: 3}, a, b)
			if m, _ := g.recv(false); m.(vmbus.OpenResult).Status == 0 {
				t.Fatal("opened")
			}
			return nil
		}, vmbus.ErrBadMessage},
		{"open with memfds for eventfds", func(g raw) error {
			connect(g)
			h := gpadl(g, 4*4096)
			a, b := memfd(4096), memfd(4096)
			defer unix.Close(a)
			defer unix.Close(b)
			g.send(vmbus.OpenChannel{Relid: 1, OpenID: 1, GPADL: h, DownstreamOffset: 2}, a, b)
			if m, _ := g.recv(false); m.(vmbus.OpenResult).Status == 0 {
				t.Fatal("opened")
			}
			return nil
		}, vmbus.ErrBadMessage},
		{"open with lying ring indices", func(g raw) error {
			connect(g)
			fd := memfd(4 * 4096)
			defer unix.Close(fd)
			mem, _ := unix.Mmap(fd, 0, 4*4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
			defer unix.Munmap(mem)
			mem[0] = 3 // write_index 3: not a multiple of 8
			g.send(vmbus.GPADLHeader{Relid: 1, GPADL: 7, ByteCount: 4 * 4096, Pages: 4, PFNs: pfns(4)}, fd)
			g.recv(false)
			a, b := efd(), efd()
			defer unix.Close(a)
			defer unix.Close(b)
			g.send(vmbus.OpenChannel{Relid: 1, OpenID: 1, GPADL: 7, DownstreamOffset: 2}, a, b)
			if m, _ := g.recv(false); m.(vmbus.OpenResult).Status == 0 {
				t.Fatal("opened")
			}
			return nil
		}, nil},
		{"blocking eventfd with a full counter", func(g raw) error {
			connect(g)
			h := gpadl(g, 4*4096)
			a, _ := unix.Eventfd(0, unix.EFD_CLOEXEC)
			b, _ := unix.Eventfd(0, unix.EFD_CLOEXEC)
			defer unix.Close(a)
			defer unix.Close(b)
			var full [8]byte
			binary.LittleEndian.PutUint64(full[:], 0xfffffffffffffffe)
			unix.Write(b, full[:]) // the host's next signal would block
			g.send(vmbus.OpenChannel{Relid: 1, OpenID: 1, GPADL: h, DownstreamOffset: 2}, a, b)
			if m, _ := g.recv(false); m.(vmbus.OpenResult).Status != 0 {
				t.Fatal("refused")
			}
			hostCh <- func(h *vmbus.Host) {
				ch, err := h.Accept(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				done := make(chan struct{})
				go func() {
					ch.Write([]byte("signal")) // empty -> non-empty: signals
					ch.Close()
					close(done)
				}()
				select {
				case <-done:
				case <-time.After(10 * time.Second):
					t.Fatal("the host's signal blocked on the guest's eventfd")
				}
			}
			return nil
		}, nil},
		{"teardown of unknown gpadl", func(g raw) error {
			connect(g)
			g.send(vmbus.GPADLTeardown{Relid: 1, GPADL: 5})
			return nil
		}, vmbus.ErrBadMessage},
		{"close of a closed channel", func(g raw) error {
			connect(g)
			g.send(vmbus.RelidMsg{Kind: vmbus.MsgCloseChannel, Relid: 1})
			return nil
		}, vmbus.ErrBadMessage},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			gc, hc := seqpacketPair(t)
			h, err := vmbus.NewHost(hc, vmbus.HostConfig{Offers: offers(0)})
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			defer gc.Close()
			c.run(raw{t, gc})
			select {
			case f := <-hostCh:
				f(h)
			default:
			}
			if c.want == nil {
				select {
				case <-h.Done():
					t.Fatalf("host ended: %v", h.Err())
				case <-time.After(20 * time.Millisecond):
				}
				return
			}
			select {
			case <-h.Done():
				if !errors.Is(h.Err(), c.want) {
					t.Fatalf("host ended with %v, want %v", h.Err(), c.want)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("host still up")
			}
		})
	}
}

// TestGuestOldVersion: below WIN8_1 the guest closes without UNLOAD
// (spec 3.4); an offer of the same interface with sub_channel_index 0 is
// dropped, not taken for a second primary (spec 3.5).
func TestGuestOldVersion(t *testing.T) {
	gc, hc := seqpacketPair(t)
	host := raw{t, hc}
	defer hc.Close()
	done := make(chan error, 1)
	var g *vmbus.Guest
	go func() {
		var err error
		g, err = vmbus.NewGuest(context.Background(), gc, vmbus.GuestConfig{Versions: []uint32{vmbus.VersionWin8}})
		done <- err
	}()
	host.recv(false)
	host.send(vmbus.VersionResponse{Supported: true})
	host.recv(false) // REQUESTOFFERS
	o := offers(1)
	dup := o[1]
	dup.Relid, dup.SubChannelIndex = 9, 0
	host.send(o[0])
	host.send(o[1])
	host.send(dup)
	host.send(vmbus.BareMsg{Kind: vmbus.MsgAllOffersDelivered})
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := g.Offers(); len(got) != 2 {
		t.Fatalf("offers %+v", got)
	}
	if _, ok := g.Lookup(9); ok {
		t.Fatal("a sub-channel offer with index 0 was kept")
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	hc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := hc.Read(make([]byte, 256)); n != 0 || err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("after close the host read %d bytes, %v; want EOF (no UNLOAD below WIN8_1)", n, err)
	}
}
