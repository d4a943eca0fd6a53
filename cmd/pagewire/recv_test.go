package main_test

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pagewire/pagewire/internal/pagegen"
	"github.com/pagewire/pagewire/internal/qemuvectors"
	"github.com/pagewire/pagewire/internal/testfs"
)

// writeImage writes a size-byte image of mixed pages to a new file.
func writeImage(t *testing.T, size int, seed uint64) (string, []byte) {
	t.Helper()
	img := make([]byte, size)
	pagegen.Fill(img, 4096, pagegen.DefaultMix, seed)
	path := filepath.Join(t.TempDir(), "in.img")
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
	return path, img
}

// noCrash fails the test if p's stderr shows a Go runtime crash.
func noCrash(t *testing.T, p *proc) {
	t.Helper()
	for _, s := range []string{"SIGBUS", "fatal error", "goroutine ", "panic:"} {
		if strings.Contains(p.stderr.String(), s) {
			t.Errorf("%s crashed (%q): %s", p.cmd.Args[1], s, p.stderr)
			return
		}
	}
}

// modeOf is fi's mode, or 0 for no file.
func modeOf(fi fs.FileInfo) fs.FileMode {
	if fi == nil {
		return 0
	}
	return fi.Mode()
}

// leftIn lists what dir holds.
func leftIn(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

// TestRecvDiskFull: a 16 MiB image sent to 'recv --out' on a 4 MiB file
// system. Before issue 16's fix the receiver made a sparse .partial and
// died of SIGBUS (nocomp: "read: bad address") once the disk filled,
// leaving the .partial; the sender saw a reset connection. Now the space
// is reserved when the sender arrives: recv fails at once with an error
// naming the file and saying the disk is full, removes the .partial, and
// the sender fails with the receiver's reason.
func TestRecvDiskFull(t *testing.T) {
	dir := testfs.Small(t, "4m")
	src, _ := writeImage(t, 16<<20, 16)
	for _, method := range []string{"nocomp", "zstd"} {
		t.Run(method, func(t *testing.T) {
			out := filepath.Join(dir, "guest.img")
			r, addr := startRecv(t, "recv", "--listen", "tcp:127.0.0.1:0", "--out", out)
			s := start(t, "send", "--to", addr, "--method", method, src)
			if code := r.wait(t); code == 0 {
				t.Errorf("recv exited 0 on a full disk: %s", r.stderr)
			}
			if code := s.wait(t); code == 0 {
				t.Errorf("send exited 0 although the receiver failed: %s", s.stderr)
			}
			noCrash(t, r)
			noCrash(t, s)
			if e := r.stderr.String(); !strings.Contains(e, "guest.img") || !strings.Contains(e, "no space") {
				t.Errorf("recv's error does not name the file and say the disk is full: %s", e)
			}
			if e := s.stderr.String(); !strings.Contains(e, "no space") {
				t.Errorf("send's error does not carry the receiver's reason: %s", e)
			}
			if left := leftIn(t, dir); len(left) != 0 {
				t.Errorf("a refused transfer left %v", left)
			}
		})
	}
}

// TestRecvPartialSymlink: a symbolic link planted at IMAGE.partial, as a
// stale file a crashed run left would be, is replaced, never followed.
// Before issue 16's fix recv opened it with O_TRUNC, overwrote the link's
// target with the image and renamed the link to IMAGE.
func TestRecvPartialSymlink(t *testing.T) {
	src, img := writeImage(t, 1<<20, 7)
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	want := []byte("not to be overwritten")
	if err := os.WriteFile(victim, want, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out.img")
	if err := os.Symlink(victim, out+".partial"); err != nil {
		t.Fatal(err)
	}
	r, addr := startRecv(t, "recv", "--listen", "tcp:127.0.0.1:0", "--out", out)
	s := start(t, "send", "--to", addr, src)
	if code := s.wait(t); code != 0 {
		t.Fatalf("send exited %d: %s", code, s.stderr)
	}
	if code := r.wait(t); code != 0 {
		t.Fatalf("recv exited %d: %s", code, r.stderr)
	}
	if got, err := os.ReadFile(victim); err != nil || !bytes.Equal(got, want) {
		t.Errorf("the link's target now holds %d bytes (%v), want it unchanged", len(got), err)
	}
	if fi, err := os.Lstat(out); err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("%s: %v; want a regular file, not a link (%v)", out, err, modeOf(fi))
	}
	if got, err := os.ReadFile(out); err != nil || !bytes.Equal(got, img) {
		t.Errorf("received image differs from the sent one (%v)", err)
	}
	if _, err := os.Lstat(out + ".partial"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s.partial left: %v", out, err)
	}
}

// TestQEMURecvDiskFull replays a captured QEMU migration (128 MiB of
// RAM) into 'qemu recv --out' on a 4 MiB file system: it fails with an
// error naming pc.ram.raw and saying the disk is full, leaves no files,
// and does not crash (before issue 16's fix it died of SIGBUS).
func TestQEMURecvDiskFull(t *testing.T) {
	dir := testfs.Small(t, "4m")
	c := qemuvectors.Cases(t, "PAGEWIRE_QEMU10_VECTORS", "qemu-10.0")[0]
	streams, err := c.LoadAll()
	if err != nil {
		t.Fatal(err)
	}
	r, addr := startRecv(t, "qemu", "recv", "--listen", "tcp:127.0.0.1:0", "--out", dir,
		"--channels", fmt.Sprint(c.Channels), "--method", c.Method)
	qemuvectors.Replay(strings.TrimPrefix(addr, "tcp:"), streams) // fails once recv gives up
	if code := r.wait(t); code == 0 {
		t.Errorf("qemu recv exited 0 on a full disk: %s", r.stderr)
	}
	noCrash(t, r)
	if e := r.stderr.String(); !strings.Contains(e, "pc.ram.raw") || !strings.Contains(e, "no space") {
		t.Errorf("qemu recv's error does not name the file and say the disk is full: %s", e)
	}
	if left := leftIn(t, dir); len(left) != 0 {
		t.Errorf("a failed qemu recv left %v", left)
	}
}

// TestQEMURecvPartialSymlink: symbolic links planted at the .partial files of 'qemu recv'
// (main.stream's and pc.ram.raw's) are replaced, never
// followed. Before issue 16's fix main.stream.partial was opened with
// os.Create, which writes through a link.
func TestQEMURecvPartialSymlink(t *testing.T) {
	c := qemuvectors.Cases(t, "PAGEWIRE_QEMU10_VECTORS", "qemu-10.0")[0]
	streams, err := c.LoadAll()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	if err := os.Mkdir(out, 0o755); err != nil {
		t.Fatal(err)
	}
	want := []byte("not to be overwritten")
	victims := map[string]string{}
	for _, name := range []string{"main.stream", "pc.ram.raw"} {
		victim := filepath.Join(dir, name+".victim")
		if err := os.WriteFile(victim, want, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(victim, filepath.Join(out, name+".partial")); err != nil {
			t.Fatal(err)
		}
		victims[name] = victim
	}
	r, addr := startRecv(t, "qemu", "recv", "--listen", "tcp:127.0.0.1:0", "--out", out,
		"--channels", fmt.Sprint(c.Channels), "--method", c.Method)
	if err := qemuvectors.Replay(strings.TrimPrefix(addr, "tcp:"), streams); err != nil {
		t.Error(err)
	}
	if code := r.wait(t); code != 0 {
		t.Fatalf("qemu recv exited %d: %s", code, r.stderr)
	}
	for name, victim := range victims {
		if got, err := os.ReadFile(victim); err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s.partial's link target now holds %d bytes (%v), want it unchanged", name, len(got), err)
		}
		if fi, err := os.Lstat(filepath.Join(out, name)); err != nil || !fi.Mode().IsRegular() {
			t.Errorf("%s: %v; want a regular file, not a link (%v)", name, err, modeOf(fi))
		}
	}
	ram, err := os.ReadFile(filepath.Join(out, "pc.ram.raw"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Check(ram); err != nil {
		t.Fatal(err)
	}
}
