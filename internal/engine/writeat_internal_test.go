package engine

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestDstBlockWriteAt: raw pages written through a block's file land in
// its shared mapping (one page cache), at the block's offset in the
// file; a file that refuses writes turns the file path off for good and
// the caller copies instead.
func TestDstBlockWriteAt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "img")
	const off = 8192
	if err := os.WriteFile(path, make([]byte, off+4*4096), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data, err := unix.Mmap(int(f.Fd()), off, 4*4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(data)
	b := newDstBlock("pc.ram", data, 4096, true)
	b.file, b.fileOff = f, off
	page := bytes.Repeat([]byte{0xa5}, 2*4096)
	ok, err := b.writeAt(page, 4096)
	if !ok || err != nil {
		t.Fatalf("writeAt: %v, %v", ok, err)
	}
	if !bytes.Equal(data[4096:3*4096], page) || data[0] != 0 || data[3*4096] != 0 {
		t.Fatal("the pages are not where the mapping shows them")
	}

	ro, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	b.file = ro
	if ok, err := b.writeAt(page, 0); ok || err != nil || !b.noFile.Load() {
		t.Fatalf("read-only file: %v, %v, noFile %v", ok, err, b.noFile.Load())
	}
	if ok, err := b.writeAt(page, 0); ok || err != nil {
		t.Fatalf("after noFile: %v, %v", ok, err)
	}
}
