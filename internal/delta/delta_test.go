package delta_test

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/pagewire/pagewire/internal/delta"
)

const ps = 4096

func page(r *rand.Rand) []byte {
	p := make([]byte, ps)
	for i := range p {
		p[i] = byte(r.Uint32())
	}
	return p
}

// TestRoundTrip: random edits (single bytes, runs, the first and last
// byte, nothing, everything) encode and apply back to the new page.
func TestRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := range 2000 {
		old := page(r)
		cur := bytes.Clone(old)
		switch n % 6 {
		case 0: // unchanged
		case 1:
			cur[0]++
			cur[ps-1]++
		case 2:
			for range 1 + r.IntN(20) {
				cur[r.IntN(ps)] ^= byte(1 + r.IntN(255))
			}
		case 3:
			at := r.IntN(ps)
			for i := at; i < min(ps, at+r.IntN(300)); i++ {
				cur[i]++
			}
		case 4:
			cur = page(r)
		case 5:
			for i := 0; i < ps; i += 2 { // every other byte: one long run
				cur[i]++
			}
		}
		enc, ok := delta.Encode(nil, old, cur, 2*ps)
		if !ok {
			t.Fatalf("case %d: encoding refused under a limit of 2 pages", n)
		}
		got := bytes.Clone(old)
		if err := delta.Apply(got, enc); err != nil {
			t.Fatalf("case %d: %v", n, err)
		}
		if !bytes.Equal(got, cur) {
			t.Fatalf("case %d: applied page differs", n)
		}
		if n%6 == 0 && len(enc) != 0 {
			t.Fatalf("unchanged page encodes to %d bytes", len(enc))
		}
		if n%6 == 1 && len(enc) > 8 {
			t.Fatalf("two changed bytes encode to %d bytes", len(enc))
		}
	}
}

// TestLimit: an encoding that would pass the limit is refused and leaves
// dst as it was.
func TestLimit(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	old, cur := page(r), page(r)
	dst := []byte("keep")
	out, ok := delta.Encode(dst, old, cur, ps/4)
	if ok || string(out) != "keep" {
		t.Fatalf("Encode = %q, %v; want the prefix back and false", out, ok)
	}
}

// TestBad: encodings that do not fit the page are errors and change
// nothing.
func TestBad(t *testing.T) {
	for name, enc := range map[string][]byte{
		"cut varint":     {0x80},
		"no changed len": {0x01},
		"empty run":      {0x00, 0x00},
		"past the page":  {0x80, 0x20, 0x01, 0xaa}, // 4096 unchanged, then 1
		"run too long":   {0x00, 0x05, 1, 2, 3},
		"huge varint":    {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x01, 0x00},
	} {
		p := make([]byte, ps)
		if err := delta.Apply(p, enc); !errors.Is(err, delta.ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", name, err)
		}
		if !bytes.Equal(p, make([]byte, ps)) {
			t.Errorf("%s: the page changed", name)
		}
	}
}

// FuzzApply: any bytes either apply inside the page or are ErrCorrupt,
// never a panic, and what applies re-encodes to the same change.
func FuzzApply(f *testing.F) {
	r := rand.New(rand.NewPCG(5, 6))
	old := page(r)
	cur := bytes.Clone(old)
	cur[10]++
	cur[4000] = 0
	enc, _ := delta.Encode(nil, old, cur, ps)
	f.Add(enc)
	f.Add([]byte{0x00, 0x01, 0xff})
	f.Add([]byte{0xff, 0x1f, 0x01, 0x00})
	f.Fuzz(func(t *testing.T, enc []byte) {
		guard := make([]byte, 3*ps)
		p := guard[ps : 2*ps : 2*ps]
		before := bytes.Clone(p)
		if err := delta.Apply(p, enc); err != nil {
			if !errors.Is(err, delta.ErrCorrupt) {
				t.Fatalf("error %v is not ErrCorrupt", err)
			}
			if !bytes.Equal(p, before) {
				t.Fatal("a refused encoding changed the page")
			}
			return
		}
		if !bytes.Equal(guard[:ps], make([]byte, ps)) || !bytes.Equal(guard[2*ps:], make([]byte, ps)) {
			t.Fatal("Apply wrote outside the page")
		}
		again, ok := delta.Encode(nil, before, p, 4*ps)
		if !ok {
			t.Fatal("re-encoding refused")
		}
		q := bytes.Clone(before)
		if err := delta.Apply(q, again); err != nil || !bytes.Equal(q, p) {
			t.Fatalf("re-encoded change does not apply: %v", err)
		}
	})
}

func BenchmarkEncode(b *testing.B) {
	r := rand.New(rand.NewPCG(7, 8))
	old := page(r)
	cur := bytes.Clone(old)
	for range 8 {
		cur[r.IntN(ps)]++
	}
	dst := make([]byte, 0, ps)
	b.SetBytes(ps)
	b.ReportAllocs()
	for b.Loop() {
		dst, _ = delta.Encode(dst[:0], old, cur, ps/4)
	}
}
