package core_test

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/pagewire/pagewire/core"
	"github.com/pagewire/pagewire/internal/qemuvectors"
)

// replay connects to addr once per captured stream, in the capture's
// accept order, and writes each stream's bytes, all at once.
func replay(t *testing.T, addr string, streams [][]byte) {
	t.Helper()
	var wg sync.WaitGroup
	for _, b := range streams {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			c.SetWriteDeadline(time.Now().Add(time.Minute))
			c.Write(b)
		}()
	}
	wg.Wait()
}

// TestQEMU72Vectors rebuilds pc.ram from every migration captured from a
// real QEMU 7.2 and checks every page against the source's final RAM.
func TestQEMU72Vectors(t *testing.T) {
	dir, err := qemuvectors.Dir("PAGEWIRE_QEMU_VECTORS", "qemu-7.2")
	if err != nil {
		t.Fatal(err)
	}
	cases, err := qemuvectors.List(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			var streams [][]byte
			for _, s := range c.Streams {
				b, err := c.Load(s)
				if err != nil {
					t.Fatal(err)
				}
				streams = append(streams, b)
			}
			m, err := core.Methods.Lookup(c.Method)
			if err != nil {
				t.Fatal(err)
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			q := core.NewQEMUReceiver(core.QEMUConfig{Channels: c.Channels, Method: m})
			type res struct {
				mem core.Memory
				err error
			}
			done := make(chan res, 1)
			go func() {
				mem, err := q.Receive(ctx, ln)
				done <- res{mem, err}
			}()
			replay(t, ln.Addr().String(), streams)
			r := <-done
			if r.err != nil {
				t.Fatal(r.err)
			}
			var ram []byte
			for _, b := range r.mem.Blocks() {
				if b.Name == "pc.ram" {
					ram = b.Data
				}
			}
			if err := c.Check(ram); err != nil {
				t.Fatal(err)
			}
			st := q.Stats()
			t.Logf("%s: %d pages on %d channels, %d zero pages on main, %d sync points, %d device bytes, machine %s",
				c.Name, st.NormalPages, len(st.Channels), st.MainZeroPages, st.SyncPoints, st.DeviceBytes, st.Machine)
		})
	}
}
