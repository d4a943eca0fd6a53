package engine

import (
	"bytes"
	"encoding/binary"
)

var zeros [64 << 10]byte

// IsZero reports whether every byte of page is zero. Most non-zero pages
// are told apart by their first word without a call; the rest is compared
// against a zero page with the runtime's vectorised memequal.
func IsZero(page []byte) bool {
	if len(page) >= 8 && binary.NativeEndian.Uint64(page) != 0 {
		return false
	}
	for len(page) > 0 {
		n := min(len(page), len(zeros))
		if !bytes.Equal(page[:n], zeros[:n]) {
			return false
		}
		page = page[n:]
	}
	return true
}
