package core

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/pagewire/pagewire/core/wire"
)

// Sentinel errors, for errors.Is. Errors from a transfer wrap one of them,
// usually inside a [*ChannelError].
var (
	// ErrBadHandshake reports a channel handshake (MultiFDInit_t) that is
	// malformed or does not fit the transfer: magic, version, uuid,
	// channel id out of range, or a channel opened twice.
	ErrBadHandshake = wire.ErrBadHandshake
	// ErrBadPacket reports a packet that breaks the wire format: magic,
	// version, flags, page counts, block, offsets, lengths.
	ErrBadPacket = wire.ErrBadPacket
	// ErrBadControl reports a malformed or unexpected control message.
	ErrBadControl = wire.ErrBadControl
	// ErrMethodMismatch reports that the two ends use different methods.
	ErrMethodMismatch = errors.New("method mismatch")
	// ErrMethod reports a method (plugin) that failed or misbehaved.
	ErrMethod = errors.New("method failed")
	// ErrPeerGone reports a peer that closed its end before the transfer
	// was complete.
	ErrPeerGone = errors.New("peer closed the connection")
	// ErrClosed reports a call on a Sender that was closed or failed.
	ErrClosed = errors.New("sender closed")
)

// ChannelError is an error on one channel of a transfer.
type ChannelError struct {
	// Channel is the multifd channel id, or -1 for the control channel.
	Channel int
	// Packet counts the packets of the channel from 1; 0 is the handshake.
	Packet uint64
	Err    error
}

func (e *ChannelError) Error() string {
	if e.Channel < 0 {
		return fmt.Sprintf("control channel: %v", e.Err)
	}
	if e.Packet == 0 {
		return fmt.Sprintf("channel %d, handshake: %v", e.Channel, e.Err)
	}
	return fmt.Sprintf("channel %d, packet %d: %v", e.Channel, e.Packet, e.Err)
}

func (e *ChannelError) Unwrap() error { return e.Err }

// RemoteError is the failure the peer reported over the control channel.
type RemoteError struct {
	// Side is "sender" or "receiver": who reported it.
	Side string
	Msg  string
}

func (e *RemoteError) Error() string { return e.Side + " failed: " + e.Msg }

var be = binary.BigEndian

// errorGrace bounds the best-effort exchange of failure reasons between
// the two ends.
const errorGrace = 500 * time.Millisecond

// firstError keeps a transfer's first error, with one exception: a peer
// that hung up (ErrPeerGone) usually tells why over the control channel
// a moment later, and its reason replaces the bare hang-up. It reports
// whether next was the first error.
func firstError(cur, next error) (error, bool) {
	switch {
	case cur == nil:
		return next, true
	case isRemote(next) && !isRemote(cur) && errors.Is(cur, ErrPeerGone):
		return next, false
	}
	return cur, false
}
