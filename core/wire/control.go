package wire

import (
	"errors"
	"fmt"
	"io"
	"math/bits"
)

// ControlMagic opens pagewire's control channel ("PGWR"). A receiver tells
// the control channel from multifd channels ([Magic]) and from a QEMU main
// channel ("QEVM") by these first four bytes.
const ControlMagic = 0x50475752

// QEMUFileMagic opens a QEMU main migration channel ("QEVM").
const QEMUFileMagic = 0x5145564d

// ControlVersion is the version of the control protocol in [Hello].
const ControlVersion = 1

// Limits of the control protocol, checked on both sides.
const (
	MaxChannels    = 255
	MaxPacketPages = 1024
	MinPageSize    = 512
	MaxPageSize    = 64 << 10
	MaxBlocks      = 200      // a full hello (200 x 264 bytes of blocks) fits MaxMessage
	MaxMessage     = 64 << 10 // largest control message body
	maxErrorText   = 4 << 10
)

// Control message types.
const (
	MsgHello  = 1    // sender -> receiver: the transfer's parameters
	MsgSync   = 2    // sender -> receiver: every channel wrote SYNC n
	MsgEnd    = 3    // sender -> receiver: nothing more will be sent
	MsgError  = 4    // either way: the transfer failed, text says why (and codes, see AppendError)
	MsgZero   = 5    // sender -> receiver: zero pages (QEMU 7.2 dialect)
	MsgDevice = 6    // sender -> receiver: an empty device-state blob
	MsgAccept = 0x81 // receiver -> sender: hello accepted
	MsgDone   = 0x82 // receiver -> sender: every page landed
)

// ErrBadControl reports a malformed control-channel message.
var ErrBadControl = errors.New("bad control message")

// BlockInfo names one RAM block and its size in bytes.
type BlockInfo struct {
	Name string
	Size uint64
}

// Hello opens a transfer: the sender's parameters, which the receiver
// checks against its own before any page moves.
type Hello struct {
	UUID        [16]byte
	Channels    int
	PageSize    int
	PacketPages int
	MethodFlag  uint32
	Method      string
	Blocks      []BlockInfo
	// ZeroOnControl selects QEMU 7.2's dialect: zero pages travel on the
	// control channel (MsgZero), never as zero_pages in packets, and the
	// control channel joins every SYNC barrier. Otherwise QEMU 10.0's.
	ZeroOnControl bool
	// Delta says that RAM packets may carry delta pages (FlagDelta). A
	// receiver that does not know the flag refuses the hello.
	Delta bool
}

// Check reports whether h's parameters are within the protocol's limits.
func (h *Hello) Check() error {
	switch {
	case h.Channels < 1 || h.Channels > MaxChannels:
		return fmt.Errorf("%w: %d channels, want 1..%d", ErrBadControl, h.Channels, MaxChannels)
	case h.PageSize < MinPageSize || h.PageSize > MaxPageSize || bits.OnesCount(uint(h.PageSize)) != 1:
		return fmt.Errorf("%w: page size %d, want a power of two in %d..%d", ErrBadControl, h.PageSize, MinPageSize, MaxPageSize)
	case h.PacketPages < 1 || h.PacketPages > MaxPacketPages:
		return fmt.Errorf("%w: %d pages per packet, want 1..%d", ErrBadControl, h.PacketPages, MaxPacketPages)
	case h.MethodFlag&^FlagMethodMask != 0:
		return fmt.Errorf("%w: method flag %#x outside %#x", ErrBadControl, h.MethodFlag, FlagMethodMask)
	case h.Method == "" || len(h.Method) > 255:
		return fmt.Errorf("%w: method name of %d bytes", ErrBadControl, len(h.Method))
	case len(h.Blocks) > MaxBlocks:
		return fmt.Errorf("%w: %d blocks, at most %d", ErrBadControl, len(h.Blocks), MaxBlocks)
	}
	seen := make(map[string]bool, len(h.Blocks))
	for _, b := range h.Blocks {
		switch {
		case b.Name == "" || len(b.Name) >= NameSize:
			return fmt.Errorf("%w: block name of %d bytes, want 1..%d", ErrBadControl, len(b.Name), NameSize-1)
		case seen[b.Name]:
			return fmt.Errorf("%w: block %q listed twice", ErrBadControl, b.Name)
		case b.Size%uint64(h.PageSize) != 0:
			return fmt.Errorf("%w: block %q of %d bytes is not a whole number of %d-byte pages", ErrBadControl, b.Name, b.Size, h.PageSize)
		case b.Size > 1<<48:
			return fmt.Errorf("%w: block %q of %d bytes is too large", ErrBadControl, b.Name, b.Size)
		}
		seen[b.Name] = true
	}
	return nil
}

// AppendBinary appends the hello body to b.
func (h *Hello) AppendBinary(b []byte) ([]byte, error) {
	if err := h.Check(); err != nil {
		return b, err
	}
	return h.appendTo(b), nil
}

// appendTo appends the hello body without checking it.
func (h *Hello) appendTo(b []byte) []byte {
	b = be.AppendUint32(b, ControlVersion)
	b = append(b, h.UUID[:]...)
	b = be.AppendUint32(b, uint32(h.Channels))
	b = be.AppendUint32(b, uint32(h.PageSize))
	b = be.AppendUint32(b, uint32(h.PacketPages))
	b = be.AppendUint32(b, h.MethodFlag)
	b = append(b, byte(len(h.Method)))
	b = append(b, h.Method...)
	b = be.AppendUint16(b, uint16(len(h.Blocks)))
	for _, bl := range h.Blocks {
		b = append(b, byte(len(bl.Name)))
		b = append(b, bl.Name...)
		b = be.AppendUint64(b, bl.Size)
	}
	var flags byte
	if h.ZeroOnControl {
		flags |= helloZeroOnControl
	}
	if h.Delta {
		flags |= helloDelta
	}
	return append(b, flags)
}

// Hello flags.
const (
	helloZeroOnControl = 1
	helloDelta         = 2
)

// UnmarshalBinary decodes and checks a hello body.
func (h *Hello) UnmarshalBinary(b []byte) error {
	r := reader{b: b}
	if v := r.u32(); r.err == nil && v != ControlVersion {
		return fmt.Errorf("%w: control protocol version %d, want %d", ErrBadControl, v, ControlVersion)
	}
	copy(h.UUID[:], r.bytes(16))
	h.Channels = int(r.u32())
	h.PageSize = int(r.u32())
	h.PacketPages = int(r.u32())
	h.MethodFlag = r.u32()
	h.Method = string(r.bytes(int(r.u8())))
	n := int(r.u16())
	if r.err == nil && n > MaxBlocks {
		return fmt.Errorf("%w: %d blocks, at most %d", ErrBadControl, n, MaxBlocks)
	}
	h.Blocks = h.Blocks[:0]
	for i := 0; i < n && r.err == nil; i++ {
		name := string(r.bytes(int(r.u8())))
		h.Blocks = append(h.Blocks, BlockInfo{Name: name, Size: r.u64()})
	}
	flags := r.u8()
	if r.err != nil {
		return fmt.Errorf("%w: hello: %v", ErrBadControl, r.err)
	}
	if flags&^(helloZeroOnControl|helloDelta) != 0 {
		return fmt.Errorf("%w: hello: unknown flags %#x", ErrBadControl, flags)
	}
	h.ZeroOnControl = flags&helloZeroOnControl != 0
	h.Delta = flags&helloDelta != 0
	if len(r.b) != 0 {
		return fmt.Errorf("%w: hello: %d trailing bytes", ErrBadControl, len(r.b))
	}
	return h.Check()
}

// End closes a transfer: how many SYNCs and data packets the sender sent
// over all channels, so the receiver can check it saw the same.
type End struct {
	Syncs   uint64
	Packets uint64
}

// AppendBinary appends the end body to b.
func (e *End) AppendBinary(b []byte) ([]byte, error) {
	b = be.AppendUint64(b, e.Syncs)
	return be.AppendUint64(b, e.Packets), nil
}

// UnmarshalBinary decodes an end body.
func (e *End) UnmarshalBinary(b []byte) error {
	if len(b) != 16 {
		return fmt.Errorf("%w: end message of %d bytes, want 16", ErrBadControl, len(b))
	}
	e.Syncs, e.Packets = be.Uint64(b), be.Uint64(b[8:])
	return nil
}

// MaxZeroOffsets is the most offsets one zero-pages message carries.
const MaxZeroOffsets = (MaxMessage - NameSize) / 8

// AppendZero appends a zero-pages body: u8 n, n bytes of block name, then
// big-endian u64 page offsets to the end.
func AppendZero(b []byte, block []byte, offsets []uint64) []byte {
	b = append(b, byte(len(block)))
	b = append(b, block...)
	for _, o := range offsets {
		b = be.AppendUint64(b, o)
	}
	return b
}

// ParseZero splits a zero-pages body into the block name and the raw
// offsets (8 bytes each; read them with [ZeroOffset]).
func ParseZero(b []byte) (block []byte, offsets []byte, err error) {
	if len(b) < 1 || len(b) < 1+int(b[0]) || b[0] == 0 {
		return nil, nil, fmt.Errorf("%w: zero-pages message without a block name", ErrBadControl)
	}
	block, offsets = b[1:1+b[0]], b[1+b[0]:]
	if len(offsets)%8 != 0 || len(offsets) == 0 {
		return nil, nil, fmt.Errorf("%w: zero-pages message with %d bytes of offsets", ErrBadControl, len(offsets))
	}
	return block, offsets, nil
}

// ZeroOffset returns the i-th offset of a zero-pages body's offsets.
func ZeroOffset(offsets []byte, i int) uint64 { return be.Uint64(offsets[8*i:]) }

// AppendDevice appends an empty-blob device-state body: u8 n, n bytes of
// idstr, be32 instance id.
func AppendDevice(b []byte, idstr string, instance uint32) []byte {
	b = append(b, byte(len(idstr)))
	b = append(b, idstr...)
	return be.AppendUint32(b, instance)
}

// ParseDevice reads an empty-blob device-state body.
func ParseDevice(b []byte) (idstr string, instance uint32, err error) {
	if len(b) < 1 || len(b) != 1+int(b[0])+4 {
		return "", 0, fmt.Errorf("%w: device-state message of %d bytes", ErrBadControl, len(b))
	}
	return string(b[1 : 1+b[0]]), be.Uint32(b[1+b[0]:]), nil
}

// WriteMessage writes one control message: type, 4-byte length, body.
func WriteMessage(w io.Writer, typ byte, body []byte) error {
	if len(body) > MaxMessage {
		return fmt.Errorf("%w: message of %d bytes, at most %d", ErrBadControl, len(body), MaxMessage)
	}
	buf := make([]byte, 0, 5+len(body))
	buf = append(buf, typ)
	buf = be.AppendUint32(buf, uint32(len(body)))
	buf = append(buf, body...)
	_, err := w.Write(buf)
	return err
}

// ReadMessage reads one control message. buf is reused for the body when
// it is large enough. A clean end of stream before the message is io.EOF.
func ReadMessage(r io.Reader, buf []byte) (typ byte, body []byte, err error) {
	var h [5]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		if err == io.ErrUnexpectedEOF {
			err = fmt.Errorf("%w: truncated message header: %w", ErrBadControl, io.ErrUnexpectedEOF)
		}
		return 0, nil, err
	}
	n := be.Uint32(h[1:])
	if n > MaxMessage {
		return 0, nil, fmt.Errorf("%w: message of %d bytes, at most %d", ErrBadControl, n, MaxMessage)
	}
	switch h[0] {
	case MsgHello, MsgSync, MsgEnd, MsgError, MsgZero, MsgDevice, MsgAccept, MsgDone:
	default:
		return 0, nil, fmt.Errorf("%w: unknown message type %#x", ErrBadControl, h[0])
	}
	if cap(buf) < int(n) {
		buf = make([]byte, n)
	}
	body = buf[:n]
	if _, err := io.ReadFull(r, body); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			err = fmt.Errorf("%w: truncated message body: %w", ErrBadControl, io.ErrUnexpectedEOF)
		}
		return 0, nil, err
	}
	return h[0], body, nil
}

// ErrorText clips an error message to what an error message may carry.
func ErrorText(s string) []byte {
	if len(s) > maxErrorText {
		s = s[:maxErrorText]
	}
	return []byte(s)
}

// MaxErrorCodes bounds the codes an error message carries.
const MaxErrorCodes = 16

// AppendError appends an ERROR message body to b: the text (clipped to
// 4 KiB, NUL bytes replaced by spaces), then, when there are codes, a
// NUL byte and one byte per code (at most [MaxErrorCodes]). A peer that
// predates the codes reads the whole body as text; one that knows them
// finds them after the last NUL.
func AppendError(b []byte, text string, codes []byte) []byte {
	start := len(b)
	b = append(b, ErrorText(text)...)
	for i := start; i < len(b); i++ {
		if b[i] == 0 {
			b[i] = ' '
		}
	}
	if len(codes) == 0 {
		return b
	}
	b = append(b, 0)
	return append(b, codes[:min(len(codes), MaxErrorCodes)]...)
}

// ParseError splits an ERROR message body into its text and its codes
// (nil from a peer that sends text only). It never fails: the body is
// the peer's word, and any bytes are a valid text.
func ParseError(body []byte) (text string, codes []byte) {
	for i := len(body) - 1; i >= 0 && len(body)-1-i <= MaxErrorCodes; i-- {
		if body[i] == 0 {
			return string(body[:i]), body[i+1:]
		}
	}
	return string(body), nil
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) bytes(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n > len(r.b) {
		r.err = io.ErrUnexpectedEOF
		r.b = nil
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8() uint8 {
	if b := r.bytes(1); b != nil {
		return b[0]
	}
	return 0
}

func (r *reader) u16() uint16 {
	if b := r.bytes(2); b != nil {
		return be.Uint16(b)
	}
	return 0
}

func (r *reader) u32() uint32 {
	if b := r.bytes(4); b != nil {
		return be.Uint32(b)
	}
	return 0
}

func (r *reader) u64() uint64 {
	if b := r.bytes(8); b != nil {
		return be.Uint64(b)
	}
	return 0
}
