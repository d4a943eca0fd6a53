// Package zstd is QEMU's multifd "zstd" method: one zstd frame per channel
// for the whole transfer, never ended, each packet's pages compressed and
// flushed, so a packet decodes given the packets before it on its channel.
// Wire flag 0x04; level 1 by default, as multifd-zstd-level (1..20, mapped
// to klauspost/compress's encoder levels).
package zstd

import (
	"fmt"

	kzstd "github.com/klauspost/compress/zstd"

	"github.com/pagewire/pagewire/internal/feed"
	"github.com/pagewire/pagewire/sdk"
)

// Flag is the method's value in a packet's flags (MULTIFD_FLAG_ZSTD).
const Flag = 0x04

// DefaultLevel is QEMU's default multifd-zstd-level.
const DefaultLevel = 1

// MaxWindow bounds the window a peer's frame may ask the decoder for: a
// hostile frame header costs at most this much memory per channel.
// libzstd's levels up to 19 use at most 8 MiB.
const MaxWindow = 64 << 20

// Method is the zstd method.
type Method struct{}

// New returns the zstd method.
func New() sdk.Method { return Method{} }

// Info implements [sdk.Method].
func (Method) Info() sdk.Info { return sdk.Info{Name: "zstd", Flag: Flag} }

// NewSender implements [sdk.Method].
func (Method) NewSender(ch int, o sdk.Options) (sdk.Sender, error) {
	level := o.Level
	if level == 0 {
		level = DefaultLevel
	}
	if level < 1 || level > 20 {
		return nil, fmt.Errorf("zstd level %d: want 1..20", level)
	}
	s := &sender{}
	w, err := kzstd.NewWriter(&s.out,
		kzstd.WithEncoderLevel(kzstd.EncoderLevelFromZstd(level)),
		kzstd.WithEncoderConcurrency(1),
		kzstd.WithEncoderCRC(false),
		kzstd.WithWindowSize(1<<20))
	if err != nil {
		return nil, err
	}
	s.w = w
	return s, nil
}

// NewReceiver implements [sdk.Method].
func (Method) NewReceiver(ch int, o sdk.Options) (sdk.Receiver, error) {
	r := &receiver{}
	d, err := kzstd.NewReader(&r.in,
		kzstd.WithDecoderConcurrency(1),
		kzstd.WithDecoderMaxWindow(MaxWindow),
		kzstd.WithDecoderLowmem(true))
	if err != nil {
		return nil, err
	}
	r.d = d
	return r, nil
}

type sender struct {
	out feed.Sink
	w   *kzstd.Encoder
}

func (s *sender) Prepare(p *sdk.Packet, dst []byte) ([]byte, error) {
	return feed.Prepare(s.w, &s.out, p.Pages, dst)
}

func (s *sender) Close() error { return s.w.Close() }

type receiver struct {
	in     feed.Feed
	d      *kzstd.Decoder
	broken error
}

func (r *receiver) Recv(p *sdk.Packet, payload []byte) error {
	if r.broken != nil {
		return r.broken
	}
	r.in.Start(payload)
	defer r.in.End()
	if err := r.in.Fill(r.d, p.Pages); err != nil {
		// The stream cannot be trusted past a bad packet.
		r.broken = fmt.Errorf("%w: %w", sdk.ErrCorrupt, err)
		return r.broken
	}
	return nil
}

func (r *receiver) Close() error {
	r.d.Close()
	return nil
}
