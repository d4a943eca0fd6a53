// Package pagegen makes deterministic synthetic guest memory for demos,
// tests and benchmarks: a mix of zero, text-like, binary-like and random
// pages, and rounds of dirtied pages for iterative pre-copy.
package pagegen

import (
	"encoding/binary"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
)

// Mix is the share of each kind of page, in percent; the rest are random.
type Mix struct {
	Zero, Text, Binary int
}

// DefaultMix resembles an idle Linux guest: many zero pages, page cache
// text, kernel data, some incompressible pages.
var DefaultMix = Mix{Zero: 40, Text: 25, Binary: 20}

var words = []string{
	"the", "of", "and", "page", "memory", "kernel", "migration", "channel",
	"packet", "guest", "host", "buffer", "ring", "sync", "zero", "data",
	"process", "thread", "file", "system", "error", "value", "return",
	"struct", "static", "int", "void", "char", "if", "else", "for", "while",
	"linux", "qemu", "device", "state", "block", "offset", "size", "count",
}

// Fill fills dst (a whole number of pages) with pages drawn from mix,
// deterministically from seed.
func Fill(dst []byte, pageSize int, mix Mix, seed uint64) {
	pages := len(dst) / pageSize
	workers := min(runtime.GOMAXPROCS(0), max(1, pages/1024))
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := w * pages / workers; n < (w+1)*pages/workers; n++ {
				FillPage(dst[n*pageSize:(n+1)*pageSize], mix, seed, uint64(n))
			}
		}()
	}
	wg.Wait()
}

// Image returns size bytes of synthetic memory made by Fill.
func Image(size, pageSize int, seed uint64) []byte {
	b := make([]byte, size)
	Fill(b, pageSize, DefaultMix, seed)
	return b
}

// FillPage writes page number n of the image for seed.
func FillPage(p []byte, mix Mix, seed, n uint64) {
	r := rand.New(rand.NewPCG(seed, n))
	k := r.IntN(100)
	switch {
	case k < mix.Zero:
		clear(p)
	case k < mix.Zero+mix.Text:
		text(p, r)
	case k < mix.Zero+mix.Text+mix.Binary:
		binaryLike(p, r)
	default:
		var s [32]byte
		binary.LittleEndian.PutUint64(s[:], seed)
		binary.LittleEndian.PutUint64(s[8:], n)
		binary.LittleEndian.PutUint64(s[16:], r.Uint64())
		rand.NewChaCha8(s).Read(p)
	}
}

func text(p []byte, r *rand.Rand) {
	i := 0
	for i < len(p) {
		w := words[r.IntN(len(words))]
		i += copy(p[i:], w)
		if i < len(p) {
			if r.IntN(12) == 0 {
				p[i] = '\n'
			} else {
				p[i] = ' '
			}
			i++
		}
	}
}

// binaryLike looks like kernel data: pointers, small counters, flags and
// runs of zeros.
func binaryLike(p []byte, r *rand.Rand) {
	clear(p)
	base := 0xffff888000000000 | uint64(r.IntN(1<<20))<<12
	for i := 0; i+8 <= len(p); i += 8 {
		var v uint64
		switch r.IntN(8) {
		case 0, 1:
			v = base + uint64(r.IntN(1<<16))*8
		case 2:
			v = uint64(r.IntN(256))
		case 3:
			v = uint64(r.Uint32()) & 0x0000ffff
		case 4:
			v = 0xdead4ead
		}
		binary.LittleEndian.PutUint64(p[i:], v)
	}
}

// Dirty rewrites a fraction frac of img's pages with new content from
// seed (as a guest would between pre-copy rounds) and returns their
// offsets, sorted. The new content is drawn from DefaultMix, so a dirtied
// page may also become zero.
func Dirty(img []byte, pageSize int, frac float64, seed uint64) []uint64 {
	pages := len(img) / pageSize
	n := int(float64(pages) * frac)
	r := rand.New(rand.NewPCG(seed, 0xd1a7))
	perm := r.Perm(pages)[:n]
	offs := make([]uint64, n)
	for i, pg := range perm {
		offs[i] = uint64(pg * pageSize)
	}
	slices.Sort(offs)
	for _, off := range offs {
		FillPage(img[off:off+uint64(pageSize)], DefaultMix, seed^0x5eed, off/uint64(pageSize))
	}
	return offs
}
