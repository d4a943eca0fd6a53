package engine

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"testing"

	"github.com/pagewire/pagewire/internal/delta"
)

// FuzzDeltaPayload feeds a delta packet's payload, as the receiver gets
// it from a peer, through splitDeltaPayload and delta.Apply on pages
// with a guard around them, as deltaInto does: never a panic, never a
// write outside a page, every encoding byte accounted to a page.
func FuzzDeltaPayload(f *testing.F) {
	const ps = 4096
	old := bytes.Repeat([]byte{7}, ps)
	cur := bytes.Clone(old)
	cur[100] = 9
	enc, _ := delta.Encode(nil, old, cur, deltaLimit(ps))
	seed := binary.BigEndian.AppendUint16(nil, uint16(len(enc)))
	seed = binary.BigEndian.AppendUint32(seed, crc32.Checksum(cur, castagnoli))
	f.Add(uint8(1), append(seed, enc...))
	f.Add(uint8(2), []byte{0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1})
	f.Add(uint8(0), []byte{})
	f.Fuzz(func(t *testing.T, k uint8, payload []byte) {
		n := 1 + int(k)%128
		meta, enc, err := splitDeltaPayload(payload, n, ps)
		if err != nil {
			return
		}
		if len(meta) != 6*n {
			t.Fatalf("%d bytes of lengths and crcs for %d pages", len(meta), n)
		}
		buf := bytes.Repeat([]byte{7}, (n+2)*ps)
		for i := range n {
			l := int(binary.BigEndian.Uint16(meta[6*i:]))
			e := enc[:l]
			enc = enc[l:]
			pg := buf[(i+1)*ps : (i+2)*ps : (i+2)*ps]
			before := bytes.Clone(pg)
			if err := delta.Apply(pg, e); err != nil && !bytes.Equal(pg, before) {
				t.Fatal("a refused delta changed the page")
			}
		}
		if len(enc) != 0 {
			t.Fatalf("%d bytes of encodings left over", len(enc))
		}
		if !bytes.Equal(buf[:ps], bytes.Repeat([]byte{7}, ps)) || !bytes.Equal(buf[(n+1)*ps:], bytes.Repeat([]byte{7}, ps)) {
			t.Fatal("a delta wrote outside its page")
		}
	})
}
