package engine

import (
	"encoding/binary"
	"hash/crc32"
	"sync"
	"sync/atomic"

	"github.com/pagewire/pagewire/internal/delta"
)

// A deltaCache holds the last version of recently sent pages on the
// sender (SenderConfig.DeltaCache), so that a page sent again goes as its
// differences from that version (package delta), as QEMU's XBZRLE cache
// does. It is direct-mapped: a page has one slot, and a page sent later
// that maps to the same slot takes it.
//
// What the receiver holds must be exactly the slot's version. The
// receiver writes the first copy of a page that lands in a sync interval
// and drops later ones (dstBlock's claims), and channels race, so a page
// sent twice in one interval (normal or zero) leaves the receiver with
// either copy: its slot is then invalidated, and its next send is whole.
// Each block's sent bitmap says which pages went out in the current
// interval; Sender.sync clears it once every channel is idle.
type deltaCache struct {
	ps    int
	slots []deltaSlot
	data  []byte // ps bytes per slot
	locks [256]sync.Mutex
}

type deltaSlot struct {
	key   uint64 // block index << 40 | page index, +1; 0: empty
	valid bool
}

func newDeltaCache(size int64, ps int) *deltaCache {
	n := max(int(size/int64(ps)), 1)
	return &deltaCache{ps: ps, slots: make([]deltaSlot, n), data: make([]byte, n*ps)}
}

// deltaLimit is the largest encoding sent as a delta: past a quarter of
// a page, the whole page (through the method) is sent instead.
func deltaLimit(ps int) int { return ps / 4 }

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// slotOf is page's key and slot: consecutive pages of a block take
// consecutive slots, so a block no larger than the cache never evicts
// itself; blocks start at scattered slots.
func (d *deltaCache) slotOf(b *srcBlock, page uint64) (key uint64, i int) {
	key = uint64(b.idx)<<40 | page + 1
	return key, int((page + uint64(b.idx)*0x9e3779b9) % uint64(len(d.slots)))
}

// firstSend marks page of b sent in this interval and reports whether
// it was not already.
func (b *srcBlock) firstSend(page uint64) bool {
	w, m := &b.sent[page/64], uint64(1)<<(page%64)
	return w.Or(m)&m == 0
}

// zero records that page of b went as a zero page.
func (d *deltaCache) zero(b *srcBlock, page uint64) {
	key, i := d.slotOf(b, page)
	mu := &d.locks[i%len(d.locks)]
	mu.Lock()
	b.firstSend(page)
	if sl := &d.slots[i]; sl.key == key {
		sl.valid = false
	}
	mu.Unlock()
}

// put records that page of b goes with the content snap (a copy the
// caller owns). If the receiver holds the slot's version of it, put
// appends the page's delta to enc (and its length and crc32c, of snap,
// to meta) and returns true; the caller sends the page whole otherwise.
func (d *deltaCache) put(b *srcBlock, page uint64, snap []byte, enc, meta *[]byte) bool {
	key, i := d.slotOf(b, page)
	mu := &d.locks[i%len(d.locks)]
	mu.Lock()
	defer mu.Unlock()
	sl := &d.slots[i]
	old := d.data[i*d.ps : (i+1)*d.ps]
	if !b.firstSend(page) {
		// Sent already in this interval: the receiver keeps one of the
		// copies, which one is not known here.
		if sl.key == key {
			sl.valid = false
		}
		return false
	}
	if sl.key != key || !sl.valid {
		sl.key, sl.valid = key, true
		copy(old, snap)
		return false
	}
	at := len(*enc)
	out, ok := delta.Encode(*enc, old, snap, deltaLimit(d.ps))
	copy(old, snap)
	if !ok {
		return false
	}
	*enc = out
	*meta = binary.BigEndian.AppendUint16(*meta, uint16(len(out)-at))
	*meta = binary.BigEndian.AppendUint32(*meta, crc32.Checksum(snap, castagnoli))
	return true
}

// newSentMap is a sent bitmap for a block of pages pages.
func newSentMap(pages int) []atomic.Uint64 { return make([]atomic.Uint64, (pages+63)/64) }

// clearSent forgets which pages went out in the interval that ended.
func (b *srcBlock) clearSent() {
	for i := range b.sent {
		b.sent[i].Store(0)
	}
}
