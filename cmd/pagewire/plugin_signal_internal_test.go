package main

import (
	"slices"
	"sync"
	"testing"
	"time"
)

func resetExitFuncs() {
	exitFuncs.Lock()
	exitFuncs.fs, exitFuncs.next, exitFuncs.running = nil, 0, nil
	exitFuncs.Unlock()
}

// TestAtExit: cleanups run once, newest first, without the unregistered
// ones; a second runExitFuncs waits for the first to finish them; a
// cleanup registered after they ran runs at once.
func TestAtExit(t *testing.T) {
	resetExitFuncs()
	t.Cleanup(resetExitFuncs)
	var (
		mu  sync.Mutex
		ran []int
	)
	record := func(i int) func() {
		return func() {
			mu.Lock()
			ran = append(ran, i)
			mu.Unlock()
		}
	}
	atExit(record(1))
	unregister := atExit(record(2))
	release := make(chan struct{})
	entered := make(chan struct{}) // the first runExitFuncs is in its cleanups
	atExit(func() { close(entered); <-release; record(3)() })
	unregister()

	first := make(chan struct{})
	go func() { runExitFuncs(); close(first) }()
	second := make(chan struct{})
	go func() {
		<-entered
		runExitFuncs()
		close(second)
	}()
	select {
	case <-second:
		t.Fatal("a second runExitFuncs returned before the cleanups had run")
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	<-first
	<-second
	atExit(record(4))
	runExitFuncs()
	mu.Lock()
	defer mu.Unlock()
	if want := []int{3, 1, 4}; !slices.Equal(ran, want) {
		t.Errorf("cleanups ran %v, want %v", ran, want)
	}
}
