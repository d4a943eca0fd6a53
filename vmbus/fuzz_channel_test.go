package vmbus_test

import (
	"encoding/binary"
	"errors"
	"io"
	"os"
	"testing"
	"time"

	"github.com/pagewire/pagewire/vmbus"
)

// FuzzChannelRead reads the stream framing of Channel over arbitrary
// inbound ring memory: byte 0 says whether write_index is taken raw or
// made valid, bytes 1-4 are write_index, the rest the 8 KiB data area.
// Read must return bytes, io.EOF or an error matching ErrProtocol,
// ErrBadFrame or os.ErrDeadlineExceeded; never panic, never hang.
func FuzzChannelRead(f *testing.F) {
	// Honest frames, written by a Channel: small, empty-then-FIN, wrapped.
	for _, sizes := range [][]int{{1, 100, 3000}, {0}, {4000, 4000}} {
		ring := make([]byte, 3*vmbus.PageSize)
		vmbus.InitRing(ring)
		c, err := vmbus.NewChannelOver(ring, make([]byte, 2*vmbus.PageSize))
		if err != nil {
			f.Fatal(err)
		}
		for i, n := range sizes {
			if i == len(sizes)-1 {
				c.CloseWrite()
				break
			}
			c.Write(pattern(i, n))
		}
		in := []byte{0}
		in = append(in, ring[0:4]...)
		f.Add(append(in, ring[vmbus.HeaderSize:]...))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 5 {
			return
		}
		ring := make([]byte, 3*vmbus.PageSize)
		vmbus.InitRing(ring)
		copy(ring[vmbus.HeaderSize:], in[5:])
		w := binary.LittleEndian.Uint32(in[1:])
		if in[0]&1 == 0 {
			w = (w % (2 * vmbus.PageSize)) &^ 7
		}
		binary.LittleEndian.PutUint32(ring[0:], w)
		out := make([]byte, 2*vmbus.PageSize)
		vmbus.InitRing(out)
		c, err := vmbus.NewChannelOver(out, ring)
		if err != nil {
			if !errors.Is(err, vmbus.ErrProtocol) {
				t.Fatal(err) // a bad write_index is refused when attaching
			}
			return
		}
		defer c.Close()
		c.SetReadDeadline(time.Now()) // never wait for more
		buf := make([]byte, 777)
		total := 0
		for range 100 {
			n, err := c.Read(buf)
			total += n
			if total > 2*vmbus.PageSize {
				t.Fatalf("read %d bytes from an 8 KiB ring", total)
			}
			if err == nil {
				continue
			}
			if err != io.EOF && !errors.Is(err, vmbus.ErrProtocol) && !errors.Is(err, vmbus.ErrBadFrame) && !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
	})
}
