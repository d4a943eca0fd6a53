package vmbus_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pagewire/pagewire/channels/vmbus"
	vb "github.com/pagewire/pagewire/vmbus"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestDialOrder: Dials open the primary, then sub-channels in order; each
// is accepted with its bytes intact; the last Close ends the guest
// connection and the Listener's goroutines.
func TestDialOrder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vmbus.sock")
	ln, err := vmbus.Listen(path, vmbus.Config{Channels: 4, Channel: vb.ChannelConfig{SendSize: 64 << 10, RecvSize: 16 << 10}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Wait()
	defer ln.Close()
	if a := ln.Addr(); a.Network() != "vmbus" || a.String() != path {
		t.Fatalf("addr %v %v", a.Network(), a)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	d := vmbus.NewDialer(path, vmbus.Config{Channel: vb.ChannelConfig{SendSize: 64 << 10, RecvSize: 16 << 10}})

	var wg sync.WaitGroup
	got := make(chan []byte, 4)
	wg.Go(func() {
		for range 4 {
			c, err := ln.Accept()
			if err != nil {
				t.Error(err)
				return
			}
			wg.Go(func() {
				defer c.Close()
				b, err := io.ReadAll(c)
				if err != nil {
					t.Error(err)
				}
				got <- b
			})
		}
	})
	var conns []net.Conn
	for i := range 4 {
		c, err := d.Dial(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ch := c.(interface{ SubChannel() uint16 })
		if int(ch.SubChannel()) != i {
			t.Fatalf("dial %d opened sub-channel %d", i, ch.SubChannel())
		}
		conns = append(conns, c)
	}
	if _, err := d.Dial(ctx); !errors.Is(err, vmbus.ErrNoChannel) {
		t.Fatalf("fifth dial: %v", err)
	}
	want := map[string]bool{}
	for i, c := range conns {
		b := bytes.Repeat([]byte{byte(i)}, 100_000+i)
		want[string(b)] = true
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	wg.Wait()
	close(got)
	for b := range got {
		if !want[string(b)] {
			t.Errorf("got %d unexpected bytes", len(b))
		}
	}
	// The guest left with the last Close: Wait returns after Close.
	ln.Close()
	done := make(chan struct{})
	go func() { ln.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("listener goroutines still running")
	}
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("accept after close: %v", err)
	}
}
