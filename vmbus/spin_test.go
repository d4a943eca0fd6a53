package vmbus_test

import (
	"context"
	"testing"
	"time"

	"github.com/pagewire/pagewire/vmbus"
)

// TestSpinSavesSignals: a reader that spins does so with interrupt_mask
// set, and a writer spins before it stores pending_send_sz, so a peer that
// comes within the spin is never signaled.
func TestSpinSavesSignals(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	g := newRig(t, 2*vmbus.PageSize, 0, vmbus.Config{Spin: 5 * time.Second})
	got := make(chan error, 1)
	go func() {
		_, _, err := g.ring.Read(ctx, make([]byte, 4096))
		got <- err
	}()
	time.Sleep(10 * time.Millisecond)
	if g.word(8) != 1 {
		t.Fatalf("interrupt_mask %d while the reader spins", g.word(8))
	}
	if err := g.ring.TryWrite(inband(1), pattern(1, 100)); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if n := g.toReader.Count(); n != 0 {
		t.Fatalf("%d signals to a spinning reader", n)
	}

	// Fill the ring, then let a writer spin until the reader frees it.
	for i := 0; ; i++ {
		if err := g.ring.TryWrite(inband(uint64(i)), pattern(i, 1000)); err == vmbus.ErrWouldBlock {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- g.ring.Write(ctx, inband(99), pattern(2, 1000)) }()
	time.Sleep(10 * time.Millisecond)
	if g.word(12) != 0 {
		t.Fatalf("pending_send_sz %d while the writer spins", g.word(12))
	}
	buf := make([]byte, 4096)
	for range 2 {
		if _, _, err := g.ring.TryRead(buf); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := g.toWriter.Count(); n != 0 {
		t.Fatalf("%d signals to a spinning writer", n)
	}
}
