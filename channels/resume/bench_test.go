package resume_test

import (
	"context"
	"io"
	"net"
	"testing"

	"github.com/pagewire/pagewire/channels"
	"github.com/pagewire/pagewire/channels/resume"
)

// BenchmarkStream writes 4 KiB pieces (a page each, as the engine writes
// a packet's pages) through a session on loopback TCP, against the bare
// connection: the session's own cost per byte.
func BenchmarkStream(b *testing.B) {
	for _, mode := range []string{"tcp", "resume"} {
		b.Run(mode, func(b *testing.B) {
			raw, err := channels.Listen("tcp:127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			var ln net.Listener = raw
			td, _ := channels.NewDialer(channels.Addr(raw.Addr()))
			var d interface {
				Dial(context.Context) (net.Conn, error)
			} = td
			if mode == "resume" {
				rl := resume.NewListener(raw, resume.Config{Window: 512 << 10})
				ln, d = rl, resume.NewDialer(td, resume.Config{Window: 512 << 10})
			}
			defer ln.Close()
			done := make(chan int64)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					done <- 0
					return
				}
				n, _ := io.Copy(io.Discard, c)
				c.Close()
				done <- n
			}()
			c, err := d.Dial(context.Background())
			if err != nil {
				b.Fatal(err)
			}
			page := make([]byte, 4096)
			b.SetBytes(int64(len(page)))
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, err := c.Write(page); err != nil {
					b.Fatal(err)
				}
			}
			c.Close()
			if n := <-done; n != int64(b.N)*4096 {
				b.Fatalf("%d bytes came, want %d", n, b.N*4096)
			}
		})
	}
}
