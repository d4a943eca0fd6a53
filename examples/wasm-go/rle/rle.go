// Package rle is an example compression method written from scratch
// against pagewire's sdk: PackBits-style run-length encoding of each
// packet, with an FNV-1a checksum so that a corrupt payload is caught.
// It is a plugin author's starting point, not a fast codec.
//
// Payload: le32 FNV-1a of the packet's raw pages, then runs: a control
// byte c < 128 is followed by c+1 literal bytes; c >= 128 by one byte
// repeated c-126 times (2..129).
package rle

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"

	"github.com/pagewire/pagewire/sdk"
)

// Flag is the method's wire flag: an even value in sdk.FlagMask that no
// built-in method uses.
const Flag = 0x3a

// Method is the rle method.
type Method struct{}

// New returns the method.
func New() sdk.Method { return Method{} }

// Info implements sdk.Method.
func (Method) Info() sdk.Info { return sdk.Info{Name: "rle", Flag: Flag} }

// NewSender implements sdk.Method; rle keeps no state between packets.
func (Method) NewSender(int, sdk.Options) (sdk.Sender, error) { return codec{}, nil }

// NewReceiver implements sdk.Method.
func (Method) NewReceiver(int, sdk.Options) (sdk.Receiver, error) { return codec{}, nil }

type codec struct{}

func checksum(pages [][]byte) uint32 {
	h := fnv.New32a()
	for _, p := range pages {
		h.Write(p)
	}
	return h.Sum32()
}

func (codec) Prepare(p *sdk.Packet, dst []byte) ([]byte, error) {
	dst = binary.LittleEndian.AppendUint32(dst, checksum(p.Pages))
	for _, pg := range p.Pages {
		dst = encode(dst, pg)
	}
	return dst, nil
}

func encode(dst, src []byte) []byte {
	for i := 0; i < len(src); {
		run := 1
		for i+run < len(src) && run < 129 && src[i+run] == src[i] {
			run++
		}
		if run >= 2 {
			dst = append(dst, byte(run+126), src[i])
			i += run
			continue
		}
		j := i + 1 // literals until a run of 2 starts
		for j < len(src) && j-i < 128 && !(j+1 < len(src) && src[j] == src[j+1]) {
			j++
		}
		dst = append(dst, byte(j-i-1))
		dst = append(dst, src[i:j]...)
		i = j
	}
	return dst
}

func (codec) Recv(p *sdk.Packet, payload []byte) error {
	if len(payload) < 4 {
		return fmt.Errorf("%w: %d bytes", sdk.ErrCorrupt, len(payload))
	}
	sum, in := binary.LittleEndian.Uint32(payload), payload[4:]
	for i, pg := range p.Pages {
		n := 0
		for n < len(pg) {
			if len(in) == 0 {
				return fmt.Errorf("%w: payload ends in page %d", sdk.ErrCorrupt, i)
			}
			c := int(in[0])
			if c < 128 {
				if len(in) < 2+c || n+c+1 > len(pg) {
					return fmt.Errorf("%w: literal run overflows page %d", sdk.ErrCorrupt, i)
				}
				n += copy(pg[n:], in[1:2+c])
				in = in[2+c:]
				continue
			}
			run := c - 126
			if len(in) < 2 || n+run > len(pg) {
				return fmt.Errorf("%w: repeat run overflows page %d", sdk.ErrCorrupt, i)
			}
			for k := range run {
				pg[n+k] = in[1]
			}
			n += run
			in = in[2:]
		}
	}
	if len(in) != 0 {
		return fmt.Errorf("%w: %d bytes after the last page", sdk.ErrCorrupt, len(in))
	}
	if checksum(p.Pages) != sum {
		return fmt.Errorf("%w: checksum mismatch", sdk.ErrCorrupt)
	}
	return nil
}

func (codec) Close() error { return nil }
