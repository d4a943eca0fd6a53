package core

import "github.com/pagewire/pagewire/internal/engine"

// Sentinel errors, for errors.Is. Errors from a transfer wrap one of them,
// usually inside a [*ChannelError]; a peer's error ([*RemoteError])
// matches the sentinels its own error matched.
var (
	// ErrBadHandshake reports a channel handshake (MultiFDInit_t) that is
	// malformed or does not fit the transfer: magic, version, uuid,
	// channel id out of range, or a channel opened twice.
	ErrBadHandshake = engine.ErrBadHandshake
	// ErrBadPacket reports a packet that breaks the wire format: magic,
	// version, flags, page counts, block, offsets, lengths.
	ErrBadPacket = engine.ErrBadPacket
	// ErrBadControl reports a malformed or unexpected control message.
	ErrBadControl = engine.ErrBadControl
	// ErrMethodMismatch reports that the two ends use different methods.
	ErrMethodMismatch = engine.ErrMethodMismatch
	// ErrMethod reports a method (plugin) that failed or misbehaved.
	ErrMethod = engine.ErrMethod
	// ErrPeerGone reports a peer that closed its end before the transfer
	// was complete.
	ErrPeerGone = engine.ErrPeerGone
	// ErrClosed reports a call on a Sender that was closed or failed.
	ErrClosed = engine.ErrClosed
	// ErrBadStream reports a QEMU main migration stream that breaks its
	// format (package qemu), as a peer may report it.
	ErrBadStream = engine.ErrBadStream
)

// ChannelError is an error on one channel of a transfer: Channel is the
// multifd channel id, or -1 for the control channel; Packet counts the
// channel's packets from 1 (0 is the handshake).
type ChannelError = engine.ChannelError

// RemoteError is the failure the peer reported: Side ("sender" or
// "receiver") and Msg say who and why. It matches (errors.Is) every
// sentinel the peer's own error matched, as the peer sent their codes
// (Codes); a peer that sends text only matches none.
type RemoteError = engine.RemoteError

// ErrorCodes returns the codes, as sent to a peer, of every sentinel err
// matches (see docs/protocol.md).
func ErrorCodes(err error) []byte { return engine.ErrorCodes(err) }
