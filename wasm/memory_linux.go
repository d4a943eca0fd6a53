package wasm

import (
	"golang.org/x/sys/unix"

	"github.com/tetratelabs/wazero/experimental"
)

// memoryAllocator backs each instance's linear memory with its own
// mapping of the memory's maximum size, reserved up front but committed
// only as the module touches pages: growing the memory never copies it
// (wazero's default reallocates, so an instance near its cap briefly
// holds twice the cap), and nothing is zeroed by hand (fresh anonymous
// pages read as zeros), so a module that uses little costs little.
var memoryAllocator experimental.MemoryAllocator = experimental.MemoryAllocatorFunc(func(cap, max uint64) experimental.LinearMemory {
	if max > 0 && max <= 1<<32 {
		b, err := unix.Mmap(-1, 0, int(max), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
		if err == nil {
			return &mappedMemory{buf: b}
		}
	}
	return &heapMemory{max: max} // as wazero's own: grown by copying
})

// heapMemory is a linear memory on the Go heap, for when no mapping can
// be had: growing it copies.
type heapMemory struct {
	buf []byte
	max uint64
}

func (m *heapMemory) Reallocate(size uint64) []byte {
	if size > m.max {
		return nil
	}
	if size > uint64(cap(m.buf)) {
		nb := make([]byte, size, min(max(2*uint64(cap(m.buf)), size), m.max))
		copy(nb, m.buf)
		m.buf = nb
	}
	m.buf = m.buf[:size]
	return m.buf
}

func (m *heapMemory) Free() { m.buf = nil }

// mappedMemory is a linear memory in a mapping of its maximum size.
type mappedMemory struct{ buf []byte }

// Reallocate implements experimental.LinearMemory: the same bytes, longer.
func (m *mappedMemory) Reallocate(size uint64) []byte {
	if m.buf == nil || size > uint64(len(m.buf)) {
		return nil
	}
	return m.buf[:size]
}

// Free implements experimental.LinearMemory: it unmaps the memory, which
// wazero no longer uses.
func (m *mappedMemory) Free() {
	if m.buf != nil {
		unix.Munmap(m.buf)
		m.buf = nil
	}
}
