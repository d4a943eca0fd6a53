package core_test

import (
	"context"
	"testing"

	"github.com/pagewire/pagewire/core"
	"github.com/pagewire/pagewire/internal/pagegen"
)

// BenchmarkTransferFreshMemory is a whole transfer into destination
// memory the receiver allocates from the sender's block list, as the CLI
// and the demo do: page faults on fresh memory are part of the cost.
func BenchmarkTransferFreshMemory(b *testing.B) {
	img := pagegen.Image(1<<30, 4096, 1)
	b.SetBytes(int64(len(img)))
	b.ReportAllocs()
	for b.Loop() {
		ln, d := tcpTransport(b)
		ctx := context.Background()
		rc := receive(ctx, ln, core.ReceiverConfig{})
		s, err := core.NewSender(ctx, d, core.Blocks{{Name: "pc.ram", Data: img}}, core.SenderConfig{Channels: 4})
		if err != nil {
			b.Fatal(err)
		}
		if err := s.SendBlock("pc.ram"); err != nil {
			b.Fatal(err)
		}
		if _, err := s.Close(); err != nil {
			b.Fatal(err)
		}
		if res := wait(b, rc); res.err != nil {
			b.Fatal(res.err)
		}
	}
}
