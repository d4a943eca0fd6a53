// Package delta encodes a page as its differences from an earlier version
// of it, the way QEMU's XBZRLE does: runs of unchanged bytes are skipped,
// runs of changed bytes are carried as they are now. A guest that changes
// a few bytes of a page sends tens of bytes instead of the page.
//
// An encoding is a sequence of (uvarint unchanged, uvarint changed, the
// changed bytes) up to the last changed byte; the unchanged tail is not
// written. An empty encoding means no change.
package delta

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrCorrupt reports an encoding that does not fit the page.
var ErrCorrupt = errors.New("corrupt delta")

// Encode appends the encoding of cur against old (both the same length)
// to dst and returns it, or dst unchanged and false as soon as the
// encoding would exceed limit bytes.
func Encode(dst, old, cur []byte, limit int) ([]byte, bool) {
	if len(old) != len(cur) {
		panic("delta: pages of different sizes")
	}
	start := len(dst)
	n := len(cur)
	i, last := 0, 0 // last: end of the previous changed run
	for i < n {
		// Skip unchanged bytes, eight at a time where possible.
		for i+8 <= n && binary.LittleEndian.Uint64(old[i:]) == binary.LittleEndian.Uint64(cur[i:]) {
			i += 8
		}
		for i < n && old[i] == cur[i] {
			i++
		}
		if i == n {
			break
		}
		// A changed run ends at the first two unchanged bytes in a row: a
		// single unchanged byte costs less inside the run than as a run.
		j := i + 1
		for j < n && (old[j] != cur[j] || j+1 < n && old[j+1] != cur[j+1]) {
			j++
		}
		if len(dst)-start+2*binary.MaxVarintLen32+(j-i) > limit {
			return dst[:start], false
		}
		dst = binary.AppendUvarint(dst, uint64(i-last))
		dst = binary.AppendUvarint(dst, uint64(j-i))
		dst = append(dst, cur[i:j]...)
		i, last = j, j
	}
	return dst, true
}

// Apply changes page by enc, an encoding made against page's current
// content. It checks every run against the page's size and the
// encoding's length before it writes: an error leaves page unchanged.
func Apply(page, enc []byte) error {
	if err := check(len(page), enc); err != nil {
		return err
	}
	pos := 0
	for len(enc) > 0 {
		z, k := binary.Uvarint(enc)
		enc = enc[k:]
		c, k := binary.Uvarint(enc)
		enc = enc[k:]
		pos += int(z)
		copy(page[pos:pos+int(c)], enc[:c])
		enc = enc[c:]
		pos += int(c)
	}
	return nil
}

// check walks enc without writing: every varint complete and canonical
// in size, every changed run at least one byte, inside the page and
// inside the encoding.
func check(size int, enc []byte) error {
	pos := 0
	for at := 0; at < len(enc); {
		z, k := binary.Uvarint(enc[at:])
		if k <= 0 {
			return fmt.Errorf("%w: bad unchanged-run length at byte %d", ErrCorrupt, at)
		}
		at += k
		c, k := binary.Uvarint(enc[at:])
		if k <= 0 {
			return fmt.Errorf("%w: bad changed-run length at byte %d", ErrCorrupt, at)
		}
		at += k
		switch {
		case c == 0:
			return fmt.Errorf("%w: empty changed run at byte %d", ErrCorrupt, at)
		case z > uint64(size-pos) || c > uint64(size-pos)-z:
			return fmt.Errorf("%w: run of %d+%d bytes at %d past the page's %d", ErrCorrupt, z, c, pos, size)
		case c > uint64(len(enc)-at):
			return fmt.Errorf("%w: changed run of %d bytes, %d left", ErrCorrupt, c, len(enc)-at)
		}
		pos += int(z + c)
		at += int(c)
	}
	return nil
}
