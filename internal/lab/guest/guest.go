// Package guest makes the migration lab's running guest: Debian's kernel
// (fetched by scripts/guest.sh into build/guest) booted under QEMU with an
// initramfs of busybox and a workload (workload.c, built with gcc -static)
// that fills guest memory, prints PAGEWIRE-READY, then dirties the memory
// at a set rate and prints its own progress to the serial console every
// second (PW-PROGRESS lines), so a harness sees what the guest achieved
// while it was migrated.
package guest

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

//go:embed workload.c
var workloadSource []byte

// cflags are how workload.c is built; they are part of the cache key.
var cflags = []string{"-static", "-O2", "-Wall", "-Wextra", "-Werror"}

// LabRAMKiB is the lab guest's RAM, 1 GiB + 64 KiB (QEMU's -m 1048640K):
// QEMU 7.2's TCG loses dirty bits on RAM blocks that are a whole multiple
// of 64 pages, so the lab's RAM is not one.
const LabRAMKiB = 1048640

// Workload is what the guest runs after boot. A zero field leaves the
// workload's default (see workload.c): MemMiB 512, Rate 20000, Record
// 64, Update 8.
type Workload struct {
	// Kind is idle, records, records-random or pages.
	Kind string
	// MemMiB is the memory the workload allocates and fills.
	MemMiB int
	// Rate is updates per second (records: small rewrites of a record;
	// pages: whole 4 KiB pages rewritten).
	Rate int
	// Record is the record size in bytes (records, records-random).
	Record int
	// Update is the bytes rewritten per update, at a random offset of a
	// random record (records, records-random).
	Update int
}

// The lab's workloads.
var (
	// Idle fills 512 MiB with table records (compressible, ~3-5x with
	// zstd), writes 64 MiB of files (page cache), then dirties nothing.
	Idle = Workload{Kind: "idle", MemMiB: 512}
	// Records fills 512 MiB with table records, then rewrites 8 random
	// bytes of a random 64-byte record 20000 times a second.
	Records = Workload{Kind: "records", MemMiB: 512, Rate: 20000, Record: 64, Update: 8}
	// RecordsRandom is Records on random (incompressible) memory.
	RecordsRandom = Workload{Kind: "records-random", MemMiB: 512, Rate: 20000, Record: 64, Update: 8}
	// Pages fills 512 MiB with random bytes, then rewrites a whole random
	// 4 KiB page with random bytes 20000 times a second (78 MiB/s): as
	// many dirty pages a second as Records and RecordsRandom (~18600
	// distinct pages of 131072), but each wholly new.
	Pages = Workload{Kind: "pages", MemMiB: 512, Rate: 20000}
)

// Workloads lists the lab's workloads: Idle, Records, RecordsRandom, Pages.
func Workloads() []Workload {
	return []Workload{Idle, Records, RecordsRandom, Pages}
}

// params are the workload's parameters, as (kernel parameter, option,
// value) with the zero ones left out.
func (w Workload) params() [][3]string {
	var p [][3]string
	if w.Kind != "" {
		p = append(p, [3]string{"pw_work", "--work", w.Kind})
	}
	for _, f := range []struct {
		name, opt string
		v         int
	}{{"pw_mem", "--mem", w.MemMiB}, {"pw_rate", "--rate", w.Rate}, {"pw_record", "--record", w.Record}, {"pw_update", "--update", w.Update}} {
		if f.v != 0 {
			p = append(p, [3]string{f.name, f.opt, strconv.Itoa(f.v)})
		}
	}
	return p
}

// Args returns the workload binary's options for w (to run it on the
// host; in the guest /init makes them from the kernel command line).
func (w Workload) Args() []string {
	var a []string
	for _, p := range w.params() {
		a = append(a, p[1], p[2])
	}
	return a
}

// Append returns the kernel command line (QEMU's -append) that boots the
// lab's initramfs (Initramfs) into workload w, with the console on the
// first serial port.
func Append(w Workload) string {
	s := "console=ttyS0 quiet nokaslr init_on_free=1"
	for _, p := range w.params() {
		s += " " + p[0] + "=" + p[2]
	}
	return s
}

// QEMUArgs returns the lab's QEMU arguments for a guest of ramKiB KiB
// (LabRAMKiB): TCG, pc-i440fx-7.2, no devices or display, direct kernel
// boot. The caller adds -serial and migration options.
func QEMUArgs(kernel, initrd, appendLine string, ramKiB int) []string {
	return []string{"-accel", "tcg", "-cpu", "max", "-m", fmt.Sprintf("%dK", ramKiB),
		"-machine", "pc-i440fx-7.2", "-nodefaults", "-vga", "none", "-display", "none",
		"-kernel", kernel, "-initrd", initrd, "-append", appendLine}
}

// Root returns the repository root: the first directory holding go.mod
// at or above the working directory.
func Root() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("guest: no go.mod at or above the working directory")
		}
		dir = parent
	}
}

func fetched(root, name string) (string, error) {
	p := filepath.Join(root, "build", "guest", name)
	if fi, err := os.Stat(p); err != nil || fi.Size() == 0 {
		return "", fmt.Errorf("guest: %s is missing: run scripts/guest.sh ('make setup' does), which fetches Debian's kernel and busybox-static", p)
	}
	return p, nil
}

// Kernel returns the path of the guest kernel, build/guest/vmlinuz under
// the repository root root.
func Kernel(root string) (string, error) { return fetched(root, "vmlinuz") }

// Busybox returns the path of the guest's busybox, build/guest/busybox
// under the repository root root.
func Busybox(root string) (string, error) { return fetched(root, "busybox") }

// BuildWorkload compiles workload.c with gcc -static and returns the path
// of the binary, outDir/workload. The build is cached in build/guest
// under root, named by a hash of the source and flags, so calls after the
// first only copy it (with outDir "", the cached binary's path is
// returned: do not modify it).
func BuildWorkload(root, outDir string) (string, error) {
	h := sha256.New()
	h.Write([]byte(strings.Join(cflags, " ") + "\n"))
	h.Write(workloadSource)
	cacheDir := filepath.Join(root, "build", "guest")
	cached := filepath.Join(cacheDir, "workload-"+hex.EncodeToString(h.Sum(nil))[:16])
	if _, err := os.Stat(cached); err != nil {
		if err := build(cacheDir, cached); err != nil {
			return "", err
		}
	}
	if outDir == "" {
		return cached, nil
	}
	b, err := os.ReadFile(cached)
	if err != nil {
		return "", err
	}
	out := filepath.Join(outDir, "workload")
	if err := os.WriteFile(out, b, 0o755); err != nil {
		return "", err
	}
	return out, nil
}

// build compiles workload.c into cached, through a temporary directory
// and a rename, so concurrent builds do not see a half-written binary.
func build(cacheDir, cached string) error {
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		return errors.New("guest: gcc is not on PATH: the guest workload is built with gcc -static " +
			"(Debian: apt-get install gcc libc6-dev; then 'make setup' or scripts/guest.sh for the kernel and busybox)")
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(cacheDir, "workload-build-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	src := filepath.Join(tmp, "workload.c")
	if err := os.WriteFile(src, workloadSource, 0o644); err != nil {
		return err
	}
	bin := filepath.Join(tmp, "workload")
	cmd := exec.Command(gcc, append(append([]string{}, cflags...), "-o", bin, src)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		hint := ""
		if bytes.Contains(out, []byte("cannot find -lc")) {
			hint = " (libc.a, static glibc, is missing: Debian's libc6-dev has it)"
		}
		return fmt.Errorf("guest: gcc %s workload.c: %v%s\n%s", strings.Join(cflags, " "), err, hint, out)
	}
	return os.Rename(bin, cached)
}

// initScript is the guest's /init: it runs /bin/workload with the pw_*
// parameters of the kernel command line. It runs it as a child, not with
// exec, so that when the workload fails it says so on the console
// (PAGEWIRE-ERROR) instead of panicking the kernel, and then idles.
const initScript = `#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t devtmpfs devtmpfs /dev || echo "PW-INIT: no devtmpfs"
/bin/busybox --install -s /bin
set --
for kv in $(cat /proc/cmdline); do
	case "$kv" in
	pw_work=*) set -- "$@" --work "${kv#pw_work=}" ;;
	pw_mem=*) set -- "$@" --mem "${kv#pw_mem=}" ;;
	pw_rate=*) set -- "$@" --rate "${kv#pw_rate=}" ;;
	pw_record=*) set -- "$@" --record "${kv#pw_record=}" ;;
	pw_update=*) set -- "$@" --update "${kv#pw_update=}" ;;
	esac
done
echo "PW-INIT /bin/workload $*"
/bin/workload "$@"
rc=$?
echo "PAGEWIRE-ERROR: /bin/workload $* exited with status $rc"
while true; do sleep 1000; done
`

// Initramfs writes to path the lab guest's initramfs: a newc cpio with
// /bin/busybox, /bin/workload (copied from the files busybox and
// workload) and /init (busybox sh), which mounts proc and devtmpfs, reads
// pw_work, pw_mem, pw_rate, pw_record and pw_update from /proc/cmdline
// (Append) and runs the workload with them.
func Initramfs(path, busybox, workload string) error {
	bb, err := os.ReadFile(busybox)
	if err != nil {
		return fmt.Errorf("guest: %w (scripts/guest.sh fetches busybox-static)", err)
	}
	wl, err := os.ReadFile(workload)
	if err != nil {
		return fmt.Errorf("guest: %w (BuildWorkload builds it)", err)
	}
	arc := CPIO([]File{
		{"bin", 0o040755, nil},
		{"dev", 0o040755, nil},
		{"proc", 0o040755, nil},
		{"sys", 0o040755, nil},
		{"tmp", 0o041777, nil},
		{"bin/busybox", 0o100755, bb},
		{"bin/workload", 0o100755, wl},
		{"init", 0o100755, []byte(initScript)},
	})
	return os.WriteFile(path, arc, 0o644)
}

// File is one entry of a cpio archive: Mode holds the file type bits
// (0o040000 directory, 0o100000 regular file) and the permissions.
type File struct {
	Name string
	Mode uint32
	Data []byte
}

// CPIO returns a "newc" cpio archive (the kernel's initramfs format) of
// files, in order: list a directory before what it holds.
func CPIO(files []File) []byte {
	var b bytes.Buffer
	pad := func() {
		for b.Len()%4 != 0 {
			b.WriteByte(0)
		}
	}
	ino := 1
	add := func(name string, mode uint32, data []byte) {
		fmt.Fprintf(&b, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
			ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
		b.WriteString(name)
		b.WriteByte(0)
		pad()
		b.Write(data)
		pad()
		ino++
	}
	for _, f := range files {
		add(f.Name, f.Mode, f.Data)
	}
	add("TRAILER!!!", 0, nil)
	return b.Bytes()
}

// Progress is one of the workload's PW-PROGRESS lines.
type Progress struct {
	// T is the time since PAGEWIRE-READY, on the guest's monotonic clock.
	T time.Duration
	// Updates is the total of updates since PAGEWIRE-READY.
	Updates int64
	// Rate is the updates per second since the previous line (the
	// updates of the last second, unless the guest was stopped: then T
	// jumps by more than a second).
	Rate int64
}

// lines returns console's complete lines (a last line without its
// newline may still be being written), without trailing spaces or \r.
func lines(console []byte) [][]byte {
	i := bytes.LastIndexByte(console, '\n')
	if i < 0 {
		return nil
	}
	ls := bytes.Split(console[:i], []byte("\n"))
	for j, l := range ls {
		ls[j] = bytes.TrimRight(l, " \r\t")
	}
	return ls
}

// ParseProgress returns the PW-PROGRESS lines of console (the serial
// console's output so far), in order. A line is found anywhere in a
// console line (a kernel message may have begun it); malformed and
// unfinished lines are left out.
func ParseProgress(console []byte) []Progress {
	var ps []Progress
	for _, l := range lines(console) {
		i := bytes.Index(l, []byte("PW-PROGRESS "))
		if i < 0 {
			continue
		}
		var p Progress
		var have int
		for _, f := range strings.Fields(string(l[i+len("PW-PROGRESS "):])) {
			k, v, _ := strings.Cut(f, "=")
			switch k {
			case "t":
				s, err := strconv.ParseFloat(v, 64)
				if err == nil {
					p.T = time.Duration(s * float64(time.Second)).Round(time.Millisecond)
					have |= 1
				}
			case "updates":
				n, err := strconv.ParseInt(v, 10, 64)
				if err == nil {
					p.Updates = n
					have |= 2
				}
			case "rate":
				n, err := strconv.ParseInt(v, 10, 64)
				if err == nil {
					p.Rate = n
					have |= 4
				}
			}
		}
		if have == 7 {
			ps = append(ps, p)
		}
	}
	return ps
}

// Ready reports whether the workload has printed PAGEWIRE-READY (it has
// filled its memory and starts dirtying it).
func Ready(console []byte) bool {
	for _, l := range bytes.Split(console, []byte("\n")) {
		if bytes.HasSuffix(bytes.TrimRight(l, " \r\t"), []byte("PAGEWIRE-READY")) {
			return true
		}
	}
	return false
}

// Failed returns the guest's PAGEWIRE-ERROR line (the workload exited:
// bad parameters, out of memory), or "".
func Failed(console []byte) string {
	for _, l := range lines(console) {
		if i := bytes.Index(l, []byte("PAGEWIRE-ERROR")); i >= 0 {
			return string(l[i:])
		}
	}
	return ""
}
