// Package zstd is QEMU's multifd "zstd" method: one zstd frame per channel
// for the whole transfer, never ended, each packet's pages compressed and
// flushed, so a packet decodes given the packets before it on its channel.
// Wire flag 0x04; level 1 by default, as multifd-zstd-level (1..20).
//
// Two implementations speak the same stream. The default is pure Go
// (klauspost/compress, its levels mapped from zstd's). Built with cgo and
// the libzstd build tag (pkg-config libzstd; Debian's libzstd-dev), [New]
// returns the native tier instead: the system's libzstd, the library
// QEMU itself calls, about 1.6x faster at compressing guest pages at
// level 1, and with zstd's own levels. [NewGo] always returns the pure-Go
// implementation; so does [New] in a native build when the environment
// has PAGEWIRE_ZSTD=go (an operator's way back without a rebuild).
package zstd

import (
	"fmt"
	"os"

	kzstd "github.com/klauspost/compress/zstd"

	"github.com/pagewire/pagewire/internal/feed"
	"github.com/pagewire/pagewire/internal/modver"
	"github.com/pagewire/pagewire/sdk"
)

// Flag is the method's value in a packet's flags (MULTIFD_FLAG_ZSTD).
const Flag = 0x04

// DefaultLevel is QEMU's default multifd-zstd-level.
const DefaultLevel = 1

// MaxWindow bounds the window a peer's frame may ask the decoder for: a
// hostile frame header costs at most this much memory per channel.
// libzstd's levels up to 19 use at most 8 MiB.
const MaxWindow = 1 << maxWindowLog

const maxWindowLog = 26

// Method is the zstd method.
type Method struct{ native bool }

// New returns the zstd method: the native tier when the build has it
// ([Native]) and PAGEWIRE_ZSTD is not "go", the pure-Go implementation
// otherwise.
func New() sdk.Method { return Method{native: Native && os.Getenv("PAGEWIRE_ZSTD") != "go"} }

// NewGo returns the pure-Go implementation, whatever the build.
func NewGo() sdk.Method { return Method{} }

// Info implements [sdk.Method].
func (Method) Info() sdk.Info { return sdk.Info{Name: "zstd", Flag: Flag} }

// Implementation names the code that compresses: "klauspost/compress
// vX.Y.Z" or "libzstd X.Y.Z".
func (m Method) Implementation() string {
	if m.native {
		return nativeVersion()
	}
	return "klauspost/compress " + modver.Of("github.com/klauspost/compress")
}

// NewSender implements [sdk.Method].
func (m Method) NewSender(ch int, o sdk.Options) (sdk.Sender, error) {
	level := o.Level
	if level == 0 {
		level = DefaultLevel
	}
	if level < 1 || level > 20 {
		return nil, fmt.Errorf("zstd level %d: want 1..20", level)
	}
	if m.native {
		// The largest packet: QEMU's 128 pages of 4 KiB unless configured.
		pages, ps := o.PacketPages, o.PageSize
		if pages == 0 {
			pages = 128
		}
		if ps == 0 {
			ps = 4096
		}
		return newNativeSender(level, pages*ps)
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
func (m Method) NewReceiver(ch int, o sdk.Options) (sdk.Receiver, error) {
	if m.native {
		return newNativeReceiver()
	}
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
