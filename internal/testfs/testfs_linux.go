// Package testfs has filesystems for tests: a small tmpfs to fill up.
package testfs

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// Small mounts a tmpfs of the given size (mount(8)'s size=) on a new
// temporary directory for the test, or skips the test where it cannot
// (not root, no mount permission); the test's cleanup unmounts it.
func Small(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs needs root")
	}
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Skipf("cannot mount a %s tmpfs: %v", size, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}
