package engine

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/pagewire/pagewire/internal/testfs"
)

// TestCreateImageDiskFull: an image larger than the free space is
// refused by CreateImage, with an error wrapping ENOSPC that names the
// file, and nothing is left behind. Before issue 16's fix it made a
// sparse file, and the receiver died of SIGBUS once the pages it wrote
// through the mapping filled the disk. An image that fits is reserved
// whole, and still reads as zeros.
func TestCreateImageDiskFull(t *testing.T) {
	dir := testfs.Small(t, "4m")
	path := filepath.Join(dir, "x")
	im, err := CreateImage(path, "pc.ram", 16<<20)
	if err == nil {
		im.Close()
		t.Fatal("CreateImage of 16 MiB on a 4 MiB file system succeeded")
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("CreateImage: %v, want an error wrapping ENOSPC", err)
	}
	if want := path + ": reserving 16777216 bytes: "; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("CreateImage: %q, want it to start %q", err, want)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a refused image left %s: %v", path, err)
	}

	// What fits is allocated now, not at the first write, and the space
	// the refused image took has been given back.
	const size = 3 << 20
	im, err = CreateImage(path, "pc.ram", size)
	if err != nil {
		t.Fatalf("CreateImage of 3 MiB after a refused one: %v", err)
	}
	defer im.Close()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != size || st.Blocks*512 < size {
		t.Errorf("image is %d bytes with %d allocated, want %d reserved", st.Size, st.Blocks*512, size)
	}
	if !im.Zeroed() {
		t.Error("a new image does not report Zeroed")
	}
	data := im.Blocks()[0].Data
	for i, b := range data {
		if b != 0 {
			t.Fatalf("byte %d of a new image is %#x", i, b)
		}
	}
	for i := range data { // writing every page does not fault
		data[i] = byte(i)
	}
}
