package goplugin

import (
	"bytes"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-plugin"
	"golang.org/x/sys/unix"

	"github.com/pagewire/pagewire/internal/gpproto"
	"github.com/pagewire/pagewire/sdk"
)

// fakePlane returns channel ch of m on a data plane whose plugin end,
// peer, the test plays; both are closed when t ends.
func fakePlane(t *testing.T, m *Method, ch int) (c *channel, peer *net.UnixConn) {
	t.Helper()
	reg, err := newRegion(gpproto.PlaneHalf(128, 4096), false)
	if err != nil {
		t.Fatal(err)
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		reg.free()
		t.Fatal(err)
	}
	peer = gpproto.UnixConn(fds[1])
	c = &channel{m: m, ch: ch, max: sdk.MaxPayload(128, 4096), dp: &dataPlane{reg: reg, conn: gpproto.UnixConn(fds[0])}}
	t.Cleanup(func() {
		peer.Close()
		c.dp.close()
	})
	return c, peer
}

// TestPlaneHostile: the host checks every answer that comes off a
// channel's data plane; the test plays a lying plugin on the socket.
func TestPlaneHostile(t *testing.T) {
	resp := func(code uint32, n uint64, text string) []byte {
		b := make([]byte, gpproto.PlaneResponseSize, gpproto.PlaneResponseSize+len(text))
		binary.LittleEndian.PutUint32(b, code)
		binary.LittleEndian.PutUint64(b[8:], n)
		return append(b, text...)
	}
	max := sdk.MaxPayload(128, 4096)
	cases := []struct {
		name   string
		answer []byte // nil: hang up; empty: no answer
		want   error
		text   string
		dead   bool
	}{
		{"payload too long", resp(0, uint64(max)+1, ""), ErrPlugin, "at most", false},
		{"huge length", resp(0, 1<<63, ""), ErrPlugin, "at most", false},
		{"short response", []byte{1, 2, 3}, ErrPlugin, "response of 3 bytes", true},
		{"unknown code", resp(9, 0, ""), ErrPlugin, "response code 9", true},
		{"corrupt", resp(gpproto.PlaneCorrupt, 0, "bad frame"), sdk.ErrCorrupt, "liar, channel 2: bad frame", false},
		{"failed", resp(gpproto.PlaneFailed, 0, "out of luck"), ErrPlugin, "prepare: out of luck", false},
		{"no answer", []byte{}, ErrPlugin, "no answer within 200ms", true},
		{"hang up", nil, ErrPlugin, "connection to the plugin lost", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := &Method{name: "liar", cfg: Config{CallTimeout: 200 * time.Millisecond}, client: plugin.NewClient(&plugin.ClientConfig{})}
			c, peer := fakePlane(t, m, 2)
			done := make(chan struct{})
			go func() {
				defer close(done)
				req := make([]byte, 64)
				if _, err := peer.Read(req); err != nil {
					return
				}
				switch {
				case tc.answer == nil:
					peer.Close()
				case len(tc.answer) > 0:
					peer.Write(tc.answer)
				}
			}()
			page := make([]byte, 4096)
			out, err := (*sender)(c).Prepare(&sdk.Packet{Seq: 7, Pages: [][]byte{page}}, nil)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.text) || len(out) != 0 {
				t.Fatalf("got %d bytes, %v; want %v with %q", len(out), err, tc.want, tc.text)
			}
			if (c.dead != nil) != tc.dead {
				t.Errorf("channel dead: %v, want %v", c.dead, tc.dead)
			}
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("the fake plugin did not finish")
			}
		})
	}
}

// TestShareRefused: a plugin that cannot map shared memory (an older
// SDK answers the map request as a bad request) gets the pages copied,
// and is not asked to map that memory again.
func TestShareRefused(t *testing.T) {
	mfd, err := unix.MemfdCreate("t", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(mfd), "memfd")
	defer f.Close()
	if err := f.Truncate(4 * 4096); err != nil {
		t.Fatal(err)
	}
	mem, err := unix.Mmap(mfd, 0, 4*4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	copy(mem[4096:], "page one")
	m := &Method{name: "old", cfg: Config{CallTimeout: 2 * time.Second, Log: slog.Default()}, client: plugin.NewClient(&plugin.ClientConfig{})}
	m.plane = &plane{}
	// Not sealed: not shared.
	m.ShareMemory(mem, f, 0)
	if m.shares.list.Load() != nil {
		t.Fatal("memory that can still be written or shrunk was shared")
	}
	// Sealed as a VMM would, with its own mapping writable.
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_FUTURE_WRITE); err != nil {
		t.Fatal(err)
	}
	unshare := m.ShareMemory(mem, f, 0)
	defer unshare()
	if list := m.shares.list.Load(); list == nil || len(*list) != 1 {
		t.Fatal("sealed memory was not shared")
	}
	c, peer := fakePlane(t, m, 1)
	reg := c.dp.reg

	// The fake plugin: refuses the map (as an older SDK does: it reads
	// 25 bytes of the 32 and calls the request malformed), then echoes
	// the copied page as the payload.
	ops := make(chan uint32, 4)
	done := make(chan struct{})
	go func() {
		defer close(done)
		req := make([]byte, gpproto.PlaneRequestSize+1)
		for {
			n, err := peer.Read(req)
			if err != nil {
				return
			}
			op := binary.LittleEndian.Uint32(req)
			ops <- op
			resp := make([]byte, gpproto.PlaneResponseSize)
			if n != gpproto.PlaneRequestSize {
				binary.LittleEndian.PutUint32(resp, gpproto.PlaneFailed)
				resp = append(resp, "data plane: request of 25 bytes"...)
			} else {
				copy(reg.out(), reg.in()[:4096])
				binary.LittleEndian.PutUint64(resp[8:], 4096)
			}
			peer.Write(resp)
		}
	}()
	for round := range 2 {
		out, err := (*sender)(c).Prepare(&sdk.Packet{Seq: 1, Pages: [][]byte{mem[4096:8192]}}, nil)
		if err != nil || !bytes.HasPrefix(out, []byte("page one")) {
			t.Fatalf("round %d: %q, %v", round, out[:min(len(out), 8)], err)
		}
	}
	peer.Close()
	c.dp.close()
	<-done
	close(ops)
	var got []uint32
	for op := range ops {
		got = append(got, op)
	}
	if want := []uint32{gpproto.PlaneMap, gpproto.PlanePrepare, gpproto.PlanePrepare}; !slices.Equal(got, want) {
		t.Errorf("requests %v, want %v", got, want)
	}
	if PacketsByOffset(m) != 0 {
		t.Errorf("%d packets by offset", PacketsByOffset(m))
	}
}
