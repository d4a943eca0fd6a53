package engine

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestDstBlockFile: a block whose file takes pwrite is written through
// it, and the pages show in its shared mapping at the block's offset in
// the file; a file that must not be written that way (read-only, append,
// sealed against writes though mapped writable) is left to the mapping.
func TestDstBlockFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "img")
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
	b := blockOf(Block{Name: "pc.ram", Data: data, File: f, Offset: off}, 4096, true)
	if b.file == nil {
		t.Fatal("a writable regular file is not used")
	}
	page := bytes.Repeat([]byte{0xa5}, 2*4096)
	if err := b.writeAt(page, 4096); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(data[4096:3*4096], page) || data[0] != 0 || data[3*4096] != 0 {
		t.Fatal("the pages are not where the mapping shows them")
	}

	ro, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	ap, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ap.Close()
	fd, err := unix.MemfdCreate("sealed", unix.MFD_ALLOW_SEALING)
	if err != nil {
		t.Fatal(err)
	}
	mf := os.NewFile(uintptr(fd), "memfd:sealed")
	defer mf.Close()
	if err := mf.Truncate(4 * 4096); err != nil {
		t.Fatal(err)
	}
	mdata, err := unix.Mmap(fd, 0, 4*4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mdata)
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_FUTURE_WRITE); err != nil {
		t.Fatal(err)
	}
	for name, blk := range map[string]Block{
		"read-only": {Name: "pc.ram", Data: data, File: ro, Offset: off},
		"append":    {Name: "pc.ram", Data: data, File: ap, Offset: off},
		"sealed":    {Name: "pc.ram", Data: mdata, File: mf},
	} {
		if b := blockOf(blk, 4096, true); b.file != nil {
			t.Errorf("%s: written through the file", name)
		}
	}
}
