package goplugin

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/pagewire/pagewire/internal/gpproto"
	"github.com/pagewire/pagewire/sdk"
)

// plane is the host's end of a plugin's data plane (see internal/gpproto): a
// SOCK_SEQPACKET socket the plugin inherits, on which every Open first
// sends the channel's region and socket.
type plane struct {
	mu    sync.Mutex // held from sending a channel's descriptors to its Open's answer
	ctl   *net.UnixConn
	child *os.File // the plugin's end, until it has started
	next  uint64
}

func newPlane() (*plane, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	ctl := gpproto.UnixConn(fds[0])
	if ctl == nil {
		unix.Close(fds[1])
		return nil, errors.New("data plane: no unix socket")
	}
	return &plane{ctl: ctl, child: os.NewFile(uintptr(fds[1]), "pagewire-plane")}, nil
}

// started closes the plugin's end in this process.
func (p *plane) started() {
	if p.child != nil {
		p.child.Close()
		p.child = nil
	}
}

func (p *plane) close() {
	p.started()
	p.ctl.Close()
}

// offer sends a new channel's region and socket (p.mu held) and returns
// the token that Open names them by, and the host's end of the socket.
func (p *plane) offer(reg *region) (uint64, *net.UnixConn, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, nil, err
	}
	defer unix.Close(fds[1])
	conn := gpproto.UnixConn(fds[0])
	if conn == nil {
		return 0, nil, errors.New("data plane: no unix socket")
	}
	p.next++
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], p.next)
	p.ctl.SetWriteDeadline(time.Now().Add(time.Second))
	if _, _, err := p.ctl.WriteMsgUnix(b[:], unix.UnixRights(reg.fd, fds[1]), nil); err != nil {
		conn.Close()
		return 0, nil, fmt.Errorf("data plane: %w", err)
	}
	return p.next, conn, nil
}

// region is one channel's shared memory with its plugin process: two
// halves of half bytes, in (what the host gives the plugin: pages to
// compress, or a payload to decode) and out (what the plugin answers).
// It is a memfd sealed against shrinking and growing, so the plugin can
// neither take pages away under the host's mapping (SIGBUS) nor make it
// bigger.
type region struct {
	mem  []byte
	half int
	fd   int
}

// newRegion creates a region; the caller closes its fd (release) once
// it is sent, and unmaps it (free) when the channel ends. A sender's is
// populated: every packet goes through it, so its page faults are taken
// now, at setup, not in the first packets (the plugin maps it populated
// too). A receiver's is not: its size follows the peer's packet size,
// and a peer that opens a transfer and sends nothing should not make it
// commit memory.
func newRegion(half int, populate bool) (*region, error) {
	fd, err := unix.MemfdCreate("pagewire-plugin", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("memfd: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	if err := unix.Ftruncate(fd, int64(2*half)); err != nil {
		return nil, fmt.Errorf("memfd: %w", err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_SEAL); err != nil {
		return nil, fmt.Errorf("memfd seals: %w", err)
	}
	flags := unix.MAP_SHARED
	if populate {
		flags |= unix.MAP_POPULATE
	}
	mem, err := unix.Mmap(fd, 0, 2*half, unix.PROT_READ|unix.PROT_WRITE, flags)
	if err != nil {
		return nil, fmt.Errorf("mmap: %w", err)
	}
	ok = true
	return &region{mem: mem, half: half, fd: fd}, nil
}

func (r *region) in() []byte  { return r.mem[:r.half:r.half] }
func (r *region) out() []byte { return r.mem[r.half : 2*r.half : 2*r.half] }

// release closes the memfd; the mappings stay.
func (r *region) release() {
	if r.fd >= 0 {
		unix.Close(r.fd)
		r.fd = -1
	}
}

func (r *region) free() {
	r.release()
	if r.mem != nil {
		unix.Munmap(r.mem)
		r.mem = nil
	}
}

// dataPlane is one channel's region and socket.
type dataPlane struct {
	reg  *region
	conn *net.UnixConn
	req  [gpproto.PlaneRequestSize]byte
	resp [gpproto.PlaneResponseSize + gpproto.PlaneMaxText + 1]byte
}

// open creates a channel's data plane and offers it (p.mu held).
func (p *plane) open(half int, populate bool) (*dataPlane, uint64, error) {
	reg, err := newRegion(half, populate)
	if err != nil {
		return nil, 0, err
	}
	tok, conn, err := p.offer(reg)
	reg.release() // sent, or never will be
	if err != nil {
		reg.free()
		return nil, 0, err
	}
	return &dataPlane{reg: reg, conn: conn}, tok, nil
}

func (d *dataPlane) close() {
	d.conn.Close()
	d.reg.free()
}

// call makes one request on c's data plane and returns the response's
// length, unchecked.
func (c *channel) call(op uint32, npages int, seq uint64, plen int) (uint64, error) {
	d, name := c.dp, "prepare"
	if op == gpproto.PlaneRecv {
		name = "recv"
	}
	d.conn.SetDeadline(time.Now().Add(c.m.cfg.CallTimeout))
	gpproto.PutPlaneRequest(d.req[:], op, npages, seq, plen)
	if _, err := d.conn.Write(d.req[:]); err != nil {
		return 0, c.planeFail(name, err)
	}
	code, n, text, err := c.answer(name)
	if err != nil {
		return 0, err
	}
	switch code {
	case gpproto.PlaneCorrupt:
		return 0, fmt.Errorf("%w: %s, channel %d: %s", sdk.ErrCorrupt, c.m.name, c.ch, text)
	case gpproto.PlaneFailed:
		return 0, fmt.Errorf("%w: %s, channel %d: %s: %s", ErrPlugin, c.m.name, c.ch, name, text)
	}
	return n, nil
}

// answer reads and decodes the response to the request op just sent; a
// failure to read or decode it kills the channel.
func (c *channel) answer(op string) (code uint32, n uint64, text string, err error) {
	d := c.dp
	k, err := d.conn.Read(d.resp[:])
	if err != nil {
		return 0, 0, "", c.planeFail(op, err)
	}
	code, n, text, err = gpproto.PlaneResponse(d.resp[:k])
	if err != nil {
		c.dead = fmt.Errorf("%w: %s, channel %d: %s: %w", ErrPlugin, c.m.name, c.ch, op, err)
		return 0, 0, "", c.dead
	}
	return code, n, text, nil
}

// planeFail maps a data-plane socket error; the channel is dead after it.
func (c *channel) planeFail(op string, err error) error {
	where := fmt.Sprintf("%s, channel %d", c.m.name, c.ch)
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		c.dead = fmt.Errorf("%w: %s: %s: no answer within %v: %w", ErrPlugin, where, op, c.m.cfg.CallTimeout, sdk.ErrDeadline)
	case c.m.client.Exited():
		c.dead = fmt.Errorf("%w: %s: %s: the plugin process exited", ErrPlugin, where, op)
	default:
		c.dead = fmt.Errorf("%w: %s: %s: connection to the plugin lost: %w", ErrPlugin, where, op, err)
	}
	return c.dead
}

// shared is memory the plugin process may map read-only: its pages then
// travel by offset, not copied into the region (see [Method.ShareMemory]).
type shared struct {
	id   uint64
	base uintptr // of the host's mapping
	size int
	file *os.File // read-only
	off  int64
}

// shares is the Method's shared memory; lookups take no lock.
type shares struct {
	mu   sync.Mutex
	list atomic.Pointer[[]*shared]
	next uint64
}

// ShareMemory offers the plugin process data, a shared mapping of f from
// off (as a VMM's guest RAM backed by a memfd is, or a core.ReadImage
// image): the plugin maps it read-only once per channel, and every
// packet of pages from it then travels as their offsets instead of a
// copy of the pages. Only a file sealed against writing (F_SEAL_WRITE,
// or F_SEAL_FUTURE_WRITE) and shrinking (F_SEAL_SHRINK) is shared, so
// the plugin can neither write into the memory nor take pages away
// under the host's mapping; other memory, or with
// [Config.NoSharedMemory], is copied. The plugin can read all of the
// file, not only the pages it is given, for as long as it runs (it may
// keep the descriptor). A failure only means the pages are copied;
// unshare ends the offer (channels that mapped it keep their mapping
// until they close). data must stay mapped until unshare.
func (m *Method) ShareMemory(data []byte, f *os.File, off int64) (unshare func()) {
	if m.plane == nil || m.cfg.NoSharedMemory || len(data) == 0 || f == nil || off%int64(os.Getpagesize()) != 0 {
		return func() {}
	}
	if err := sealed(f); err != nil {
		m.cfg.Log.Debug("memory not shared with the plugin: pages are copied", "plugin", m.name, "err", err)
		return func() {}
	}
	ro, err := os.Open(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
	if err != nil {
		m.cfg.Log.Debug("memory not shared with the plugin: pages are copied", "plugin", m.name, "err", err)
		return func() {}
	}
	sh := &shared{base: uintptr(unsafe.Pointer(unsafe.SliceData(data))), size: len(data), file: ro, off: off}
	m.shares.mu.Lock()
	m.shares.next++
	sh.id = m.shares.next
	list := []*shared{sh}
	if old := m.shares.list.Load(); old != nil {
		list = append(list, *old...)
	}
	m.shares.list.Store(&list)
	m.shares.mu.Unlock()
	return func() {
		m.shares.mu.Lock()
		defer m.shares.mu.Unlock()
		if old := m.shares.list.Load(); old != nil {
			list := make([]*shared, 0, len(*old))
			for _, s := range *old {
				if s != sh {
					list = append(list, s)
				}
			}
			m.shares.list.Store(&list)
		}
		ro.Close()
	}
}

// sealed checks that f is sealed against writing and shrinking.
func sealed(f *os.File) error {
	seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0)
	if err != nil {
		return fmt.Errorf("%s has no seals: %w", f.Name(), err)
	}
	if seals&unix.F_SEAL_SHRINK == 0 || seals&(unix.F_SEAL_WRITE|unix.F_SEAL_FUTURE_WRITE) == 0 {
		return fmt.Errorf("%s is not sealed against writing and shrinking (seals %#x)", f.Name(), seals)
	}
	return nil
}

// sharedFor returns the shared memory that holds every page of p, or nil.
func (m *Method) sharedFor(p *sdk.Packet) *shared {
	list := m.shares.list.Load()
	if list == nil || len(p.Pages) == 0 {
		return nil
	}
	first := uintptr(unsafe.Pointer(unsafe.SliceData(p.Pages[0])))
	for _, sh := range *list {
		if first-sh.base >= uintptr(sh.size) {
			continue
		}
		for _, pg := range p.Pages {
			a := uintptr(unsafe.Pointer(unsafe.SliceData(pg)))
			if a-sh.base >= uintptr(sh.size) || uintptr(sh.size)-(a-sh.base) < uintptr(len(pg)) {
				return nil
			}
		}
		return sh
	}
	return nil
}

// mapShared makes sure the plugin has sh mapped on c's channel; false:
// it could not, and c copies sh's pages instead.
func (c *channel) mapShared(sh *shared) (bool, error) {
	for _, id := range c.mapped {
		if id == sh.id {
			return true, nil
		}
		if id == ^sh.id {
			return false, nil
		}
	}
	if len(c.mapped) >= gpproto.PlaneMaxMaps {
		return false, nil
	}
	d := c.dp
	var req [gpproto.PlaneMapSize]byte
	gpproto.PutPlaneMap(req[:], sh.id, sh.size, sh.off)
	d.conn.SetDeadline(time.Now().Add(c.m.cfg.CallTimeout))
	rc, err := sh.file.SyscallConn()
	if err != nil {
		return false, nil
	}
	var werr error
	// Control holds the descriptor open while it is sent: an unshare
	// that closes the file meanwhile cannot put another in its place.
	if err := rc.Control(func(fd uintptr) {
		_, _, werr = d.conn.WriteMsgUnix(req[:], unix.UnixRights(int(fd)), nil)
	}); err != nil {
		return false, nil // unshared meanwhile: copy
	}
	if werr != nil {
		return false, c.planeFail("map", werr)
	}
	code, _, text, err := c.answer("map")
	if err != nil {
		return false, err
	}
	if code != gpproto.PlaneOK {
		c.m.cfg.Log.Debug("the plugin did not map shared memory: pages are copied", "plugin", c.m.name, "channel", c.ch, "err", text)
		c.mapped = append(c.mapped, ^sh.id)
		return false, nil
	}
	c.mapped = append(c.mapped, sh.id)
	return true, nil
}

// prepareOnPlane sends the pages by offset if they are in shared memory
// the plugin has mapped, else copies them into the region, and returns
// the payload where the plugin wrote it, in the region. Its length is
// the response's, checked here; the plugin can still change the bytes,
// but nothing on this side interprets them: the engine writes them to
// the channel as they are.
func (c *channel) prepareOnPlane(p *sdk.Packet) ([]byte, error) {
	in, off := c.dp.reg.in(), 0
	op, arg := uint32(gpproto.PlanePrepare), 0
	sh := c.m.sharedFor(p)
	if sh != nil {
		ok, err := c.mapShared(sh)
		if err != nil {
			return nil, err
		}
		if !ok {
			sh = nil
		}
	}
	if sh != nil && len(p.Pages)*8 <= len(in) {
		op, arg = gpproto.PlanePrepareShared, int(sh.id)
		c.m.byOffset.Add(1)
		for i, pg := range p.Pages {
			binary.LittleEndian.PutUint64(in[i*8:], uint64(uintptr(unsafe.Pointer(unsafe.SliceData(pg)))-sh.base))
		}
	} else {
		c.m.copied.Add(1)
		for _, pg := range p.Pages {
			if len(pg) > len(in)-off {
				return nil, fmt.Errorf("%s, channel %d: packet of more than %d bytes", c.m.name, c.ch, len(in))
			}
			off += copy(in[off:], pg)
		}
	}
	n, err := c.call(op, len(p.Pages), p.Seq, arg)
	if err != nil {
		return nil, err
	}
	if n > uint64(c.max) {
		return nil, fmt.Errorf("%w: %s, channel %d: payload of %d bytes, at most %d", ErrPlugin, c.m.name, c.ch, n, c.max)
	}
	return c.dp.reg.out()[:n:n], nil
}

// recvBuffer is where a payload of n bytes is best read: the region.
func (c *channel) recvBuffer(n int) []byte {
	if in := c.dp.reg.in(); n <= len(in) {
		return in[:n:n]
	}
	return nil
}

// recvOnPlane: len(payload) <= c.max <= half, checked by Recv.
func (c *channel) recvOnPlane(p *sdk.Packet, payload []byte) error {
	out := c.dp.reg.out()
	total := 0
	for _, pg := range p.Pages {
		total += len(pg)
	}
	if total > len(out) {
		return fmt.Errorf("%s, channel %d: packet of more than %d bytes", c.m.name, c.ch, len(out))
	}
	if in := c.dp.reg.in(); len(payload) > 0 && &payload[0] != &in[0] { // not read in place (recvBuffer)
		copy(in, payload)
	}
	if _, err := c.call(gpproto.PlaneRecv, len(p.Pages), p.Seq, len(payload)); err != nil {
		return err
	}
	for _, pg := range p.Pages {
		out = out[copy(pg, out):]
	}
	return nil
}
