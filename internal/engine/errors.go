package engine

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/pagewire/pagewire/core/wire"
	"github.com/pagewire/pagewire/sdk"
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
// Besides its text the peer sends a code for every sentinel its error
// matched, so that errors.Is works across the ends: a receiver's method
// mismatch is, at the sender, a RemoteError that errors.Is
// [ErrMethodMismatch]. A peer that sends text only yields no codes.
type RemoteError struct {
	// Side is "sender" or "receiver": who reported it.
	Side string
	Msg  string
	// Codes are the peer's codes, as sent; unknown ones are kept and
	// ignored.
	Codes []byte
}

func (e *RemoteError) Error() string { return e.Side + " failed: " + e.Msg }

// Is reports whether the peer's error matched target, one of the
// sentinels that have a code (see [ErrorCodes]).
func (e *RemoteError) Is(target error) bool {
	for _, c := range e.Codes {
		if int(c) < len(codeErrors) && codeErrors[c] != nil && codeErrors[c] == target {
			return true
		}
	}
	return false
}

// codeErrors maps a code on the wire to its sentinel. Codes are part of
// the protocol: never renumber, only append.
var codeErrors = [...]error{
	1:  ErrBadHandshake,
	2:  ErrBadPacket,
	3:  ErrBadControl,
	4:  ErrMethodMismatch,
	5:  ErrMethod,
	6:  sdk.ErrPlugin,
	7:  sdk.ErrDeadline,
	8:  sdk.ErrCorrupt,
	9:  ErrPeerGone,
	10: context.Canceled,
	11: context.DeadlineExceeded,
	12: os.ErrDeadlineExceeded,
	13: ErrBadStream,
}

// ErrorCodes returns the codes of every sentinel err matches, as a peer
// is told them with the error's text.
func ErrorCodes(err error) []byte {
	var codes []byte
	for c, target := range codeErrors {
		if target != nil && errors.Is(err, target) {
			codes = append(codes, byte(c))
		}
	}
	return codes
}

// remoteError makes the error a peer reported in an ERROR message.
func remoteError(side string, body []byte) *RemoteError {
	text, codes := wire.ParseError(body)
	return &RemoteError{Side: side, Msg: text, Codes: codes}
}

// errorMessage is the body of the ERROR message that tells the peer why
// side failed.
func errorMessage(side string, err error) []byte {
	return wire.AppendError(nil, side+": "+err.Error(), ErrorCodes(err))
}

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
