package wasm_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pagewire/pagewire/wasm"
)

// loadAsync runs wasm.Load in a goroutine and waits up to limit for it.
// A Load that does not return in time fails the test; its goroutine is
// left behind (nothing can stop it), so this must be the test's end.
func loadAsync(t *testing.T, ctx context.Context, name string, cfg wasm.Config, limit time.Duration) (time.Duration, error) {
	t.Helper()
	type result struct {
		m   *wasm.Module
		err error
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		m, err := wasm.Load(ctx, modules[name], cfg)
		done <- result{m, err}
	}()
	select {
	case r := <-done:
		if r.m != nil {
			r.m.Close(context.Background())
		}
		return time.Since(start), r.err
	case <-time.After(limit):
		t.Fatalf("Load(%s, %+v) did not return within %v", name, cfg, limit)
		return 0, nil
	}
}

// TestStartDeadline: a module whose start function (_initialize) loops
// forever is stopped at the call deadline when it is loaded, in the fast
// tier (which has no per-loop checks) as in the checked one, and Load
// fails with ErrDeadline (issue 16, fault 5).
func TestStartDeadline(t *testing.T) {
	const timeout = 300 * time.Millisecond
	for _, c := range []struct {
		name string
		cfg  wasm.Config
	}{
		{"fast", wasm.Config{CallTimeout: timeout, CacheDir: testCache()}},
		{"strict", wasm.Config{CallTimeout: timeout, CacheDir: testCache(), Strict: true}},
	} {
		t.Run(c.name, func(t *testing.T) {
			el, err := loadAsync(t, context.Background(), "startloop", c.cfg, timeout+time.Second)
			if !errors.Is(err, wasm.ErrDeadline) || !errors.Is(err, wasm.ErrPlugin) ||
				!strings.Contains(err.Error(), "startloop.wasm: instantiate: start function gave no answer within 300ms") {
				t.Fatalf("Load: %v", err)
			}
			if el < timeout {
				t.Errorf("stopped after %v, before the deadline of %v", el, timeout)
			}
		})
	}
}

// TestStartCancel: cancelling Load's context (what a signal does to the
// command loading a plugin) stops a start function that loops, long
// before the call deadline.
func TestStartCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	el, err := loadAsync(t, ctx, "startloop", wasm.Config{CallTimeout: time.Hour, CacheDir: testCache()}, 5*time.Second)
	if !errors.Is(err, context.Canceled) || !errors.Is(err, wasm.ErrPlugin) {
		t.Fatalf("Load: %v", err)
	}
	if el > 1200*time.Millisecond {
		t.Errorf("stopped %v after the start, 200ms after which the context was cancelled", el)
	}
}

// TestExportSignatures: a module whose exports do not have the ABI's
// signatures (a pagewire_prepare with three parameters) is refused at
// load, naming the export and both signatures (issue 16, item 9).
func TestExportSignatures(t *testing.T) {
	_, err := wasm.Load(context.Background(), modules["badsig"], wasm.Config{CacheDir: testCache()})
	want := "badsig.wasm: pagewire_prepare is (i32, i32, i32) -> i32; ABI v1 wants (i32, i32, i32, i32) -> i32"
	if !errors.Is(err, wasm.ErrPlugin) || err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Load: %v, want an error containing %q", err, want)
	}
}

func testCache() string { return filepath.Join(os.TempDir(), "pagewire-wasm-test-cache") }
