package plugintest

import (
	"encoding/binary"
	"fmt"
	"sync"
)

// The kit makes its own pages: it may import nothing of pagewire but sdk,
// so it cannot read the engine's corpus. Every page is a function of a
// seed, so a failure names a page that fails again on the next run.

// rng is splitmix64: tiny, fast and the same on every Go version.
type rng struct{ s uint64 }

func newRNG(seed ...uint64) *rng {
	r := &rng{s: 0x9e3779b97f4a7c15}
	for _, v := range seed {
		r.s ^= v
		r.next()
	}
	return r
}

func (r *rng) next() uint64 {
	r.s += 0x9e3779b97f4a7c15
	z := r.s
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

func (r *rng) intn(n int) int { return int(r.next() % uint64(n)) }

func (r *rng) fill(b []byte) {
	for len(b) >= 8 {
		binary.LittleEndian.PutUint64(b, r.next())
		b = b[8:]
	}
	if len(b) > 0 {
		var t [8]byte
		binary.LittleEndian.PutUint64(t[:], r.next())
		copy(b, t[:])
	}
}

// kind is one sort of page content.
type kind int

const (
	kindZero     kind = iota // all zero bytes
	kindOnes                 // all 0xff
	kindRepeated             // one byte value repeated
	kindRandom               // incompressible
	kindText                 // log and source text
	kindBinary               // structured records: counters, pointers, flags
	kindSparse               // zero but for a few words
	numKinds
)

var kindNames = [numKinds]string{"zero", "0xff", "repeated-byte", "random", "text", "binary", "sparse"}

func (k kind) String() string {
	if k >= 0 && k < numKinds {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// poison is what destination pages hold before Recv, so that bytes Recv
// leaves unwritten show up as differences. No generated page is made of it.
const poison = 0xdb

// fillPage writes a page of kind k drawn from r.
func fillPage(pg []byte, k kind, r *rng) {
	switch k {
	case kindZero:
		clear(pg)
	case kindOnes:
		fillByte(pg, 0xff)
	case kindRepeated:
		b := byte(1 + r.intn(254))
		if b == poison {
			b = 0x5a
		}
		fillByte(pg, b)
	case kindRandom:
		r.fill(pg)
	case kindText:
		t := textBlock()
		off := r.intn(len(t))
		for n := 0; n < len(pg); {
			c := copy(pg[n:], t[off:])
			n += c
			off = 0
		}
	case kindBinary:
		base := r.next() & 0xffffff
		ptr := uint64(0xffff888000000000) | (r.next()&0xffff)<<20
		clear(pg)
		for off := 0; off+32 <= len(pg); off += 32 {
			v := r.next()
			binary.LittleEndian.PutUint64(pg[off:], base+uint64(off/32))
			binary.LittleEndian.PutUint64(pg[off+8:], ptr+(v&0xfff)<<6)
			binary.LittleEndian.PutUint32(pg[off+16:], [4]uint32{0, 1, 0x41, 0x8000}[v>>12&3])
			binary.LittleEndian.PutUint64(pg[off+24:], v>>14%1000)
		}
	case kindSparse:
		clear(pg)
		for range 8 {
			if len(pg) >= 8 {
				binary.LittleEndian.PutUint64(pg[r.intn(len(pg)/8)*8:], r.next()|1)
			}
		}
	}
}

func fillByte(b []byte, v byte) {
	if len(b) == 0 {
		return
	}
	b[0] = v
	for n := 1; n < len(b); n *= 2 {
		copy(b[n:], b[:n])
	}
}

// fillMixed writes page i of packet seq of channel ch: a kind picked from
// the three numbers, with the numbers stamped in its first 16 bytes so
// that no two pages of a run are equal and pages swapped between packets
// or channels are told apart. It returns the kind.
func fillMixed(pg []byte, ch int, seq uint64, i int) kind {
	r := newRNG(uint64(ch)+1, seq, uint64(i))
	k := kind(r.intn(int(numKinds)))
	fillPage(pg, k, r)
	if len(pg) >= 16 {
		binary.BigEndian.PutUint32(pg[0:], 0x70770000|uint32(ch)&0xffff)
		binary.BigEndian.PutUint64(pg[4:], seq)
		binary.BigEndian.PutUint32(pg[12:], uint32(i))
	}
	return k
}

var (
	textOnce sync.Once
	text     []byte
)

// textBlock is 64 KiB of text like a guest's page cache holds: log lines
// and C source, made once.
func textBlock() []byte {
	textOnce.Do(func() {
		words := []string{
			"the", "of", "and", "page", "memory", "kernel", "migration", "channel",
			"packet", "guest", "host", "buffer", "ring", "sync", "zero", "data",
			"process", "thread", "file", "system", "error", "value", "return",
			"struct", "static", "int", "void", "char", "if", "else", "for", "while",
			"linux", "device", "state", "block", "offset", "size", "count", "{", "}",
			"=", "==", "->", "NULL", "0x0", "(", ");", "unsigned", "long", "const",
		}
		r := newRNG(0x7465787474657874)
		b := make([]byte, 0, 64<<10+256)
		for len(b) < 64<<10 {
			if r.intn(2) == 0 {
				b = fmt.Appendf(b, "[%6d.%06d] %s: ", r.intn(100000), r.intn(1000000), words[r.intn(len(words))])
			} else {
				b = append(b, "\t"[:r.intn(2)]...)
			}
			for n := 3 + r.intn(10); n > 0; n-- {
				b = append(b, words[r.intn(len(words))]...)
				b = append(b, ' ')
			}
			b = append(b, '\n')
		}
		text = b[:64<<10]
	})
	return text
}

// guardSize is the number of guard bytes before, between and after the
// pages of a pageSet.
const guardSize = 64

func guardByte(i int) byte { return byte(0xa5 + 0x3b*i) }

// pageSet is n page slots of ps bytes cut from one buffer, with guard
// bytes around each. A slot's capacity runs on to the end of the buffer,
// so a method that appends to a page instead of writing it writes into the
// guard that follows and is caught.
type pageSet struct {
	buf   []byte
	ps    int
	slots [][]byte
}

func newPageSet(n, ps int) *pageSet {
	s := &pageSet{buf: make([]byte, guardSize+n*(ps+guardSize)), ps: ps}
	for i := range n {
		off := guardSize + i*(ps+guardSize)
		s.slots = append(s.slots, s.buf[off:off+ps])
	}
	for g := 0; g <= n; g++ {
		gb := s.guard(g)
		for i := range gb {
			gb[i] = guardByte(i)
		}
	}
	return s
}

// guard returns the guard bytes before slot g (g == n: after the last).
func (s *pageSet) guard(g int) []byte {
	off := g * (s.ps + guardSize)
	return s.buf[off : off+guardSize]
}

// checkGuards reports the first guard byte that changed.
func (s *pageSet) checkGuards() error {
	for g := 0; g <= len(s.slots); g++ {
		for i, b := range s.guard(g) {
			if b != guardByte(i) {
				where := fmt.Sprintf("between pages %d and %d", g-1, g)
				switch g {
				case 0:
					where = "before page 0"
				case len(s.slots):
					where = fmt.Sprintf("after page %d, the last", g-1)
				}
				return fmt.Errorf("wrote outside the pages it was given: guard byte %d %s changed from %#02x to %#02x", i, where, guardByte(i), b)
			}
		}
	}
	return nil
}

// pages returns a new slice of the first n slots, so that a method that
// changes or appends to p.Pages cannot change the set.
func (s *pageSet) pages(n int) [][]byte {
	return append([][]byte(nil), s.slots[:n]...)
}
