package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// Values fixed by QEMU's migration/multifd.h.
const (
	Magic   = 0x11223344 // MULTIFD_MAGIC
	Version = 1          // MULTIFD_VERSION

	InitSize = 64 // bytes of MultiFDInit_t

	// PrefixSize is the size of MultiFDPacketHdr_t: magic, version, flags.
	PrefixSize = 12
	// RAMFixedSize is the size of MultiFDPacket_t before the offsets.
	RAMFixedSize = 320
	// DeviceStateSize is the size of MultiFDPacketDeviceState_t.
	DeviceStateSize = 276
	// NameSize is the size of the NUL-padded ramblock and idstr fields.
	NameSize = 256

	FlagSync        = 0x01 // MULTIFD_FLAG_SYNC
	FlagMethodMask  = 0x3e // MULTIFD_FLAG_COMPRESSION_MASK (QEMU 10)
	FlagDeviceState = 0x40 // MULTIFD_FLAG_DEVICE_STATE
	// FlagDelta marks a RAM packet of pagewire's protocol whose normal
	// pages are deltas against the versions the receiver holds
	// (docs/protocol.md, "Delta pages"); only when the hello offered them.
	FlagDelta  = 0x80
	flagsKnown = FlagSync | FlagMethodMask | FlagDeviceState | FlagDelta
)

// Sentinel errors; every decoding error wraps one of them.
var (
	// ErrBadHandshake reports a MultiFDInit_t that is malformed or does
	// not fit this transfer (magic, version, uuid, channel id).
	ErrBadHandshake = errors.New("bad channel handshake")
	// ErrBadPacket reports a malformed packet header or payload length.
	ErrBadPacket = errors.New("bad packet")
)

var be = binary.BigEndian

// RAMHeaderSize is the size on the wire of a RAM packet header for packets
// of up to pages pages: QEMU always sends all offset slots.
func RAMHeaderSize(pages int) int { return RAMFixedSize + 8*pages }

// Init is MultiFDInit_t, the first 64 bytes of every multifd channel.
type Init struct {
	UUID [16]byte
	ID   uint8 // channel index, 0..channels-1
}

// AppendBinary appends the 64-byte wire form of h to b.
func (h *Init) AppendBinary(b []byte) ([]byte, error) {
	var w [InitSize]byte
	be.PutUint32(w[0:], Magic)
	be.PutUint32(w[4:], Version)
	copy(w[8:24], h.UUID[:])
	w[24] = h.ID
	return append(b, w[:]...), nil
}

// UnmarshalBinary decodes a 64-byte MultiFDInit_t, checking magic and
// version. Unused bytes are ignored, as QEMU does.
func (h *Init) UnmarshalBinary(b []byte) error {
	if len(b) != InitSize {
		return fmt.Errorf("%w: %d bytes, want %d", ErrBadHandshake, len(b), InitSize)
	}
	if m := be.Uint32(b[0:]); m != Magic {
		return fmt.Errorf("%w: magic %#x, want %#x", ErrBadHandshake, m, Magic)
	}
	if v := be.Uint32(b[4:]); v != Version {
		return fmt.Errorf("%w: version %d, want %d", ErrBadHandshake, v, Version)
	}
	copy(h.UUID[:], b[8:24])
	h.ID = b[24]
	return nil
}

// Check reports whether h belongs to a transfer with the given uuid and
// channel count. (QEMU checks id > channels; an id equal to the count
// would index past its array, so this rejects it.)
func (h *Init) Check(uuid [16]byte, channels int) error {
	if h.UUID != uuid {
		return fmt.Errorf("%w: uuid %x, want %x", ErrBadHandshake, h.UUID, uuid)
	}
	if int(h.ID) >= channels {
		return fmt.Errorf("%w: channel id %d, but only %d channels", ErrBadHandshake, h.ID, channels)
	}
	return nil
}

// Prefix is MultiFDPacketHdr_t, the first 12 bytes of every packet.
type Prefix struct {
	Flags uint32
}

// UnmarshalBinary decodes and checks the 12-byte packet prefix: magic,
// version and no unknown flag bits.
func (p *Prefix) UnmarshalBinary(b []byte) error {
	if len(b) < PrefixSize {
		return fmt.Errorf("%w: %d header bytes, want %d", ErrBadPacket, len(b), PrefixSize)
	}
	if m := be.Uint32(b[0:]); m != Magic {
		return fmt.Errorf("%w: magic %#x, want %#x", ErrBadPacket, m, Magic)
	}
	if v := be.Uint32(b[4:]); v != Version {
		return fmt.Errorf("%w: version %d, want %d", ErrBadPacket, v, Version)
	}
	f := be.Uint32(b[8:])
	if f&^flagsKnown != 0 {
		return fmt.Errorf("%w: unknown flags %#x", ErrBadPacket, f&^flagsKnown)
	}
	if f&FlagDeviceState != 0 && f&FlagSync != 0 {
		return fmt.Errorf("%w: SYNC flag on a device-state packet", ErrBadPacket)
	}
	p.Flags = f
	return nil
}

// DeviceState reports whether the packet is a device-state packet.
func (p Prefix) DeviceState() bool { return p.Flags&FlagDeviceState != 0 }

// RAM is a RAM or SYNC packet header (QEMU 10's MultiFDPacket_t). Offsets
// lists the normal pages first, then the zero pages.
type RAM struct {
	Flags          uint32
	PagesAlloc     uint32
	NormalPages    uint32
	NextPacketSize uint32
	PacketNum      uint64
	ZeroPages      uint32
	Block          []byte   // block name without the NUL padding
	Offsets        []uint64 // NormalPages + ZeroPages byte offsets
}

// AppendBinary appends the header for packets of up to pages pages
// ([RAMHeaderSize](pages) bytes) to b. Unused offset slots are zero.
func (h *RAM) AppendBinary(b []byte, pages int) ([]byte, error) {
	n := int(h.NormalPages) + int(h.ZeroPages)
	switch {
	case len(h.Offsets) != n:
		return b, fmt.Errorf("%w: %d offsets for %d pages", ErrBadPacket, len(h.Offsets), n)
	case n > pages || int(h.PagesAlloc) > pages:
		return b, fmt.Errorf("%w: %d pages in a packet of %d", ErrBadPacket, n, pages)
	case len(h.Block) >= NameSize:
		return b, fmt.Errorf("%w: block name of %d bytes, at most %d", ErrBadPacket, len(h.Block), NameSize-1)
	}
	start := len(b)
	b = append(b, make([]byte, RAMHeaderSize(pages))...)
	w := b[start:]
	be.PutUint32(w[0:], Magic)
	be.PutUint32(w[4:], Version)
	be.PutUint32(w[8:], h.Flags)
	be.PutUint32(w[12:], h.PagesAlloc)
	be.PutUint32(w[16:], h.NormalPages)
	be.PutUint32(w[20:], h.NextPacketSize)
	be.PutUint64(w[24:], h.PacketNum)
	be.PutUint32(w[32:], h.ZeroPages)
	copy(w[64:64+NameSize], h.Block)
	for i, off := range h.Offsets {
		be.PutUint64(w[RAMFixedSize+8*i:], off)
	}
	return b, nil
}

// UnmarshalBinary decodes a whole RAM packet header of [RAMHeaderSize](pages)
// bytes, prefix included, into h, reusing h.Offsets' storage. It checks
// the counts (pages_alloc against pages, normal and zero pages against
// pages_alloc) and, for packets that carry pages, that the block name is
// terminated. Offsets are checked against blocks by the caller.
func (h *RAM) UnmarshalBinary(b []byte, pages int) error {
	if len(b) != RAMHeaderSize(pages) {
		return fmt.Errorf("%w: header of %d bytes, want %d", ErrBadPacket, len(b), RAMHeaderSize(pages))
	}
	var p Prefix
	if err := p.UnmarshalBinary(b); err != nil {
		return err
	}
	if p.DeviceState() {
		return fmt.Errorf("%w: device-state flag on a RAM packet", ErrBadPacket)
	}
	h.Flags = p.Flags
	h.PagesAlloc = be.Uint32(b[12:])
	h.NormalPages = be.Uint32(b[16:])
	h.NextPacketSize = be.Uint32(b[20:])
	h.PacketNum = be.Uint64(b[24:])
	h.ZeroPages = be.Uint32(b[32:])
	switch {
	case h.PagesAlloc > uint32(pages):
		return fmt.Errorf("%w: pages_alloc %d, at most %d", ErrBadPacket, h.PagesAlloc, pages)
	case h.NormalPages > h.PagesAlloc:
		return fmt.Errorf("%w: %d normal pages, pages_alloc %d", ErrBadPacket, h.NormalPages, h.PagesAlloc)
	case h.ZeroPages > h.PagesAlloc-h.NormalPages:
		return fmt.Errorf("%w: %d zero and %d normal pages, pages_alloc %d", ErrBadPacket, h.ZeroPages, h.NormalPages, h.PagesAlloc)
	}
	n := int(h.NormalPages + h.ZeroPages)
	h.Offsets = h.Offsets[:0]
	h.Block = nil
	if n == 0 {
		return nil
	}
	name := b[64 : 64+NameSize]
	end := bytes.IndexByte(name, 0)
	if end < 0 {
		return fmt.Errorf("%w: block name not NUL-terminated", ErrBadPacket)
	}
	h.Block = name[:end]
	for i := range n {
		h.Offsets = append(h.Offsets, be.Uint64(b[RAMFixedSize+8*i:]))
	}
	return nil
}

// DeviceState is a device-state packet header (QEMU 10's
// MultiFDPacketDeviceState_t); NextPacketSize bytes of blob follow it.
type DeviceState struct {
	Flags          uint32
	IDStr          []byte // without the NUL padding
	InstanceID     uint32
	NextPacketSize uint32
}

// AppendBinary appends the 276-byte header to b.
func (h *DeviceState) AppendBinary(b []byte) ([]byte, error) {
	if len(h.IDStr) >= NameSize {
		return b, fmt.Errorf("%w: idstr of %d bytes, at most %d", ErrBadPacket, len(h.IDStr), NameSize-1)
	}
	var w [DeviceStateSize]byte
	be.PutUint32(w[0:], Magic)
	be.PutUint32(w[4:], Version)
	be.PutUint32(w[8:], h.Flags|FlagDeviceState)
	copy(w[12:12+NameSize], h.IDStr)
	be.PutUint32(w[268:], h.InstanceID)
	be.PutUint32(w[272:], h.NextPacketSize)
	return append(b, w[:]...), nil
}

// UnmarshalBinary decodes a 276-byte device-state header with QEMU's
// checks: device-state flag set, no SYNC, terminated idstr, non-empty blob.
// The blob's upper bound is the caller's to check.
func (h *DeviceState) UnmarshalBinary(b []byte) error {
	if len(b) != DeviceStateSize {
		return fmt.Errorf("%w: device-state header of %d bytes, want %d", ErrBadPacket, len(b), DeviceStateSize)
	}
	var p Prefix
	if err := p.UnmarshalBinary(b); err != nil {
		return err
	}
	if !p.DeviceState() {
		return fmt.Errorf("%w: device-state packet without the device-state flag", ErrBadPacket)
	}
	if p.Flags&FlagMethodMask != 0 {
		return fmt.Errorf("%w: compressed device-state packet (flags %#x)", ErrBadPacket, p.Flags)
	}
	name := b[12 : 12+NameSize]
	end := bytes.IndexByte(name, 0)
	if end < 0 {
		return fmt.Errorf("%w: unterminated device-state idstr", ErrBadPacket)
	}
	h.Flags = p.Flags
	h.IDStr = name[:end]
	h.InstanceID = be.Uint32(b[268:])
	h.NextPacketSize = be.Uint32(b[272:])
	if h.NextPacketSize == 0 {
		return fmt.Errorf("%w: empty device-state packet", ErrBadPacket)
	}
	return nil
}
