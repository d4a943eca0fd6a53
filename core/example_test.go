package core_test

import (
	"bytes"
	"context"
	"fmt"

	"github.com/pagewire/pagewire/channels"
	"github.com/pagewire/pagewire/core"
)

// Example moves one RAM block from a Sender to a Receiver over an
// in-memory pipe. Zero pages travel as offsets only.
func Example() {
	ctx := context.Background()
	pipe := channels.NewPipe() // the receiver's listener and the sender's dialer

	type received struct {
		mem core.Memory
		err error
	}
	done := make(chan received, 1)
	go func() {
		r := core.NewReceiver(core.ReceiverConfig{})
		mem, err := r.Receive(ctx, pipe)
		done <- received{mem, err}
	}()

	src := make([]byte, 16*4096) // 16 pages, all zero but two
	copy(src[0:], "first page")
	copy(src[5*4096:], "sixth page")
	s, err := core.NewSender(ctx, pipe, core.Blocks{{Name: "pc.ram", Data: src}}, core.SenderConfig{Channels: 2})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := s.SendBlock("pc.ram"); err != nil {
		fmt.Println(err)
	}
	st, err := s.Close() // sends a final SYNC and waits for the receiver
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("sent %d pages, %d of them zero\n", st.NormalPages+st.ZeroPages, st.ZeroPages)

	res := <-done
	if res.err != nil {
		fmt.Println(res.err)
		return
	}
	dst := res.mem.Blocks()[0]
	fmt.Printf("%s: %q\n", dst.Name, bytes.TrimRight(dst.Data[5*4096:6*4096], "\x00"))
	fmt.Println("identical:", bytes.Equal(dst.Data, src))
	// Output:
	// sent 16 pages, 14 of them zero
	// pc.ram: "sixth page"
	// identical: true
}

// ExampleSender_Sync sends a page, changes it, and sends it again after a
// Sync: the receiver ends with the newer content, whichever channels the
// two copies travelled on.
func ExampleSender_Sync() {
	ctx := context.Background()
	pipe := channels.NewPipe()
	dst := core.Blocks{{Name: "pc.ram", Data: make([]byte, 4*4096)}}
	done := make(chan error, 1)
	go func() {
		_, err := core.NewReceiver(core.ReceiverConfig{Memory: dst}).Receive(ctx, pipe)
		done <- err
	}()

	src := make([]byte, 4*4096)
	s, err := core.NewSender(ctx, pipe, core.Blocks{{Name: "pc.ram", Data: src}}, core.SenderConfig{Channels: 4})
	if err != nil {
		fmt.Println(err)
		return
	}
	for round, text := range []string{"old", "new"} {
		if round > 0 {
			// Everything queued before lands before anything queued after,
			// and the pages may change again.
			if err := s.Sync(); err != nil {
				fmt.Println(err)
			}
		}
		copy(src[4096:], text)
		if err := s.SendPages("pc.ram", []uint64{4096}); err != nil {
			fmt.Println(err)
		}
	}
	st, err := s.Close()
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := <-done; err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%d packets, %d SYNC packets\n", st.Packets, st.Syncs)
	fmt.Printf("%s\n", dst[0].Data[4096:4096+3])
	// Output:
	// 2 packets, 8 SYNC packets
	// new
}
