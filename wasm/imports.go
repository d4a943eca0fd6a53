package wasm

import (
	"errors"
	"fmt"
)

// errMalformed reports a module whose import section cannot be read.
var errMalformed = errors.New("malformed module")

// importModules returns every import of the Wasm binary b as
// "module.field", in order, from its import section. b is untrusted: every
// length is checked against what is left. The host reads this before it
// compiles, because the tier (whether wazero inserts its per-loop checks)
// is fixed when the runtime is created.
func importModules(b []byte) ([]string, error) {
	if len(b) < 8 || string(b[:4]) != "\x00asm" {
		return nil, fmt.Errorf("%w: not a Wasm binary", errMalformed)
	}
	if b[4] != 1 || b[5] != 0 || b[6] != 0 || b[7] != 0 {
		return nil, fmt.Errorf("%w: Wasm binary version %d", errMalformed, b[4])
	}
	r := reader{b: b[8:]}
	for len(r.b) > 0 {
		id := r.byte()
		size := r.u32()
		sec := r.bytes(size)
		if r.err != nil {
			return nil, r.err
		}
		switch {
		case id == 2:
			return importSection(reader{b: sec})
		case id > 2:
			return nil, nil // sections are ordered: no import section
		}
	}
	return nil, nil
}

func importSection(r reader) ([]string, error) {
	n := r.u32()
	var out []string
	for i := uint32(0); i < n && r.err == nil; i++ {
		mod := r.bytes(r.u32())
		field := r.bytes(r.u32())
		switch r.byte() {
		case 0x00: // function: type index
			r.u32()
		case 0x01: // table: reference type, limits
			r.byte()
			r.limits()
		case 0x02: // memory: limits
			r.limits()
		case 0x03: // global: value type, mutability
			r.byte()
			r.byte()
		default:
			r.fail("unknown import kind")
		}
		if r.err == nil {
			out = append(out, string(mod)+"."+string(field))
		}
	}
	if r.err != nil {
		return nil, r.err
	}
	return out, nil
}

// reader reads the binary format; the first error sticks and every read
// after it returns zero values.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s", errMalformed, what)
	}
	r.b = nil
}

func (r *reader) byte() byte {
	if len(r.b) == 0 {
		r.fail("truncated")
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

// u32 reads an unsigned LEB128 of at most 5 bytes.
func (r *reader) u32() uint32 {
	var v uint32
	for i := 0; i < 5; i++ {
		c := r.byte()
		if r.err != nil {
			return 0
		}
		if i == 4 && c > 0x0f {
			r.fail("u32 overflows")
			return 0
		}
		v |= uint32(c&0x7f) << (7 * i)
		if c&0x80 == 0 {
			return v
		}
	}
	r.fail("u32 too long")
	return 0
}

func (r *reader) bytes(n uint32) []byte {
	if uint64(n) > uint64(len(r.b)) {
		r.fail("length past the end")
		return nil
	}
	s := r.b[:n]
	r.b = r.b[n:]
	return s
}

// limits reads memory or table limits: a flag, a minimum, and a maximum
// if the flag's low bit is set (0x02/0x03: shared memory).
func (r *reader) limits() {
	switch f := r.byte(); f {
	case 0x00, 0x02:
		r.u32()
	case 0x01, 0x03:
		r.u32()
		r.u32()
	default:
		r.fail("unknown limits flag")
	}
}
