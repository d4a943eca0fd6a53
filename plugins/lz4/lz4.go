// Package lz4 is pagewire's own lz4 method (QEMU has none): each normal
// page of a packet is one LZ4 block, so pages decode independently and the
// method keeps no stream state between packets. Wire flag 0x3c, a value
// QEMU never sends.
//
// Payload: for every page, in order, a big-endian u32 header and the
// page's bytes. Bit 31 set: the page is stored as is (it did not
// compress) and the low bits must equal the page size; clear: the low bits
// are the length of an LZ4 block that decodes to exactly one page.
package lz4

import (
	"encoding/binary"
	"fmt"

	plz4 "github.com/pierrec/lz4/v4"

	"github.com/pagewire/pagewire/internal/modver"
	"github.com/pagewire/pagewire/sdk"
)

// Flag is the method's value in a packet's flags.
const Flag = 0x3c

const stored = 1 << 31

// Method is the lz4 method. Level 0 is LZ4's fast mode; 1..9 select its
// high-compression levels.
type Method struct{}

// New returns the lz4 method.
func New() sdk.Method { return Method{} }

// Info implements [sdk.Method].
func (Method) Info() sdk.Info { return sdk.Info{Name: "lz4", Flag: Flag} }

// Implementation names the code that compresses: "pierrec/lz4/v4 vX.Y.Z".
func (Method) Implementation() string {
	return "pierrec/lz4/v4 " + modver.Of("github.com/pierrec/lz4/v4")
}

// NewSender implements [sdk.Method].
func (Method) NewSender(ch int, o sdk.Options) (sdk.Sender, error) {
	if o.Level < 0 || o.Level > 9 {
		return nil, fmt.Errorf("lz4 level %d: want 0 (fast) or 1..9", o.Level)
	}
	s := &sender{level: o.Level}
	if o.Level > 0 {
		s.hc = &plz4.CompressorHC{Level: plz4.CompressionLevel(1 << (8 + o.Level))}
	}
	return s, nil
}

// NewReceiver implements [sdk.Method].
func (Method) NewReceiver(ch int, o sdk.Options) (sdk.Receiver, error) {
	return receiver{}, nil
}

type sender struct {
	level int
	fast  plz4.Compressor
	hc    *plz4.CompressorHC
}

func (s *sender) Prepare(p *sdk.Packet, dst []byte) ([]byte, error) {
	for _, pg := range p.Pages {
		h := len(dst)
		dst = append(dst, 0, 0, 0, 0)
		bound := plz4.CompressBlockBound(len(pg))
		dst = grow(dst, bound)
		var n int
		var err error
		if s.hc != nil {
			n, err = s.hc.CompressBlock(pg, dst[h+4:h+4+bound])
		} else {
			n, err = s.fast.CompressBlock(pg, dst[h+4:h+4+bound])
		}
		if err != nil {
			return dst, err
		}
		if n == 0 || n >= len(pg) {
			binary.BigEndian.PutUint32(dst[h:], stored|uint32(len(pg)))
			dst = append(dst[:h+4], pg...)
			continue
		}
		binary.BigEndian.PutUint32(dst[h:], uint32(n))
		dst = dst[:h+4+n]
	}
	return dst, nil
}

// grow makes room for n more bytes after len(b) without changing len.
func grow(b []byte, n int) []byte {
	if cap(b)-len(b) < n {
		nb := make([]byte, len(b), 2*cap(b)+n)
		copy(nb, b)
		b = nb
	}
	return b
}

func (s *sender) Close() error { return nil }

type receiver struct{}

func (receiver) Recv(p *sdk.Packet, payload []byte) error {
	for i, pg := range p.Pages {
		if len(payload) < 4 {
			return fmt.Errorf("%w: page %d of %d: payload ends", sdk.ErrCorrupt, i, len(p.Pages))
		}
		h := binary.BigEndian.Uint32(payload)
		payload = payload[4:]
		n := int(h &^ stored)
		if n > len(payload) {
			return fmt.Errorf("%w: page %d: block of %d bytes, %d left", sdk.ErrCorrupt, i, n, len(payload))
		}
		if h&stored != 0 {
			if n != len(pg) {
				return fmt.Errorf("%w: page %d: stored page of %d bytes, want %d", sdk.ErrCorrupt, i, n, len(pg))
			}
			copy(pg, payload[:n])
		} else {
			m, err := plz4.UncompressBlock(payload[:n], pg)
			if err != nil || m != len(pg) {
				return fmt.Errorf("%w: page %d: lz4 block decodes to %d bytes (%v), want %d", sdk.ErrCorrupt, i, m, err, len(pg))
			}
		}
		payload = payload[n:]
	}
	if len(payload) != 0 {
		return fmt.Errorf("%w: %d bytes after the last page", sdk.ErrCorrupt, len(payload))
	}
	return nil
}

func (receiver) Close() error { return nil }
