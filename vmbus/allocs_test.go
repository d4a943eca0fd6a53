//go:build !race

package vmbus_test

import (
	"context"
	"io"
	"testing"

	"github.com/pagewire/pagewire/vmbus"
)

// The steady state allocates nothing: writes, reads (every form), signals
// and the non-blocking path of Write/Read. (Built without -race, whose
// instrumentation allocates.)
func TestRingAllocs(t *testing.T) {
	g := newRig(t, 65536+vmbus.HeaderSize, 0, vmbus.Config{})
	payload, buf := pattern(1, 1000), make([]byte, 1024)
	ctx := context.Background()
	var id uint64
	allocs := testing.AllocsPerRun(1000, func() {
		id++
		if err := g.ring.TryWrite(inband(id), payload); err != nil {
			t.Fatal(err)
		}
		if err := g.ring.Write(ctx, vmbus.Header{Type: vmbus.PacketDataInband, Ext: buf[:16]}, payload); err != nil {
			t.Fatal(err)
		}
		if _, _, err := g.ring.TryRead(buf); err != nil {
			t.Fatal(err)
		}
		if err := g.ring.WaitReadable(ctx); err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := g.ring.NextView(); err != nil {
			t.Fatal(err)
		}
		if _, _, err := g.ring.TryRead(buf); err != vmbus.ErrWouldBlock {
			t.Fatal(err)
		}
		if _, err := g.ring.EndRead(); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per write/read round", allocs)
	}
	if g.toReader.Count() == 0 {
		t.Fatal("no signals on the measured path")
	}
}

// A Channel's stream (frames through NewPipe, no deadlines set)
// allocates nothing either.
func TestChannelAllocs(t *testing.T) {
	a, b, err := vmbus.NewPipe(vmbus.ChannelConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	defer b.Close()
	src, dst := pattern(2, 5000), make([]byte, 5000)
	allocs := testing.AllocsPerRun(1000, func() {
		if _, err := a.Write(src); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(b, dst); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per write/read", allocs)
	}
}
