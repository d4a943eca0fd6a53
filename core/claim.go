package core

import "sync/atomic"

// dstBlock is a destination block with one claim bit per page for the
// current sync interval. A page may arrive twice between two SYNCs on two
// channels at once: QEMU 7.2 does this (a page at the end of one batch
// and the start of the next, seen in real captures), and a hostile peer
// can. Writing both copies from two goroutines would be a data race, and
// QEMU's own destination lets either copy win, so the first channel to
// claim a page writes it and later copies in the same interval are read
// and dropped. The claims are cleared each time every channel has met at
// a SYNC.
type dstBlock struct {
	name    string
	data    []byte
	claimed []atomic.Uint64
	fwd     []atomic.Uint64 // pages written since the last OnSync, if tracked
	shift   uint            // log2 of the page size
}

func newDstBlock(name string, data []byte, pageSize int) *dstBlock {
	shift := uint(0)
	for 1<<shift < pageSize {
		shift++
	}
	pages := len(data) >> shift
	return &dstBlock{name: name, data: data, claimed: make([]atomic.Uint64, (pages+63)/64), shift: shift}
}

// claim reports whether the caller is the first, since the last SYNC, to
// write the page at byte offset off.
func (b *dstBlock) claim(off uint64) bool {
	p := off >> b.shift
	bit := uint64(1) << (p % 64)
	return b.claimed[p/64].Or(bit)&bit == 0
}

// reset clears every claim; only while no channel is writing.
func (b *dstBlock) reset() {
	for i := range b.claimed {
		if b.claimed[i].Load() != 0 {
			b.claimed[i].Store(0)
		}
	}
}
