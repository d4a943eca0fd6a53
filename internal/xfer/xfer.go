// Package xfer runs one whole in-memory transfer for benchmarks that
// compare how a method was loaded (built in, Wasm, go-plugin).
package xfer

import (
	"context"
	"testing"
	"time"

	"github.com/pagewire/pagewire/channels"
	"github.com/pagewire/pagewire/core"
	"github.com/pagewire/pagewire/sdk"
)

// Time moves src's one block from a sender using ms to a receiver using
// mr, writing into dst, over 2 channels of an in-memory pipe, and
// returns how long it took.
func Time(src core.Memory, dst []byte, ms, mr sdk.Method) (time.Duration, error) {
	d, _, err := Run(src, dst, ms, mr)
	return d, err
}

// Run is Time, also returning the sender's statistics.
func Run(src core.Memory, dst []byte, ms, mr sdk.Method) (time.Duration, core.Stats, error) {
	name := src.Blocks()[0].Name
	ctx := context.Background()
	p := channels.NewPipe()
	done := make(chan error, 1)
	r := core.NewReceiver(core.ReceiverConfig{Method: mr, Memory: core.Blocks{{Name: name, Data: dst}}})
	start := time.Now()
	go func() {
		_, err := r.Receive(ctx, p)
		done <- err
	}()
	s, err := core.NewSender(ctx, p, src, core.SenderConfig{Channels: 2, Method: ms})
	if err != nil {
		p.Close()
		<-done
		return 0, core.Stats{}, err
	}
	err = s.SendBlock(name)
	st, cerr := s.Close()
	if cerr != nil {
		err = cerr
	}
	if rerr := <-done; err == nil {
		err = rerr
	}
	return time.Since(start), st, err
}

// MustTime is Time, failing tb on error.
func MustTime(tb testing.TB, src core.Memory, dst []byte, ms, mr sdk.Method) time.Duration {
	tb.Helper()
	d, err := Time(src, dst, ms, mr)
	if err != nil {
		tb.Fatal(err)
	}
	return d
}

// Compare transfers src with builtin and with other on both ends, side by
// side in every iteration of b, and reports builtin-MB/s, NAME-MB/s and
// NAME/builtin (other's throughput over the built-in's).
func Compare(b *testing.B, src core.Memory, dst []byte, builtin, other sdk.Method, name string) {
	size := len(src.Blocks()[0].Data)
	b.SetBytes(int64(size))
	var tb, to time.Duration
	for b.Loop() {
		tb += MustTime(b, src, dst, builtin, builtin)
		to += MustTime(b, src, dst, other, other)
	}
	mb := float64(size) * float64(b.N) / 1e6
	b.ReportMetric(mb/tb.Seconds(), "builtin-MB/s")
	b.ReportMetric(mb/to.Seconds(), name+"-MB/s")
	b.ReportMetric(tb.Seconds()/to.Seconds(), name+"/builtin")
}
