package engine

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mapPopulate prefaults a source image's mapping.
const mapPopulate = unix.MAP_POPULATE

// adviseHuge, with PAGEWIRE_HUGEPAGES=1, asks the kernel for
// transparent huge pages under the 2 MiB aligned interior of b: a
// receiver then takes one page fault per 2 MiB instead of one per 4 KiB.
// It is off by default: where THP's defrag is "madvise" (Debian's
// default), each such fault may compact memory or, in a virtual machine,
// touch 512 host pages never backed before; on these machines filling a
// GiB so advised took 1.8-4.1 s against 0.44 s without, and it was half
// of a gateway's CPU. A hint only; errors are ignored.
func adviseHuge(b []byte) {
	if !hugePages {
		return
	}
	const huge = 2 << 20
	if len(b) < 2*huge {
		return
	}
	start := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	skip := int((huge - start%huge) % huge)
	n := (len(b) - skip) &^ (huge - 1)
	if n > 0 {
		unix.Madvise(b[skip:skip+n], unix.MADV_HUGEPAGE)
	}
}

// hugePages is PAGEWIRE_HUGEPAGES=1.
var hugePages = os.Getenv("PAGEWIRE_HUGEPAGES") == "1"

// anonFile is a memfd that can be sealed.
func anonFile(name string) (*os.File, error) {
	fd, err := unix.MemfdCreate("pagewire-image", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("memfd: %w", err)
	}
	return os.NewFile(uintptr(fd), "memfd:"+name), nil
}

// seal seals an anonFile against writing, shrinking and growing.
func seal(f *os.File) error {
	_, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, unix.F_SEAL_WRITE|unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_SEAL)
	return err
}

// reserve sizes a new, empty f to size bytes and allocates its blocks,
// so that writing through a mapping of it cannot run out of space.
// Allocated blocks read as zeros. A file system without fallocate gets a
// sparse file instead.
func reserve(f *os.File, size int64) error {
	if size == 0 {
		return nil
	}
	for {
		err := unix.Fallocate(int(f.Fd()), 0, 0, size)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS):
			return f.Truncate(size)
		default:
			return err
		}
	}
}

// pwritable reports whether pages written to f with pwrite show in a
// shared mapping of it and the call is allowed: a regular file, open for
// writing without O_APPEND or O_DIRECT, not sealed against writes (a
// VMM's memfd may be sealed with F_SEAL_FUTURE_WRITE and still mapped
// writable), and taking a zero-byte pwrite (hugetlbfs refuses write(2)).
// A receiver writes a file-backed block through the file only then.
func pwritable(f *os.File) bool {
	fd := int(f.Fd())
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return false
	}
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil || fl&unix.O_ACCMODE == unix.O_RDONLY || fl&(unix.O_APPEND|unix.O_DIRECT) != 0 {
		return false
	}
	if seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0); err == nil && seals&(unix.F_SEAL_WRITE|unix.F_SEAL_FUTURE_WRITE) != 0 {
		return false
	}
	_, err = unix.Pwrite(fd, nil, 0)
	return err == nil
}
