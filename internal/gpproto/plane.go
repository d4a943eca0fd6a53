package gpproto

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/pagewire/pagewire/sdk"
)

// PlaneEnv names the environment variable that gives a plugin process the
// descriptor of its data-plane socket (see msg).
const PlaneEnv = "PAGEWIRE_PLUGIN_PLANE_FD"

// The data plane's messages, one SOCK_SEQPACKET message each:
//
//	request   op (u32), npages (u32), seq (u64), payload length or id (u64)
//	map       PlaneMap (u32), 0 (u32), id (u64), size (u64), offset (u64)
//	response  code (u32), 0 (u32), payload length (u64), error text
//
// op is PlanePrepare (the npages pages are in the region's first half;
// the response's length is that of the payload in the second half),
// PlanePrepareShared (the pages are in shared memory mapping id: the
// region's first half holds their npages offsets in it, u64 each) or
// PlaneRecv (the payload is in the first half; the npages pages go to
// the second). The code is PlaneOK, PlaneCorrupt ([sdk.ErrCorrupt]) or
// PlaneFailed, with the error's text after the header.
//
// PlaneMap carries one descriptor (SCM_RIGHTS): a read-only file of the
// host's memory, the source of its pages, as a VMM's guest RAM backed
// by a memfd is, sealed against writing and shrinking (the plugin
// refuses a file that could shrink). The plugin maps size bytes of it from offset,
// read-only, as mapping id of the channel, until the channel ends; the
// host then sends that memory's pages by their offsets instead of
// copying them into the region. At most PlaneMaxMaps per channel.
const (
	PlanePrepare       = 1
	PlaneRecv          = 2
	PlaneMap           = 3
	PlanePrepareShared = 4

	PlaneOK      = 0
	PlaneCorrupt = 1
	PlaneFailed  = 2

	PlaneRequestSize  = 24
	PlaneMapSize      = 32
	PlaneResponseSize = 16
	// PlaneMaxMaps bounds the shared memory mappings of a channel.
	PlaneMaxMaps = 16
	// PlaneMaxText bounds a response's error text.
	PlaneMaxText = 1024
)

// PutPlaneRequest encodes a request into b (PlaneRequestSize bytes).
func PutPlaneRequest(b []byte, op uint32, npages int, seq uint64, n int) {
	binary.LittleEndian.PutUint32(b[0:], op)
	binary.LittleEndian.PutUint32(b[4:], uint32(npages))
	binary.LittleEndian.PutUint64(b[8:], seq)
	binary.LittleEndian.PutUint64(b[16:], uint64(n))
}

// PutPlaneMap encodes a map request into b (PlaneMapSize bytes).
func PutPlaneMap(b []byte, id uint64, size int, off int64) {
	binary.LittleEndian.PutUint32(b[0:], PlaneMap)
	binary.LittleEndian.PutUint32(b[4:], 0)
	binary.LittleEndian.PutUint64(b[8:], id)
	binary.LittleEndian.PutUint64(b[16:], uint64(size))
	binary.LittleEndian.PutUint64(b[24:], uint64(off))
}

// PlaneResponse decodes a response; the caller checks n against its own
// bounds (it is the plugin's word).
func PlaneResponse(b []byte) (code uint32, n uint64, text string, err error) {
	if len(b) < PlaneResponseSize || len(b) > PlaneResponseSize+PlaneMaxText {
		return 0, 0, "", fmt.Errorf("data plane: response of %d bytes", len(b))
	}
	code, n = binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint64(b[8:])
	if code > PlaneFailed || binary.LittleEndian.Uint32(b[4:]) != 0 {
		return 0, 0, "", fmt.Errorf("data plane: response code %d", code)
	}
	return code, n, string(b[PlaneResponseSize:]), nil
}

// serve answers one request in req, which came with descriptor fd (-1:
// none; serve takes it), with the response in resp (of
// PlaneResponseSize+PlaneMaxText bytes) and returns the response.
func (c *channel) serve(req []byte, fd int, resp []byte) []byte {
	var n int
	var err error
	isMap := len(req) == PlaneMapSize && binary.LittleEndian.Uint32(req) == PlaneMap && binary.LittleEndian.Uint32(req[4:]) == 0
	switch {
	case isMap:
		err = c.mapShared(binary.LittleEndian.Uint64(req[8:]), fd, binary.LittleEndian.Uint64(req[16:]), binary.LittleEndian.Uint64(req[24:]))
	case fd >= 0:
		closeFD(fd)
		err = errors.New("data plane: a descriptor with a request that takes none")
	case len(req) != PlaneRequestSize:
		err = fmt.Errorf("data plane: request of %d bytes", len(req))
	default:
		op, npages := binary.LittleEndian.Uint32(req), int(binary.LittleEndian.Uint32(req[4:]))
		seq, plen := binary.LittleEndian.Uint64(req[8:]), binary.LittleEndian.Uint64(req[16:])
		n, err = c.planeCall(op, npages, seq, plen)
	}
	code := uint32(PlaneOK)
	resp = resp[:PlaneResponseSize]
	if err != nil {
		code = PlaneFailed
		if errors.Is(err, sdk.ErrCorrupt) {
			code = PlaneCorrupt
		}
		t := err.Error()
		resp = append(resp, t[:min(len(t), PlaneMaxText)]...)
	}
	binary.LittleEndian.PutUint32(resp, code)
	binary.LittleEndian.PutUint32(resp[4:], 0)
	binary.LittleEndian.PutUint64(resp[8:], uint64(n))
	return resp
}

func (c *channel) planeCall(op uint32, npages int, seq, plen uint64) (n int, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.shm == nil {
		return 0, errors.New("data plane: channel closed")
	}
	if npages <= 0 || npages > c.opts.PacketPages {
		return 0, fmt.Errorf("data plane: %d pages (at most %d)", npages, c.opts.PacketPages)
	}
	ps, half := c.opts.PageSize, c.half
	c.packet.Seq = seq
	switch {
	case op == PlanePrepare && c.snd != nil:
		c.pages(c.shm[:npages*ps], npages)
		return c.prepareInto(half)
	case op == PlanePrepareShared && c.snd != nil:
		mem, ok := c.maps[plen]
		if !ok {
			return 0, fmt.Errorf("data plane: no shared mapping %d", plen)
		}
		if npages*8 > half {
			return 0, fmt.Errorf("data plane: %d page offsets do not fit the region", npages)
		}
		c.packet.Pages = c.packet.Pages[:0]
		for i := range npages {
			off := binary.LittleEndian.Uint64(c.shm[i*8:])
			if off > uint64(len(mem)) || uint64(len(mem))-off < uint64(ps) {
				return 0, fmt.Errorf("data plane: page at %#x outside shared mapping %d of %d bytes", off, plen, len(mem))
			}
			c.packet.Pages = append(c.packet.Pages, mem[off:off+uint64(ps):off+uint64(ps)])
		}
		return c.prepareInto(half)
	case op == PlaneRecv && c.rcv != nil:
		if plen > uint64(half) {
			return 0, fmt.Errorf("data plane: payload of %d bytes, region of %d", plen, half)
		}
		c.pages(c.shm[half:half+npages*ps], npages)
		err := c.rcv.Recv(&c.packet, c.shm[:plen:plen])
		clear(c.packet.Pages[:cap(c.packet.Pages)])
		return 0, err
	}
	return 0, fmt.Errorf("data plane: op %d on a channel not set up for it", op)
}

// prepareInto runs Prepare on c.packet's pages with the payload going
// to the region's second half, and returns its length.
func (c *channel) prepareInto(half int) (int, error) {
	out := c.shm[half : 2*half : 2*half]
	payload, err := c.snd.Prepare(&c.packet, out[:0])
	clear(c.packet.Pages[:cap(c.packet.Pages)])
	if err != nil {
		return 0, err
	}
	if max := sdk.MaxPayload(c.opts.PacketPages, c.opts.PageSize); len(payload) > max || len(payload) > half {
		return 0, fmt.Errorf("payload of %d bytes, at most %d", len(payload), max)
	}
	if len(payload) > 0 && &payload[0] != &out[0] {
		copy(out, payload) // the method appended elsewhere
	}
	return len(payload), nil
}
