package engine

import (
	"bytes"
	"testing"
)

// TestStreamZeroed: on a block that started as zeros, the QEMU main
// stream's zero records leave a page this transfer never wrote unread,
// and clear one its page or fill records wrote, in a later sync interval
// as in the same one; on other memory they clear every page.
func TestStreamZeroed(t *testing.T) {
	const ps = DefaultPageSize
	for _, zeroed := range []bool{true, false} {
		data := bytes.Repeat([]byte{0xaa}, 4*ps) // what "zeros" hide
		blk := newDstBlock("pc.ram", data, ps, zeroed)
		s := &Stream{t: &transfer{blocks: map[string]*dstBlock{"pc.ram": blk}}}
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		// Page 0 only ever gets a zero record. Page 1 gets a page record,
		// page 2 a fill record, then, after a sync, both a zero record.
		// Page 3 gets a page record and, in the same interval, a zero
		// record, which loses to the page record (the first claim wins).
		must(s.Zero("pc.ram", 0, 0))
		must(s.Page("pc.ram", ps, bytes.NewReader(bytes.Repeat([]byte{1}, ps))))
		must(s.Zero("pc.ram", 2*ps, 0x22))
		must(s.Page("pc.ram", 3*ps, bytes.NewReader(bytes.Repeat([]byte{3}, ps))))
		must(s.Zero("pc.ram", 3*ps, 0))
		blk.reset()
		must(s.Zero("pc.ram", ps, 0))
		must(s.Zero("pc.ram", 2*ps, 0))
		want := [4]byte{0, 0, 0, 3}
		if zeroed {
			want[0] = 0xaa // never written: left unread
		}
		for p, w := range want {
			if pg := data[p*ps : (p+1)*ps]; !bytes.Equal(pg, bytes.Repeat([]byte{w}, ps)) {
				t.Errorf("zeroed %v: page %d starts %x, want all %#x", zeroed, p, pg[:4], w)
			}
		}
	}
}
