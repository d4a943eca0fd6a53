package goplugin_test

import (
	"context"
	"crypto/sha256"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pagewire/pagewire/goplugin"
)

// onMessage is a slog handler that calls fn the first time a record with
// message msg is logged.
type onMessage struct {
	msg  string
	fn   func()
	once *sync.Once
}

func (h onMessage) Enabled(context.Context, slog.Level) bool { return true }
func (h onMessage) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.once.Do(h.fn)
	}
	return nil
}
func (h onMessage) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h onMessage) WithGroup(string) slog.Handler      { return h }

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

// TestPinnedFileRuns: with a pinned sha256, the file that runs is the
// file that was hashed, even when another executable replaces it at the
// path between the check and the start of the process (issue 16, item
// 9): the swap happens right after Load hashed the file, or just before
// go-plugin starts the process (its "starting plugin" line), after its
// own checks.
func TestPinnedFileRuns(t *testing.T) {
	for _, when := range []string{"after-hash", "before-exec"} {
		t.Run(when, func(t *testing.T) {
			dir := t.TempDir()
			plug, other := filepath.Join(dir, "pw-plugin"), filepath.Join(dir, "other")
			copyFile(t, bins["lz4"], plug)
			copyFile(t, bins["nocomp"], other)
			b, _ := os.ReadFile(plug)
			sum := sha256.Sum256(b)
			swapped := false
			swap := func() {
				if err := os.Rename(other, plug); err != nil {
					t.Error(err)
				}
				swapped = true
			}
			cfg := goplugin.Config{SHA256: sum[:]}
			if when == "after-hash" {
				t.Cleanup(goplugin.SetTestHookAfterHash(swap))
			} else {
				cfg.Log = slog.New(onMessage{msg: "starting plugin", fn: swap, once: new(sync.Once)})
			}
			m, err := goplugin.Load(plug, cfg)
			if !swapped {
				t.Fatal("the file was not swapped: the test's hook did not run")
			}
			if err != nil {
				t.Fatalf("load: %v", err)
			}
			defer m.Close()
			if got := m.Info().Name; got != "lz4" {
				t.Errorf("method %q ran, want the pinned lz4", got)
			}
			if in := m.Inspect(); in.SHA256 != hexString(sum[:]) {
				t.Errorf("inspect: sha256 %s, pinned %x", in.SHA256, sum)
			}
		})
	}
}

// TestLoadScript: a plugin file that is a script (#!) still runs, though
// it is run through its open descriptor.
func TestLoadScript(t *testing.T) {
	script := filepath.Join(t.TempDir(), "pw-script")
	if err := os.WriteFile(script, []byte("#!/bin/sh\nexec '"+bins["nocomp"]+"' \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(script)
	sum := sha256.Sum256(b)
	m, err := goplugin.Load(script, goplugin.Config{SHA256: sum[:]})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Info().Name != "nocomp" {
		t.Errorf("info %+v", m.Info())
	}
}

// TestGroupEnds: a process the plugin started (`sleep 300`) does not
// outlive the plugin (issue 16, item 9), whether the Method is closed,
// the plugin died before, the child holds the plugin's output pipes, or
// Load fails after the process started.
func TestGroupEnds(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, how := range []string{"close", "killed", "stdio", "load-fails"} {
		t.Run(how, func(t *testing.T) {
			pidFile := filepath.Join(t.TempDir(), "child.pid")
			t.Setenv(modeEnv, "plugin-spawn")
			t.Setenv(spawnPIDEnv, pidFile)
			if how == "stdio" {
				t.Setenv(spawnStdioEnv, "1")
			}
			if how == "load-fails" {
				t.Setenv(spawnV2Env, "1")
			}
			child := func() int {
				b, err := os.ReadFile(pidFile)
				if err != nil {
					return 0
				}
				pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
				return pid
			}
			t.Cleanup(func() { // by pid, whatever happened
				if pid := child(); pid > 0 && alive(pid) {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			})
			m, err := goplugin.Load(self, goplugin.Config{})
			if how == "load-fails" {
				if err == nil {
					m.Close()
					t.Fatal("loaded a plugin of protocol v2")
				}
				t.Logf("load: %v", err)
			} else {
				if err != nil {
					t.Fatal(err)
				}
				if pgid, err := syscall.Getpgid(m.Pid()); err != nil || pgid != m.Pid() {
					t.Errorf("plugin %d in process group %d (%v), want its own", m.Pid(), pgid, err)
				}
				if how == "killed" {
					pid := m.Pid()
					syscall.Kill(pid, syscall.SIGKILL)
					if !gone(pid, 5*time.Second) {
						t.Fatalf("plugin %d still running after SIGKILL", pid)
					}
				}
				closed := make(chan struct{})
				start := time.Now()
				go func() { m.Close(); close(closed) }()
				select {
				case <-closed:
				case <-time.After(10 * time.Second):
					if pid := child(); pid > 0 {
						syscall.Kill(pid, syscall.SIGKILL)
					}
					<-closed
					t.Errorf("Close took over 10s (until the child was killed)")
				}
				t.Logf("close: %v", time.Since(start))
			}
			pid := child()
			if pid <= 0 {
				t.Fatal("the plugin recorded no child")
			}
			if !gone(pid, 5*time.Second) {
				t.Errorf("the plugin's child %d still runs 5s after the plugin ended", pid)
			}
		})
	}
}
