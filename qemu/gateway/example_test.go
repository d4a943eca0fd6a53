package gateway_test

import (
	"context"
	"fmt"
	"time"

	"github.com/pagewire/pagewire/channels"
	"github.com/pagewire/pagewire/core"
	"github.com/pagewire/pagewire/plugins/builtin"
	"github.com/pagewire/pagewire/qemu/gateway"
)

// Example runs a gateway pair in process: a source QEMU (played by
// qemu.NewSender) migrates to an In, which forwards over a zstd
// link on 127.0.0.1 to an Out, which feeds a destination QEMU (played
// by a qemu.Receiver).
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m := newMigration(core.Dialect10, 3) // the source's RAM and main stream
	dst, err := startDestination(ctx, m, 2, "nocomp")
	if err != nil {
		fmt.Println(err)
		return
	}

	// The Out listens for the In's link and dials the destination.
	outLn, err := channels.Listen("tcp:127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	out := &gateway.Out{Dest: dst.Dialer, DestConfig: core.SenderConfig{Channels: 2}}
	// The In listens for the source and dials the Out.
	link, err := channels.NewDialer(channels.Addr(outLn.Addr()))
	if err != nil {
		fmt.Println(err)
		return
	}
	zstd, _ := builtin.Methods().Lookup("zstd")
	in := &gateway.In{
		Source:     gateway.SourceConfig{Channels: 2, UUID: m.uuid},
		Link:       link,
		LinkConfig: core.SenderConfig{Channels: 4, Method: zstd},
	}
	inLn, err := channels.Listen("tcp:127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	source, _ := channels.NewDialer(channels.Addr(inLn.Addr()))

	outErr := make(chan error, 1)
	go func() {
		_, err := out.Run(ctx, outLn)
		outErr <- err
	}()
	inErr := make(chan error, 1)
	go func() {
		_, err := in.Run(ctx, inLn)
		inErr <- err
	}()
	if err := m.play(ctx, source, nil); err != nil {
		fmt.Println("source:", err)
	}
	if err := <-inErr; err != nil {
		fmt.Println("in:", err)
	}
	if err := <-outErr; err != nil {
		fmt.Println("out:", err)
	}
	fmt.Printf("link: %d channels, %s\n", len(in.Stats().Channels), in.Stats().Method)
	fmt.Println("guest RAM:", out.RAMBytes())
	fmt.Println("destination RAM and main stream match:", dst.matches(m) == nil)
	// Output:
	// link: 4 channels, zstd
	// guest RAM: 1114112
	// destination RAM and main stream match: true
}
