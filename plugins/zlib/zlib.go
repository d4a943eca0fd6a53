// Package zlib is QEMU's multifd "zlib" method: one zlib stream per
// channel for the whole transfer (2-byte zlib header at its start, no
// trailer ever), each packet's pages deflated and ended with a sync flush,
// so a packet decodes given the packets before it on its channel. Wire
// flag 0x02; level 1 by default, as multifd-zlib-level. Built on
// klauspost/compress.
package zlib

import (
	"bufio"
	"fmt"
	"io"

	kzlib "github.com/klauspost/compress/zlib"

	"github.com/pagewire/pagewire/internal/feed"
	"github.com/pagewire/pagewire/internal/modver"
	"github.com/pagewire/pagewire/sdk"
)

// Flag is the method's value in a packet's flags (MULTIFD_FLAG_ZLIB).
const Flag = 0x02

// DefaultLevel is QEMU's default multifd-zlib-level.
const DefaultLevel = 1

// Method is the zlib method.
type Method struct{}

// New returns the zlib method.
func New() sdk.Method { return Method{} }

// Info implements [sdk.Method].
func (Method) Info() sdk.Info { return sdk.Info{Name: "zlib", Flag: Flag} }

// Implementation names the code that compresses: "klauspost/compress vX.Y.Z".
func (Method) Implementation() string {
	return "klauspost/compress " + modver.Of("github.com/klauspost/compress")
}

// NewSender implements [sdk.Method].
func (Method) NewSender(ch int, o sdk.Options) (sdk.Sender, error) {
	level := o.Level
	if level == 0 {
		level = DefaultLevel
	}
	if level < 1 || level > 9 {
		return nil, fmt.Errorf("zlib level %d: want 1..9", level)
	}
	s := &sender{}
	w, err := kzlib.NewWriterLevel(&s.out, level)
	if err != nil {
		return nil, err
	}
	s.w = w
	return s, nil
}

// NewReceiver implements [sdk.Method].
func (Method) NewReceiver(ch int, o sdk.Options) (sdk.Receiver, error) {
	return &receiver{}, nil
}

type sender struct {
	out feed.Sink
	w   *kzlib.Writer
}

func (s *sender) Prepare(p *sdk.Packet, dst []byte) ([]byte, error) {
	return feed.Prepare(s.w, &s.out, p.Pages, dst)
}

func (s *sender) Close() error { return nil } // the stream is never finished, as QEMU's

// receiver decodes through a bufio.Reader over the feed: flate has a
// fast path for *bufio.Reader, and the buffer only ever holds bytes of
// packets that have arrived (the feed ends at the current payload).
type receiver struct {
	in     feed.Feed
	br     *bufio.Reader
	r      io.ReadCloser
	broken error
}

func (r *receiver) Recv(p *sdk.Packet, payload []byte) error {
	if r.broken != nil {
		return r.broken
	}
	r.in.Start(payload)
	defer r.in.End()
	if r.r == nil {
		r.br = bufio.NewReaderSize(&r.in, 64<<10)
		zr, err := kzlib.NewReader(r.br)
		if err != nil {
			r.broken = fmt.Errorf("%w: zlib header: %w", sdk.ErrCorrupt, err)
			return r.broken
		}
		r.r = zr
	}
	if err := r.in.Fill(r.r, p.Pages); err != nil {
		// The stream cannot be trusted past a bad packet.
		r.broken = fmt.Errorf("%w: %w", sdk.ErrCorrupt, err)
		return r.broken
	}
	return nil
}

func (r *receiver) Close() error { return nil }
