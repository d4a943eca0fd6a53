// Package xfer runs one whole in-memory transfer for benchmarks that
// compare how a method was loaded (built in, Wasm, go-plugin).
package xfer

import (
	"context"
	"time"

	"github.com/pagewire/pagewire/channels"
	"github.com/pagewire/pagewire/core"
	"github.com/pagewire/pagewire/sdk"
)

// Time moves img as block pc.ram from a sender using ms to a receiver
// using mr, writing into dst, over 2 channels of an in-memory pipe, and
// returns how long it took.
func Time(img, dst []byte, ms, mr sdk.Method) (time.Duration, error) {
	ctx := context.Background()
	p := channels.NewPipe()
	done := make(chan error, 1)
	r := core.NewReceiver(core.ReceiverConfig{Method: mr, Memory: core.Blocks{{Name: "pc.ram", Data: dst}}})
	start := time.Now()
	go func() {
		_, err := r.Receive(ctx, p)
		done <- err
	}()
	s, err := core.NewSender(ctx, p, core.Blocks{{Name: "pc.ram", Data: img}}, core.SenderConfig{Channels: 2, Method: ms})
	if err != nil {
		p.Close()
		<-done
		return 0, err
	}
	err = s.SendBlock("pc.ram")
	if _, cerr := s.Close(); cerr != nil {
		err = cerr
	}
	if rerr := <-done; err == nil {
		err = rerr
	}
	return time.Since(start), err
}
