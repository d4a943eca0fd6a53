package engine

import (
	"fmt"
	"os"
	"sync/atomic"
)

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
	// written has a bit per page this transfer wrote, when the block
	// started as zeros (ZeroedMemory): a zero page for a page it never
	// wrote is then left alone, unread, as QEMU does with its receive
	// bitmap. Reading it would fault it in: on a sparse file or shared
	// memory, a page allocated for nothing.
	written []atomic.Uint64
	// file, if set, is the file data is a shared mapping of, from byte
	// fileOff (Block.File), and takes pwrite (pwritable): pages are
	// written there, which fills the page cache without faulting each
	// page into the mapping and zeroing it first (2-2.5x cheaper for a
	// new file here). The mapping sees the same pages.
	file    *os.File
	fileOff int64
}

// writeAt writes p, whole pages, at byte offset off of the block through
// its file.
func (b *dstBlock) writeAt(p []byte, off uint64) error {
	if _, err := b.file.WriteAt(p, b.fileOff+int64(off)); err != nil {
		return fmt.Errorf("block %s: %w", b.name, err)
	}
	return nil
}

func newDstBlock(name string, data []byte, pageSize int, zeroed bool) *dstBlock {
	shift := uint(0)
	for 1<<shift < pageSize {
		shift++
	}
	words := (len(data)>>shift + 63) / 64
	b := &dstBlock{name: name, data: data, claimed: make([]atomic.Uint64, words), shift: shift}
	if zeroed {
		b.written = make([]atomic.Uint64, words)
	}
	return b
}

// blockOf is newDstBlock for a destination Block: raw and decoded pages
// go to b.File with pwrite when it has one that takes it (see
// dstBlock.file), and through the mapping otherwise.
func blockOf(b Block, pageSize int, zeroed bool) *dstBlock {
	d := newDstBlock(b.Name, b.Data, pageSize, zeroed)
	if b.File != nil && pwritable(b.File) {
		d.file, d.fileOff = b.File, b.Offset
	}
	return d
}

// bit is the word and bit of the page at byte offset off in a bitmap of
// one bit per page.
func (b *dstBlock) bit(off uint64) (word, mask uint64) {
	p := off >> b.shift
	return p / 64, uint64(1) << (p % 64)
}

// claim reports whether the caller is the first, since the last SYNC, to
// write the page at byte offset off.
func (b *dstBlock) claim(off uint64) bool {
	w, bit := b.bit(off)
	return b.claimed[w].Or(bit)&bit == 0
}

// claimWrite claims the page at off (see claim) for writing data to it.
func (b *dstBlock) claimWrite(off uint64) bool {
	if !b.claim(off) {
		return false
	}
	if b.written != nil {
		w, bit := b.bit(off)
		b.written[w].Or(bit)
	}
	return true
}

// claimZero claims the page at off (see claim) and makes it zero: unread
// if the transfer never wrote it and the block started as zeros.
func (b *dstBlock) claimZero(off uint64) bool {
	if !b.claim(off) {
		return false
	}
	if b.written != nil {
		if w, bit := b.bit(off); b.written[w].Load()&bit == 0 {
			return true
		}
	}
	if pg := b.data[off : off+uint64(1)<<b.shift]; !IsZero(pg) {
		clear(pg)
	}
	return true
}

// reset clears every claim; only while no channel is writing.
func (b *dstBlock) reset() {
	for i := range b.claimed {
		if b.claimed[i].Load() != 0 {
			b.claimed[i].Store(0)
		}
	}
}
