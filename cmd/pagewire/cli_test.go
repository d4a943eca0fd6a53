package main_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/pagewire/pagewire/internal/corpus"
)

var bin string

// buildTags are the -tags this test binary was built with.
func buildTags() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "-tags" {
				return s.Value
			}
		}
	}
	return ""
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pagewire-cli")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "pagewire")
	// Tests run the CLI built with -race; benchmarks, without.
	flag.Parse()
	// The CLI gets this test binary's build tags (make test's libzstd).
	build := []string{"build", "-race", "-tags", buildTags(), "-o", bin, "."}
	if f := flag.Lookup("test.bench"); f != nil && f.Value.String() != "" {
		build = []string{"build", "-tags", buildTags(), "-o", bin, "."}
	}
	out, err := exec.Command("go", build...).CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a pagewire process the test started; it is killed (by PID,
// through its context) when the test ends.
type proc struct {
	cmd    *exec.Cmd
	stdout bytes.Buffer
	stderr *bytes.Buffer
	done   chan struct{} // closed once the process has exited
}

// procLimit bounds every process a test starts (a migration through a
// 60 s black hole included).
const procLimit = 3 * time.Minute

func start(t testing.TB, args ...string) *proc {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), procLimit)
	name := bin
	if len(args) > 1 && args[0] == "--qemu--" { // another program: args[1]
		name, args = args[1], args[2:]
	}
	p := &proc{cmd: exec.CommandContext(ctx, name, args...), stderr: &bytes.Buffer{}, done: make(chan struct{})}
	p.cmd.Stdout = &p.stdout
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done); cancel() }()
	t.Cleanup(func() {
		cancel()
		<-p.done
	})
	return p
}

// startRecv starts a receiving command (recv, qemu recv) and returns it
// with the address it listens at.
func startRecv(t testing.TB, args ...string) (*proc, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), procLimit)
	name := bin
	if len(args) > 1 && args[0] == "--qemu--" { // another program (a wrapper): args[1]
		name, args = args[1], args[2:]
	}
	p := &proc{cmd: exec.CommandContext(ctx, name, args...), stderr: &bytes.Buffer{}, done: make(chan struct{})}
	p.cmd.Stdout = &p.stdout
	pr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			if a, ok := strings.CutPrefix(line, "listening on "); ok {
				addr <- a
			}
			p.stderr.WriteString(line + "\n")
		}
	}()
	go func() { <-copied; p.cmd.Wait(); close(p.done); cancel() }()
	t.Cleanup(func() {
		cancel()
		<-p.done
	})
	select {
	case a := <-addr:
		return p, a
	case <-p.done: // exited without listening (a bad flag, say): say so now
		select {
		case a := <-addr:
			return p, a
		default:
		}
		t.Fatalf("receiver exited %d before listening: %s", p.cmd.ProcessState.ExitCode(), p.stderr)
		return nil, ""
	case <-time.After(30 * time.Second):
		t.Fatalf("receiver did not listen within 30s: %s", p.stderr)
		return nil, ""
	}
}

func (p *proc) wait(t testing.TB) (exitCode int) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(90 * time.Second):
		t.Fatalf("%v did not finish within 90s", p.cmd.Args)
	}
	return p.cmd.ProcessState.ExitCode()
}

func fileSHA(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// firstImage is the first corpus image: its file and its manifest entry.
func firstImage(t *testing.T) (string, corpus.Image) {
	t.Helper()
	images, err := corpus.List()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := corpus.Dir()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, images[0].File), images[0]
}

// TestSendRecv sends a corpus image between two pagewire processes over
// tcp, unix and vmbus (rings in shared memory); the received file is the
// image, and both print JSON.
func TestSendRecv(t *testing.T) {
	src, im := firstImage(t)
	for _, listen := range []string{"tcp:127.0.0.1:0", "unix:" + filepath.Join(t.TempDir(), "pw.sock"),
		"vmbus:" + filepath.Join(t.TempDir(), "pw-vmbus.sock")} {
		t.Run(strings.SplitN(listen, ":", 2)[0], func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out.img")
			r, addr := startRecv(t, "recv", "--listen", listen, "--out", out, "--json")
			s := start(t, "send", "--to", addr, "--channels", "4", "--json", src)
			if code := s.wait(t); code != 0 {
				t.Fatalf("send exited %d: %s", code, s.stderr)
			}
			if code := r.wait(t); code != 0 {
				t.Fatalf("recv exited %d: %s", code, r.stderr)
			}
			if got := fileSHA(t, out); got != im.SHA256 {
				t.Fatalf("received image sha256 %s, want %s", got, im.SHA256)
			}
			for _, p := range []*proc{s, r} {
				var sum struct {
					RAMBytes  uint64 `json:"ram_bytes"`
					ZeroPages uint64 `json:"zero_pages"`
					Channels  []any  `json:"channels"`
				}
				if err := json.Unmarshal(p.stdout.Bytes(), &sum); err != nil {
					t.Fatalf("%v: JSON summary: %v: %s", p.cmd.Args[1], err, p.stdout.String())
				}
				if sum.RAMBytes != uint64(im.Size) || sum.ZeroPages != uint64(im.ZeroPages) || len(sum.Channels) != 4 {
					t.Errorf("%v summary: %+v", p.cmd.Args[1], sum)
				}
			}
		})
	}
}

// TestRefused: a receiver that expects other parameters refuses the
// transfer; both ends exit 1 with a one-line error, and no image is left.
func TestRefused(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "in.img")
	if err := os.WriteFile(img, bytes.Repeat([]byte{7}, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out.img")
	r, addr := startRecv(t, "recv", "--listen", "tcp:127.0.0.1:0", "--out", out, "--channels", "2")
	s := start(t, "send", "--to", addr, "--channels", "4", img)
	for _, p := range []*proc{s, r} {
		if code := p.wait(t); code != 1 {
			t.Errorf("%s exited %d, want 1: %s", p.cmd.Args[1], code, p.stderr)
		}
		lines := strings.Split(strings.TrimSpace(p.stderr.String()), "\n")
		last := lines[len(lines)-1]
		if !strings.HasPrefix(last, "pagewire: ") || !strings.Contains(last, "sender uses 4 channels, receiver expects 2") {
			t.Errorf("%s: last stderr line %q", p.cmd.Args[1], last)
		}
	}
	for _, f := range []string{out, out + ".partial"} {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Errorf("%s exists after a refused transfer", f)
		}
	}
}

func TestDemo(t *testing.T) {
	p := start(t, "demo", "--size", "16M", "--rounds", "4", "--dirty", "0.2", "--channels", "3")
	if code := p.wait(t); code != 0 {
		t.Fatalf("demo exited %d: %s", code, p.stderr)
	}
	if !strings.Contains(p.stderr.String(), "verified: the receiver's image is identical") {
		t.Errorf("demo did not verify: %s", p.stderr)
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{
		{"send", "x.img"},
		{"recv", "--listen", "tcp:127.0.0.1:0"},
		{"demo", "--channels", "0"},
		{"demo", "--size", "lots"},
		{"send", "--to", "udp:1.2.3.4:5", "x.img"},
		{"demo", "--no-such-flag"},
	} {
		p := start(t, args...)
		if code := p.wait(t); code != 2 {
			t.Errorf("%v exited %d, want 2: %s", args, code, p.stderr)
		}
		if !strings.HasPrefix(p.stderr.String(), "pagewire: ") {
			t.Errorf("%v: stderr %q", args, p.stderr)
		}
	}
}
