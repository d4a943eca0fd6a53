package vmbus_test

import (
	"context"
	"fmt"

	"github.com/pagewire/pagewire/vmbus"
)

// Two goroutines share one ring: the writer's signals reach the reader
// through a Doorbell, and the reader's reach a blocked writer through
// another. Across processes the memory is a shared mapping and the
// Signalers write the peer's eventfd.
func ExampleRing() {
	mem := make([]byte, 16*vmbus.PageSize)
	if err := vmbus.InitRing(mem); err != nil {
		panic(err)
	}
	toReader, toWriter := vmbus.NewDoorbell(), vmbus.NewDoorbell()
	ring, err := vmbus.NewRing(mem, vmbus.Config{
		NotifyReader: toReader, DataReady: toReader.C(),
		NotifyWriter: toWriter, SpaceReady: toWriter.C(),
	})
	if err != nil {
		panic(err)
	}
	defer ring.Close()
	ctx := context.Background()

	done := make(chan error)
	go func() {
		for i := range 3 {
			h := vmbus.Header{Type: vmbus.PacketDataInband, TransID: uint64(i)}
			if err := ring.Write(ctx, h, []byte("hello, ring")); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	buf := make([]byte, vmbus.DefaultMaxPacketSize)
	for range 3 {
		d, n, err := ring.Read(ctx, buf)
		if err != nil {
			panic(err)
		}
		// The payload comes back padded to a multiple of 8.
		fmt.Printf("%d: %q\n", d.TransID, buf[:n])
	}
	if err := <-done; err != nil {
		panic(err)
	}
	// Output:
	// 0: "hello, ring\x00\x00\x00\x00\x00"
	// 1: "hello, ring\x00\x00\x00\x00\x00"
	// 2: "hello, ring\x00\x00\x00\x00\x00"
}
