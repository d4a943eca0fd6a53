package core_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pagewire/pagewire/core"
	"github.com/pagewire/pagewire/core/wire"
	"github.com/pagewire/pagewire/sdk"
)

// sentinels are the errors whose identity crosses from one end of a
// transfer to the other.
var sentinels = []error{
	core.ErrBadHandshake, core.ErrBadPacket, core.ErrBadControl,
	core.ErrMethodMismatch, core.ErrMethod, core.ErrPeerGone, core.ErrBadStream,
	sdk.ErrPlugin, sdk.ErrDeadline, sdk.ErrCorrupt,
	context.Canceled, context.DeadlineExceeded, os.ErrDeadlineExceeded,
}

// TestRemoteErrorIsReceiverSentinel: a receiver that fails with an error
// wrapping a sentinel makes the sender's calls (SendPages, Sync, Close)
// return a RemoteError that errors.Is that sentinel, and no other.
func TestRemoteErrorIsReceiverSentinel(t *testing.T) {
	for _, sentinel := range sentinels {
		t.Run(sentinel.Error(), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			ln, d := tcpTransport(t)
			rc := receive(ctx, ln, core.ReceiverConfig{
				OnDeviceState: func(string, uint32, []byte) error { return fmt.Errorf("disk on fire: %w", sentinel) },
			})
			src := make([]byte, 1<<20)
			s, err := core.NewSender(ctx, d, core.Blocks{{Name: "pc.ram", Data: src}}, core.SenderConfig{Channels: 2})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.SendDeviceState("dev", 0, []byte("blob")); err != nil {
				t.Fatal(err)
			}
			// The calls a user makes return the receiver's reason as soon
			// as they fail, not only Close.
			var callErr error
			for deadline := time.Now().Add(10 * time.Second); callErr == nil && time.Now().Before(deadline); {
				if callErr = s.SendBlock("pc.ram"); callErr == nil {
					callErr = s.Sync()
				}
			}
			_, closeErr := s.Close()
			res := wait(t, rc)
			if !errors.Is(res.err, sentinel) {
				t.Errorf("receiver: %v, want it to wrap %v", res.err, sentinel)
			}
			for what, err := range map[string]error{"SendBlock/Sync": callErr, "Close": closeErr} {
				var re *core.RemoteError
				if !errors.As(err, &re) || re.Side != "receiver" || !strings.Contains(re.Msg, "disk on fire") {
					t.Errorf("sender's %s: %v, want the receiver's reason", what, err)
					continue
				}
				checkOnly(t, what, err, sentinel)
			}
		})
	}
}

// TestRemoteErrorIsSenderSentinel: the receiver of a sender that fails
// with an error wrapping a sentinel returns a RemoteError that errors.Is
// that sentinel.
func TestRemoteErrorIsSenderSentinel(t *testing.T) {
	for _, sentinel := range sentinels {
		t.Run(sentinel.Error(), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			ln, d := tcpTransport(t)
			rc := receive(ctx, ln, core.ReceiverConfig{})
			s, err := core.NewSender(ctx, d, core.Blocks{{Name: "pc.ram", Data: make([]byte, 1<<20)}}, core.SenderConfig{Channels: 2})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.SendBlock("pc.ram"); err != nil {
				t.Fatal(err)
			}
			_, err = s.Abort(fmt.Errorf("source vanished: %w", sentinel))
			if !errors.Is(err, sentinel) {
				t.Errorf("sender: %v, want it to wrap %v", err, sentinel)
			}
			res := wait(t, rc)
			var re *core.RemoteError
			if !errors.As(res.err, &re) || re.Side != "sender" || !strings.Contains(re.Msg, "source vanished") {
				t.Fatalf("receiver: %v, want the sender's reason", res.err)
			}
			checkOnly(t, "receiver", res.err, sentinel)
		})
	}
}

// checkOnly checks that err matches sentinel and, of the others, only
// those that sentinel itself matches.
func checkOnly(t *testing.T, what string, err, sentinel error) {
	t.Helper()
	if !errors.Is(err, sentinel) {
		t.Errorf("%s: errors.Is(%q, %v) is false", what, err, sentinel)
	}
	for _, other := range sentinels {
		if other != sentinel && !errors.Is(sentinel, other) && errors.Is(err, other) {
			t.Errorf("%s: errors.Is(%q, %v) is true", what, err, other)
		}
	}
}

// TestRemoteErrorCodes: codes travel after the text, a peer that sends
// text only gives a RemoteError that matches nothing, and hostile codes
// (unknown, zero, too many) are ignored.
func TestRemoteErrorCodes(t *testing.T) {
	err := &core.ChannelError{Channel: 1, Packet: 3, Err: fmt.Errorf("%w: %w", core.ErrMethod, sdk.ErrCorrupt)}
	body := wire.AppendError(nil, "receiver: "+err.Error(), core.ErrorCodes(err))
	text, codes := wire.ParseError(body)
	if text != "receiver: channel 1, packet 3: method failed: corrupt payload" || len(codes) != 2 {
		t.Errorf("ParseError: %q %v", text, codes)
	}
	re := &core.RemoteError{Side: "receiver", Msg: text, Codes: codes}
	if !errors.Is(re, core.ErrMethod) || !errors.Is(re, sdk.ErrCorrupt) || errors.Is(re, core.ErrBadPacket) {
		t.Errorf("codes %v: Is does not follow them", codes)
	}

	// An older peer: text only.
	text, codes = wire.ParseError([]byte("receiver: method mismatch: lz4"))
	if text != "receiver: method mismatch: lz4" || codes != nil {
		t.Errorf("text-only body: %q %v", text, codes)
	}
	re = &core.RemoteError{Side: "receiver", Msg: text}
	for _, s := range sentinels {
		if errors.Is(re, s) {
			t.Errorf("a text-only RemoteError matches %v", s)
		}
	}

	// NUL bytes in the text cannot forge codes.
	body = wire.AppendError(nil, "boom\x00\x04", nil)
	if text, codes := wire.ParseError(body); text != "boom \x04" || codes != nil {
		t.Errorf("NUL in text: %q %v", text, codes)
	}
	// Unknown and zero codes match nothing; no more than 16 are kept.
	re = &core.RemoteError{Codes: []byte{0, 200, 255}}
	for _, s := range sentinels {
		if errors.Is(re, s) {
			t.Errorf("codes %v match %v", re.Codes, s)
		}
	}
	many := []byte(strings.Repeat("\x05", 40))
	if _, codes := wire.ParseError(wire.AppendError(nil, "x", many)); len(codes) != wire.MaxErrorCodes {
		t.Errorf("%d codes kept, want %d", len(codes), wire.MaxErrorCodes)
	}
}
