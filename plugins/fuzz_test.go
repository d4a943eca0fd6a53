package plugins_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"github.com/pagewire/pagewire/sdk"
)

// fuzzFirst is the number of pages of the valid packet every fuzz input
// follows: small, so that an exec costs little.
const fuzzFirst = 3

// guardByte fills the memory around the pages handed to Recv.
const guardByte = 0xa5

// guarded returns n pages cut from one buffer with a guard page before,
// between and after them, each page's capacity ending at its length, and
// a func that reports a guard page that changed.
func guarded(n int) (pages [][]byte, check func(t *testing.T)) {
	buf := bytes.Repeat([]byte{guardByte}, (2*n+1)*ps)
	pages = make([][]byte, n)
	for i := range pages {
		lo := (2*i + 1) * ps
		pages[i] = buf[lo : lo+ps : lo+ps]
	}
	guard := bytes.Repeat([]byte{guardByte}, ps)
	return pages, func(t *testing.T) {
		t.Helper()
		for i := 0; i <= n; i++ {
			if g := buf[2*i*ps : (2*i+1)*ps]; !bytes.Equal(g, guard) {
				t.Fatalf("Recv wrote outside the pages: guard page %d of %d changed", i, n+1)
			}
		}
	}
}

// FuzzRecv decodes the input as the payload of the second packet of a
// channel, after one valid packet (so stream methods have history), into
// 1+k%128 pages: a method must never panic, must report what it cannot
// decode as an error wrapping sdk.ErrCorrupt, and must only write into
// the pages.
func FuzzRecv(f *testing.F) {
	var flat [][]byte
	for _, p := range packets(f, 2) {
		flat = append(flat, p...)
	}
	first := flat[:fuzzFirst]
	// Seeds: packets of 1, 2 and 5 synthetic pages that compress well.
	// Guest pages would make seeds of kilobytes, and every interesting
	// input that large takes the minimizer up to -fuzzminimizetime.
	syn := synthPages(5)
	seeds := [][][]byte{syn[:1], syn[1:3], syn}
	firstPayload := make([][]byte, len(methods))
	for i, m := range methods {
		for j, pages := range seeds {
			if m.Info().Raw && j > 0 {
				break // a raw payload is its pages: one is enough
			}
			snd, err := m.NewSender(0, opts)
			if err != nil {
				f.Fatal(err)
			}
			p0, err := snd.Prepare(&sdk.Packet{Pages: first, Seq: 1}, nil)
			if err != nil {
				f.Fatal(err)
			}
			if j == 0 {
				firstPayload[i] = p0
			} else if !bytes.Equal(p0, firstPayload[i]) {
				f.Fatalf("%s: the first packet's payload differs between senders", label(m))
			}
			p, err := snd.Prepare(&sdk.Packet{Pages: pages, Seq: 2}, nil)
			if err != nil {
				f.Fatal(err)
			}
			snd.Close()
			// The seed decodes after the first packet.
			rcv, err := m.NewReceiver(0, opts)
			if err != nil {
				f.Fatal(err)
			}
			dst := alloc(len(pages))
			if err := rcv.Recv(&sdk.Packet{Pages: alloc(fuzzFirst), Seq: 1}, p0); err != nil {
				f.Fatal(err)
			}
			if err := rcv.Recv(&sdk.Packet{Pages: dst, Seq: 2}, p); err != nil || !bytes.Equal(bytes.Join(dst, nil), bytes.Join(pages, nil)) {
				f.Fatalf("%s: seed %d does not decode: %v", label(m), j, err)
			}
			rcv.Close()
			f.Add(uint8(i), uint8(len(pages)-1), p)
			if j == 0 {
				f.Add(uint8(i), uint8(len(pages)-1), p[:len(p)/2])
				f.Add(uint8(i), uint8(len(pages)), p) // one page too many
			}
		}
		f.Add(uint8(i), uint8(0), []byte(nil))
		f.Add(uint8(i), uint8(127), bytes.Repeat([]byte{0xff}, 64))
		f.Add(uint8(i), uint8(0), append([]byte{0x80, 0, 0x10, 0}, make([]byte, 32)...)) // an lz4 stored page, cut
	}
	f.Fuzz(func(t *testing.T, mi, k uint8, payload []byte) {
		i := int(mi) % len(methods)
		m := methods[i]
		n := 1 + int(k)%128
		rcv, err := m.NewReceiver(0, opts)
		if err != nil {
			t.Fatal(err)
		}
		defer rcv.Close()
		if err := rcv.Recv(&sdk.Packet{Pages: alloc(fuzzFirst), Seq: 1}, firstPayload[i]); err != nil {
			t.Fatalf("%s: first packet: %v", label(m), err)
		}
		pages, check := guarded(n)
		err = rcv.Recv(&sdk.Packet{Pages: pages, Seq: 2}, payload)
		check(t)
		if err != nil {
			if !errors.Is(err, sdk.ErrCorrupt) {
				t.Fatalf("%s: error %q does not wrap sdk.ErrCorrupt", label(m), err)
			}
			return
		}
		if m.Info().Raw && !bytes.Equal(bytes.Join(pages, nil), payload) {
			t.Fatalf("%s: accepted %d bytes for %d pages", label(m), len(payload), n)
		}
	})
}

// synthPages makes n pages that compress to little but exercise a
// decoder: text, a sparse table of words, a run, a pattern with edits.
func synthPages(n int) [][]byte {
	out := make([][]byte, n)
	x := uint32(2463534242)
	for i := range out {
		pg := make([]byte, 0, ps)
		switch i % 4 {
		case 0:
			for len(pg) < ps {
				pg = fmt.Appendf(pg, "pagewire page %d line %d\n", i, len(pg)/23%8)
			}
		case 1:
			pg = pg[:ps]
			for off := 0; off < ps; off += 512 {
				binary.LittleEndian.PutUint64(pg[off:], uint64(0x8000_0000_1000_0003)+uint64(off)<<12)
			}
		case 2:
			pg = append(pg, bytes.Repeat([]byte{byte(i)}, ps)...)
			pg[ps/2] = 0x55
		case 3:
			for len(pg) < ps {
				x ^= x << 13
				x ^= x >> 17
				x ^= x << 5
				switch {
				case len(pg) < 64 || x%499 == 0:
					pg = append(pg, 'a'+byte(x%4))
				default:
					pg = append(pg, pg[len(pg)-64])
				}
			}
		}
		out[i] = pg[:ps]
	}
	return out
}
