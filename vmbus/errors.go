package vmbus

import (
	"errors"
	"fmt"
)

// Sentinel errors, for errors.Is.
var (
	// ErrClosed reports a call on a Ring after Close, or a blocked call
	// that Close released.
	ErrClosed = errors.New("vmbus: ring closed")
	// ErrWouldBlock reports a ring that is too full for the packet (write)
	// or holds no packet (read): the kernel's and DPDK's -EAGAIN. Nothing was
	// written or consumed.
	ErrWouldBlock = errors.New("vmbus: ring would block")
	// ErrTooLarge reports a packet larger than a ring packet can be (len8 is
	// 16 bits), than the configured maximum packet size, or than the ring can
	// ever hold. In the last case the error also matches ErrWouldBlock, as
	// Linux and DPDK report -EAGAIN for it; Write returns it at once.
	ErrTooLarge = errors.New("vmbus: packet too large")
	// ErrShortBuffer reports a caller buffer too small for the packet
	// (-ENOBUFS); nothing was consumed and the returned length is the size
	// needed.
	ErrShortBuffer = errors.New("vmbus: buffer too small for packet")
	// ErrInvalid reports a bad argument: ring memory size or alignment,
	// configuration, header extension length.
	ErrInvalid = errors.New("vmbus: invalid argument")

	// ErrProtocol is matched by every [*ProtocolError]: the peer broke the
	// ring protocol.
	ErrProtocol = errors.New("vmbus: ring protocol violation")
	// ErrBadIndex reports a write_index or read_index from the peer that is
	// out of the data area, not a multiple of 8, or moved in a way the
	// protocol does not allow (backwards, or past the other index).
	ErrBadIndex = errors.New("vmbus: bad ring index")
	// ErrBadDescriptor reports a packet descriptor whose len8 or offset8 is
	// impossible (len8 < 2, offset8 < 2, offset8 > len8).
	ErrBadDescriptor = errors.New("vmbus: bad packet descriptor")
	// ErrTruncated reports a packet that is not completely published: the
	// write_index leaves less than a descriptor, or less than the packet and
	// its trailer, available.
	ErrTruncated = errors.New("vmbus: packet not completely published")
	// ErrBadPending reports a pending_send_sz larger than the data area.
	ErrBadPending = errors.New("vmbus: bad pending_send_sz")
)

// ProtocolError describes a lie found in the peer's half of a ring. It
// matches [ErrProtocol] and its Err (one of ErrBadIndex, ErrBadDescriptor,
// ErrTruncated, ErrTooLarge, ErrBadPending).
type ProtocolError struct {
	// Field is the ring field that holds the bad value: "write_index",
	// "read_index", "pending_send_sz", "len8" or "offset8".
	Field string
	// Offset is the data-area offset where this end was reading or
	// writing: the packet's start for descriptor fields.
	Offset uint32
	// Value is the bad value as read from the ring.
	Value uint64
	Err   error
}

func (e *ProtocolError) Error() string {
	return fmt.Sprintf("vmbus: ring protocol violation at data offset %d: %s=%d: %v",
		e.Offset, e.Field, e.Value, e.Err)
}

// Unwrap returns ErrProtocol and the specific error.
func (e *ProtocolError) Unwrap() []error { return []error{ErrProtocol, e.Err} }

// tooLargeForRing is ErrTooLarge for a packet that no state of the ring can
// hold; it matches ErrWouldBlock as well.
type tooLargeForRing struct{ need, max int }

func (e *tooLargeForRing) Error() string {
	return fmt.Sprintf("vmbus: packet too large: %d bytes, the ring holds at most %d", e.need, e.max)
}

func (e *tooLargeForRing) Unwrap() []error { return []error{ErrTooLarge, ErrWouldBlock} }
