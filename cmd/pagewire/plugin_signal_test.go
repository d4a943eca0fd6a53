package main_test

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// buildStartLoop builds wasm/testdata/startloop, a fast-tier module whose
// start function never returns, as dir/startloop.wasm.
func buildStartLoop(t testing.TB, dir string) string {
	t.Helper()
	out := filepath.Join(dir, "startloop.wasm")
	cmd := exec.Command("clang", "--target=wasm32-wasi", "-O2", "-mexec-model=reactor", "-Wall", "-Wextra", "-Werror",
		"-I../../plugins/csrc", "-Wl,--gc-sections", "-o", out, "../../wasm/testdata/startloop/startloop.c")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build wasm/testdata/startloop (make test installs clang and wasi-libc): %v\n%s", err, b)
	}
	return out
}

// signalExit sends sig to p and returns its exit code, failing the test
// unless it exits within limit.
func signalExit(t *testing.T, p *proc, sig syscall.Signal, limit time.Duration) (int, time.Duration) {
	t.Helper()
	start := time.Now()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(limit):
		t.Fatalf("%v still running %v after %v", p.cmd.Args[1:], limit, sig)
	}
	return p.cmd.ProcessState.ExitCode(), time.Since(start)
}

// TestPluginSignal: SIGTERM and SIGINT end plugin inspect and plugin test
// of a fast-tier module whose start function loops forever: loading a
// module runs its start function where cancelling stops it (issue 16,
// fault 5; the process used to spin, deaf to both, until killed).
func TestPluginSignal(t *testing.T) {
	mod := buildStartLoop(t, t.TempDir())
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		for _, args := range [][]string{
			{"plugin", "inspect", mod},
			{"plugin", "inspect", "--strict", mod},
			{"plugin", "test", mod},
		} {
			t.Run(sig.String()+"/"+strings.Join(args[:len(args)-1], " "), func(t *testing.T) {
				p := start(t, args...)
				time.Sleep(500 * time.Millisecond)
				code, el := signalExit(t, p, sig, 2*time.Second)
				if code == 0 {
					t.Errorf("exited 0 after %v", sig)
				}
				t.Logf("exit %d %v after %v: %s", code, el, sig, p.stderr)
			})
		}
	}
}

// TestPluginSignalLastResort: a command that does not return once a
// signal cancelled it (plugin test while a module's prepare loops; the
// call ignores the cancelled context until its own 10s deadline) is ended
// a second after the signal with 128+the signal's number.
func TestPluginSignalLastResort(t *testing.T) {
	mod := filepath.Join(t.TempDir(), "loop.wasm")
	build := exec.Command("go", "build", "-buildmode=c-shared", "-o", mod, "../../wasm/testdata/loop")
	build.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build wasm/testdata/loop: %v\n%s", err, b)
	}
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			p := &proc{cmd: exec.Command(bin, "plugin", "test", mod), stderr: &bytes.Buffer{}, done: make(chan struct{})}
			p.cmd.Stdout = &p.stdout
			pr, err := p.cmd.StderrPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := p.cmd.Start(); err != nil {
				t.Fatal(err)
			}
			looping := make(chan struct{})
			copied := make(chan struct{})
			go func() {
				defer close(copied)
				seen := false
				sc := bufio.NewScanner(pr)
				for sc.Scan() {
					if !seen && strings.Contains(sc.Text(), "loop: prepare never returns") {
						close(looping)
						seen = true
					}
					p.stderr.WriteString(sc.Text() + "\n")
				}
			}()
			go func() { <-copied; p.cmd.Wait(); close(p.done) }()
			t.Cleanup(func() {
				p.cmd.Process.Kill()
				<-p.done
			})
			select {
			case <-looping:
			case <-time.After(time.Minute):
				t.Fatal("the module's prepare did not start within a minute")
			}
			code, el := signalExit(t, p, sig, 2*time.Second)
			if code != 128+int(sig) || !strings.Contains(p.stderr.String(), "the command did not stop within 1s; exiting") {
				t.Errorf("exit %d %v after %v, want %d: %s", code, el, sig, 128+int(sig), p.stderr)
			}
			if el < time.Second {
				t.Errorf("ended %v after %v, before its second of grace", el, sig)
			}
		})
	}
}

// TestPluginSignalDeaf: send and recv whose Wasm plugin loops forever in
// prepare (sender) or recv (receiver) without ever calling pagewire.check
// end within a second of SIGTERM or SIGINT, by the ordinary cancel and
// not the last resort, and leave no IMAGE.partial (issue 16, fault 5: in
// the fast tier such a call could not be preempted and the process froze
// at the next garbage collection; a module that does not import check
// now runs checked).
func TestPluginSignalDeaf(t *testing.T) {
	dir := t.TempDir()
	mod := filepath.Join(dir, "deaf.wasm")
	build := exec.Command("clang", "--target=wasm32-wasi", "-O2", "-mexec-model=reactor", "-Wall", "-Wextra", "-Werror",
		"-I../../plugins/csrc", "-Wl,--gc-sections", "-o", mod, "../../wasm/testdata/deaf/deaf.c")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build wasm/testdata/deaf (make test installs clang and wasi-libc): %v\n%s", err, b)
	}
	img, _ := writeImage(t, 8<<20, 7)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		for _, who := range []string{"recv", "send"} {
			t.Run(sig.String()+"/"+who, func(t *testing.T) {
				out := filepath.Join(t.TempDir(), "out.img")
				r, addr := startRecv(t, "recv", "--listen", "tcp:127.0.0.1:0", "--plugin", mod, "--out", out)
				s := start(t, "send", "--to", addr, "--channels", "1", "--plugin", mod, img)
				deadline := time.Now().Add(time.Minute)
				for {
					if _, err := os.Stat(out + ".partial"); err == nil {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("no .partial within a minute: %s %s", r.stderr, s.stderr)
					}
					time.Sleep(20 * time.Millisecond)
				}
				// Both ends are in the module's loops a moment later: the
				// sender at its second packet, the receiver at its first.
				time.Sleep(500 * time.Millisecond)
				p, other := r, s
				if who == "send" {
					p, other = s, r
				}
				code, el := signalExit(t, p, sig, time.Second)
				if code == 0 || strings.Contains(p.stderr.String(), "did not stop within") {
					t.Errorf("%s: exit %d %v after %v: %s", who, code, el, sig, p.stderr)
				}
				if code := other.wait(t); code == 0 {
					t.Errorf("the other end exited 0: %s", other.stderr)
				}
				for _, f := range []string{out, out + ".partial"} {
					if _, err := os.Stat(f); err == nil {
						t.Errorf("%s left behind", f)
					}
				}
				t.Logf("%s: exit %d %v after %v", who, code, el, sig)
			})
		}
	}
}
