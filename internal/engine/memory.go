package engine

import (
	"fmt"
	"io"
	"os"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/pagewire/pagewire/core/wire"
)

// BlockInfo names a RAM block and its size, as the sender announces it.
type BlockInfo = wire.BlockInfo

// Block is one named RAM block: a whole number of pages.
type Block struct {
	Name string
	Data []byte
	// File, if set, is the file Data is a shared mapping of, from byte
	// Offset, as a VMM's guest RAM backed by a memfd is: a Sender then
	// offers it to an out-of-process method, which maps the pages itself
	// (see [MemorySharer]) instead of having them copied to it if the
	// file is a memfd sealed against writing (F_SEAL_WRITE, or
	// F_SEAL_FUTURE_WRITE once the VMM has mapped it) and shrinking
	// (F_SEAL_SHRINK), as [ReadImage]'s are.
	//
	// A receiver writes the pages it receives into File with pwrite
	// instead of through Data when File is a regular file open for
	// writing (not O_APPEND or O_DIRECT, not sealed against writes), on
	// Linux: cheaper than faulting each page of a new mapping in. Data
	// must then be a shared (MAP_SHARED) mapping of File from Offset, so
	// that it shows those pages, as [CreateImage]'s is.
	File   *os.File
	Offset int64
}

// MemorySharer is implemented by methods that run in another process and
// can map a sender's memory themselves (goplugin.Method): a Sender
// offers them every block that has a File, for the whole transfer.
type MemorySharer interface {
	ShareMemory(data []byte, f *os.File, off int64) (unshare func())
}

// Memory is a set of named RAM blocks: the source of a Sender and the
// destination of a Receiver. Blocks must return the same blocks, with the
// same backing memory, for the whole transfer.
type Memory interface {
	Blocks() []Block
}

// Blocks is a [Memory] of plain byte slices.
type Blocks []Block

// Blocks implements [Memory].
func (b Blocks) Blocks() []Block { return b }

// Alloc returns zeroed blocks of the given sizes. It is the receiver's
// default destination.
func Alloc(infos []BlockInfo) (Memory, error) {
	bs := make(Blocks, len(infos))
	for i, in := range infos {
		if in.Size > uint64(maxInt) {
			return nil, fmt.Errorf("block %q: %d bytes do not fit in memory", in.Name, in.Size)
		}
		bs[i] = Block{Name: in.Name, Data: make([]byte, in.Size)}
		adviseHuge(bs[i].Data)
	}
	return FreshZeros(bs), nil
}

// ZeroedMemory is an optional interface of a [Memory] whose blocks read
// as zeros until written, such as [Alloc]'s or a new [CreateImage]. When
// a receiver's [ReceiverConfig.Alloc] returns one, the receiver leaves
// alone, unread, a zero page for a page it has not written, as QEMU's
// destination does: reading a page never written faults it in, which on
// a sparse file or in shared memory allocates it.
//
// Zeroed reports whether the memory still reads as zeros. A receiver
// that gets true writes the memory, so an implementation reports true
// at most once: memory handed to a second transfer is not trusted.
type ZeroedMemory interface {
	Memory
	Zeroed() bool
}

// FreshZeros marks m, new memory that reads as zeros, as a
// [ZeroedMemory] for a receiver's Alloc to return.
func FreshZeros(m Memory) ZeroedMemory { return &zeroedMemory{Memory: m} }

type zeroedMemory struct {
	Memory
	used atomic.Bool
}

func (z *zeroedMemory) Zeroed() bool { return !z.used.Swap(true) }

// zeroed reports whether m starts as zeros (ZeroedMemory).
func zeroed(m Memory) bool {
	z, ok := m.(ZeroedMemory)
	return ok && z.Zeroed()
}

const maxInt = int(^uint(0) >> 1)

// Image is a [Memory] of one block mapped from a file. Close unmaps it;
// the block's Data must not be used after that.
type Image struct {
	block  Block
	file   *os.File
	zeroed atomic.Bool // made by CreateImage and not yet handed out as zeros
}

// Zeroed implements [ZeroedMemory]: an image from [CreateImage] starts as
// zeros; true once at most.
func (im *Image) Zeroed() bool { return im.zeroed.Swap(false) }

// OpenImage maps the file at path read-only as one block named name.
func OpenImage(path, name string) (*Image, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return mapImage(f, name, fi.Size(), unix.PROT_READ, unix.MAP_SHARED|mapPopulate)
}

// ReadImage reads r to its end into anonymous shared memory (a memfd)
// mapped read-only as one block named name: an image that is not a file
// of its own, such as a decompressed one, that a plugin process can
// still map (see [Block]). The memfd is sealed against writing, shrinking
// and growing, so nobody who is given it can change it.
func ReadImage(r io.Reader, name string) (*Image, error) {
	f, err := anonFile(name)
	if err != nil {
		return nil, err
	}
	size, err := io.Copy(f, r)
	if err == nil {
		err = seal(f)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return mapImage(f, name, size, unix.PROT_READ, unix.MAP_SHARED|mapPopulate)
}

// CreateImage creates the file at path, reserves size bytes for it and
// maps it writable as one block. It never overwrites: if anything exists
// at path, a file or a symbolic link (which it does not follow), it
// fails with an error wrapping [io/fs.ErrExist], and a caller replacing a
// stale file removes it first.
//
// The space is reserved up front (fallocate on Linux) so that a full
// disk is an error here, wrapping ENOSPC or EDQUOT and naming the file,
// rather than a SIGBUS when a page of the mapping is first written. The
// reserved blocks read as zeros, so the image is a [ZeroedMemory]. Where
// the file system cannot reserve space (or on other systems) the file is
// sparse instead. On any error the file is removed.
func CreateImage(path, name string, size int64) (*Image, error) {
	if size < 0 || size > int64(maxInt) {
		return nil, fmt.Errorf("%s: %d bytes do not fit in memory", path, size)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o644)
	if err != nil {
		return nil, err
	}
	if err := reserve(f, size); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("%s: reserving %d bytes: %w", path, size, err)
	}
	im, err := mapImage(f, name, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		os.Remove(path) // mapImage closed f
		return nil, err
	}
	im.zeroed.Store(true)
	return im, nil
}

func mapImage(f *os.File, name string, size int64, prot, flags int) (*Image, error) {
	im := &Image{block: Block{Name: name, File: f}, file: f}
	if size > 0 {
		if size > int64(maxInt) {
			f.Close()
			return nil, fmt.Errorf("%s: %d bytes do not fit in memory", f.Name(), size)
		}
		data, err := unix.Mmap(int(f.Fd()), 0, int(size), prot, flags)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("map %s: %w", f.Name(), err)
		}
		im.block.Data = data
	}
	return im, nil
}

// Blocks implements [Memory].
func (im *Image) Blocks() []Block { return []Block{im.block} }

// Close unmaps the image and closes its file.
func (im *Image) Close() error {
	var err error
	if im.block.Data != nil {
		err = unix.Munmap(im.block.Data)
		im.block.Data = nil
	}
	if cerr := im.file.Close(); err == nil {
		err = cerr
	}
	return err
}
