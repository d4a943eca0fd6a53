package engine

import (
	"math/bits"
	"slices"
	"sync/atomic"
)

// SyncPoint is a sync point of a running transfer as its OnSync hook
// ([ReceiverConfig].OnSync, [QEMUConfig].OnSync) sees it: every channel
// (and a QEMU source's main stream) has reached it and is parked, so
// nothing writes the destination memory until the hook returns. A
// gateway forwards what arrived in the interval from there.
type SyncPoint struct {
	// N counts the sync points of the transfer from 1.
	N    uint64
	t    *transfer
	main []byte
}

// pagesPerCall bounds the offsets Pages passes to fn at once.
const pagesPerCall = 1024

// Pages calls fn with the byte offsets of every page that multifd
// packets (and, in the QEMU 7.2 dialect, the control channel's zero-page
// records) wrote since the previous sync point: block by block in name
// order, ascending, at most 1024 offsets per call. The offsets slice is
// reused after fn returns. Pages forgets the pages it reports; a QEMU
// source's main-stream page records are not among them (they travel in
// [SyncPoint.Main]). It reports nothing unless the hook was set when
// the transfer started, and nothing when an OnPages hook sees the pages
// as they land instead.
func (p *SyncPoint) Pages(fn func(block string, offs []uint64) error) error {
	t := p.t
	names := make([]string, 0, len(t.blocks))
	for name := range t.blocks {
		names = append(names, name)
	}
	slices.Sort(names)
	offs := make([]uint64, 0, pagesPerCall)
	for _, name := range names {
		b := t.blocks[name]
		for i := range b.fwd {
			w := b.fwd[i].Swap(0)
			for w != 0 {
				j := bits.TrailingZeros64(w)
				w &= w - 1
				offs = append(offs, uint64(i*64+j)<<b.shift)
				if len(offs) == pagesPerCall {
					if err := fn(name, offs); err != nil {
						return err
					}
					offs = offs[:0]
				}
			}
		}
		if len(offs) > 0 {
			if err := fn(name, offs); err != nil {
				return err
			}
			offs = offs[:0]
		}
	}
	return nil
}

// Main is, from a QEMU source, the main stream's bytes since the previous
// sync point, through this one's marker (the first sync point's include
// the stream's header); nil otherwise. It is valid only during the hook.
func (p *SyncPoint) Main() []byte { return p.main }

// mark records that a multifd packet wrote the page at off, for the
// OnSync hook.
func (b *dstBlock) mark(off uint64) {
	if b.fwd == nil {
		return
	}
	w, bit := b.bit(off)
	b.fwd[w].Or(bit)
}

// track makes b record the pages written (see SyncPoint.Pages).
func (b *dstBlock) track() {
	b.fwd = make([]atomic.Uint64, len(b.claimed))
}
