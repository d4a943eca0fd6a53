package gpproto

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/pagewire/pagewire/sdk"
)

// TestMapShared: the plugin maps the host's memory read-only and reads a
// packet's pages from it by offset; bad maps and offsets get clear
// errors and never a panic.
func TestMapShared(t *testing.T) {
	const ps = 4096
	mem := bytes.Repeat([]byte("0123456789abcdef"), 4*ps/16) // 4 pages
	memfd := func(seals int) int {
		t.Helper()
		fd, err := unix.MemfdCreate("t", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		if _, err := unix.Write(fd, mem); err != nil {
			t.Fatal(err)
		}
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
			t.Fatal(err)
		}
		// Read-only, as the host sends it (goplugin reopens it so).
		ro, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", fd), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		return ro
	}
	// As the host sends it: sealed (core.ReadImage), read-only.
	fdOf := func() int { return memfd(unix.F_SEAL_WRITE | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW) }
	half := PlaneHalf(128, ps)
	newChan := func(send bool) *channel {
		c := &channel{opts: sdk.Options{PageSize: ps, PacketPages: 128}, shm: make([]byte, 2*half), half: half}
		c.packet.Pages = make([][]byte, 0, 128)
		if send {
			c.snd = echoSender{}
		} else {
			c.rcv = echoReceiver{}
		}
		return c
	}
	mapReq := func(id uint64, size int, off int64) []byte {
		b := make([]byte, PlaneMapSize)
		PutPlaneMap(b, id, size, off)
		return b
	}
	answer := func(c *channel, req []byte, fd int) (uint32, uint64, string) {
		t.Helper()
		code, n, text, err := PlaneResponse(c.serve(req, fd, make([]byte, PlaneResponseSize+PlaneMaxText)))
		if err != nil {
			t.Fatal(err)
		}
		return code, n, text
	}

	c := newChan(true)
	defer c.detach()
	if code, _, text := answer(c, mapReq(1, len(mem), 0), fdOf()); code != PlaneOK {
		t.Fatalf("map: %d %s", code, text)
	}
	// Pages 2 and 0, by offset.
	binary.LittleEndian.PutUint64(c.shm[0:], 2*ps)
	binary.LittleEndian.PutUint64(c.shm[8:], 0)
	req := make([]byte, PlaneRequestSize)
	PutPlaneRequest(req, PlanePrepareShared, 2, 1, 1)
	code, n, text := answer(c, req, -1)
	if code != PlaneOK || n != 2*ps {
		t.Fatalf("prepare by offset: %d, %d bytes, %s", code, n, text)
	}
	if want := append(bytes.Clone(mem[2*ps:3*ps]), mem[:ps]...); !bytes.Equal(c.shm[half:half+2*ps], want) {
		t.Fatal("the pages read by offset differ")
	}
	// The mapping is read-only, and the memory cannot be written through
	// the descriptor reopened for writing either.
	if err := unix.Mprotect(c.maps[1], unix.PROT_READ|unix.PROT_WRITE); err == nil {
		t.Error("the shared mapping could be made writable")
	}
	ro := fdOf()
	rw, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", ro), unix.O_RDWR|unix.O_CLOEXEC, 0)
	unix.Close(ro)
	if err == nil {
		if _, err := unix.Write(rw, []byte("evil")); err == nil {
			t.Error("the shared memory could be written through /proc/self/fd")
		}
		if b, err := unix.Mmap(rw, 0, ps, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err == nil {
			unix.Munmap(b)
			t.Error("the shared memory could be mapped writable through /proc/self/fd")
		}
		unix.Close(rw)
	}

	bad := []struct {
		name string
		c    *channel
		req  []byte
		fd   bool
		text string
	}{
		{"page past the end", c, func() []byte {
			binary.LittleEndian.PutUint64(c.shm[0:], 3*ps+1)
			return req
		}(), false, "outside shared mapping 1"},
		{"unknown mapping", c, func() []byte {
			r := bytes.Clone(req)
			binary.LittleEndian.PutUint64(r[16:], 9)
			return r
		}(), false, "no shared mapping 9"},
		{"mapping twice", c, mapReq(1, len(mem), 0), true, "shared mapping 1 exists"},
		{"larger than the file", c, mapReq(2, 2*len(mem), 0), true, "file of 16384"},
		{"past the file", c, mapReq(2, ps, 4*ps), true, "file of 16384"},
		{"empty", c, mapReq(2, 0, 0), true, "shared mapping of 0 bytes"},
		{"no descriptor", c, mapReq(2, ps, 0), false, "map without a descriptor"},
		{"descriptor with a prepare", c, req, true, "a descriptor with a request that takes none"},
		{"on a receiver", newChan(false), mapReq(1, ps, 0), true, "not set up to send"},
		{"not sealed", c, mapReq(2, ps, 0), false, "not sealed against shrinking"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			fd := -1
			if tc.fd {
				fd = fdOf()
			}
			if tc.name == "not sealed" {
				fd = memfd(0)
			}
			code, _, text := answer(tc.c, tc.req, fd)
			if code != PlaneFailed || !strings.Contains(text, tc.text) {
				t.Errorf("code %d, %q; want a failure with %q", code, text, tc.text)
			}
			if fd >= 0 {
				if _, err := unix.FcntlInt(uintptr(fd), syscall.F_GETFD, 0); err == nil {
					t.Error("the descriptor was left open")
				}
			}
		})
	}
	for id := uint64(2); len(c.maps) < PlaneMaxMaps; id++ {
		if code, _, text := answer(c, mapReq(id, ps, 0), fdOf()); code != PlaneOK {
			t.Fatalf("map %d: %s", id, text)
		}
	}
	if code, _, text := answer(c, mapReq(99, ps, 0), fdOf()); code != PlaneFailed || !strings.Contains(text, "more than 16 shared mappings") {
		t.Errorf("map past the limit: %d %q", code, text)
	}
}
