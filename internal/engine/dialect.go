package engine

import (
	"errors"
	"fmt"
)

// Dialect is a version of QEMU's multifd protocol as seen on the wire.
type Dialect string

// The dialects pagewire speaks.
const (
	// Dialect72 is QEMU 7.2's: zero pages on the main channel, a SYNC on
	// every channel at every end of a RAM section (EOS). QEMU 8.x and
	// later speak it with multifd-flush-after-each-section on (machine
	// types up to 8.0) and zero-page-detection legacy.
	Dialect72 Dialect = "7.2"
	// Dialect10 is QEMU 10.0's (since 8.x): zero pages as offsets in
	// multifd packets, SYNC at RAM_SAVE_FLAG_MULTIFD_FLUSH, SYNC packets
	// without pages, SWITCHOVER_START before the end.
	Dialect10 Dialect = "10.0"
)

// ParseDialect reads "7.2", "10.0" (or "10"), or "" / "auto" for none.
func ParseDialect(s string) (Dialect, error) {
	switch s {
	case "", "auto":
		return "", nil
	case "7.2":
		return Dialect72, nil
	case "10", "10.0":
		return Dialect10, nil
	}
	return "", fmt.Errorf("unknown dialect %q: want 7.2 or 10.0", s)
}

// ErrBadStream reports a QEMU main migration stream pagewire cannot read.
var ErrBadStream = errors.New("bad QEMU migration stream")
