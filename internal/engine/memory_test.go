package engine

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// TestCreateImageExists: CreateImage never overwrites. A file or a
// symbolic link already at the path (issue 16: IMAGE.partial followed a
// planted link and overwrote its target) is refused with an error
// wrapping fs.ErrExist, and neither the file, the link nor the link's
// target is changed.
func TestCreateImageExists(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	want := []byte("the victim's bytes")
	if err := os.WriteFile(victim, want, 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.partial")
	if err := os.Symlink(victim, link); err != nil {
		t.Fatal(err)
	}
	dangling := filepath.Join(dir, "dangling.partial")
	if err := os.Symlink(filepath.Join(dir, "nowhere"), dangling); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{victim, link, dangling} {
		im, err := CreateImage(path, "pc.ram", 1<<20)
		if err == nil {
			im.Close()
			t.Errorf("CreateImage(%s) over an existing path succeeded", filepath.Base(path))
			continue
		}
		if !errors.Is(err, fs.ErrExist) {
			t.Errorf("CreateImage(%s): %v, want an error wrapping fs.ErrExist", filepath.Base(path), err)
		}
	}
	if got, err := os.ReadFile(victim); err != nil || !bytes.Equal(got, want) {
		t.Errorf("victim now holds %d bytes (%v); want its %d bytes unchanged", len(got), err, len(want))
	}
	for _, l := range []string{link, dangling} {
		if fi, err := os.Lstat(l); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			t.Errorf("%s: %v, %v; want the symbolic link left alone", filepath.Base(l), fi, err)
		}
	}
	if _, err := os.Lstat(filepath.Join(dir, "nowhere")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a dangling link's target was created: %v", err)
	}
}
