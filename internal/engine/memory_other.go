//go:build !linux

package engine

import "os"

// mapPopulate: prefaulting is a Linux mmap flag.
const mapPopulate = 0

// adviseHuge: transparent huge pages are Linux's.
func adviseHuge([]byte) {}

// anonFile is an unlinked temporary file: there are no memfds here. Only
// Linux shares a sender's memory with a plugin process, so the file
// needs no seals.
func anonFile(name string) (*os.File, error) {
	f, err := os.CreateTemp("", "pagewire-image-*")
	if err != nil {
		return nil, err
	}
	os.Remove(f.Name())
	return f, nil
}

func seal(*os.File) error { return nil }

// reserve sizes f to size bytes, sparse: there is no portable way to
// allocate the blocks ahead.
func reserve(f *os.File, size int64) error { return f.Truncate(size) }

// pwritable is false off Linux: a write(2) is not known to show in a
// shared mapping of the file (no unified buffer cache everywhere), so a
// receiver copies through the mapping.
func pwritable(*os.File) bool { return false }
