package core_test

import (
	"bytes"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/pagewire/pagewire/core"
	"github.com/pagewire/pagewire/internal/pagegen"
)

// TestReadImage: the image reads back as written, from a memfd sealed
// against writing, shrinking and growing, which the block names as its
// File (so a plugin process may be given it).
func TestReadImage(t *testing.T) {
	img := pagegen.Image(1<<20, 4096, 9)
	im, err := core.ReadImage(bytes.NewReader(img), "pc.ram")
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	b := im.Blocks()[0]
	if b.Name != "pc.ram" || !bytes.Equal(b.Data, img) || b.File == nil || b.Offset != 0 {
		t.Fatalf("block %q of %d bytes, file %v, offset %d", b.Name, len(b.Data), b.File, b.Offset)
	}
	seals, err := unix.FcntlInt(b.File.Fd(), unix.F_GET_SEALS, 0)
	want := unix.F_SEAL_WRITE | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_SEAL
	if err != nil || seals&want != want {
		t.Fatalf("seals %#x (%v), want %#x", seals, err, want)
	}
	if _, err := b.File.WriteAt([]byte("x"), 0); err == nil {
		t.Error("the sealed image could be written")
	}
}
