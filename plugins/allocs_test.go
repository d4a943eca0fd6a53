//go:build !race

// The race detector's instrumentation allocates, so allocation counts are
// checked in a build without it: 'make test' runs these separately.

package plugins_test

import (
	"testing"

	"github.com/pagewire/pagewire/sdk"
)

// TestSenderAllocs: after one pass over real packets, a method's prepare
// and recv allocate nothing per packet.
func TestSenderAllocs(t *testing.T) {
	pkts := packets(t, 200)
	for _, m := range methods {
		t.Run(label(m), func(t *testing.T) {
			snd, _ := m.NewSender(0, opts)
			rcv, _ := m.NewReceiver(0, opts)
			defer snd.Close()
			defer rcv.Close()
			payload := make([]byte, 0, sdk.MaxPayload(128, ps))
			dst := alloc(128)
			var sp, rp sdk.Packet
			i := 0
			step := func() {
				pages := pkts[i%len(pkts)]
				i++
				sp.Pages = pages
				payload, _ = snd.Prepare(&sp, payload[:0])
				rp.Pages = dst[:len(pages)]
				if err := rcv.Recv(&rp, payload); err != nil {
					t.Fatal(err)
				}
			}
			// Warm up over every packet once: stream decoders size their
			// tables to the largest they meet, once per transfer.
			for range pkts {
				step()
			}
			if a := testing.AllocsPerRun(300, step); a > 0 {
				t.Errorf("%v allocations per packet in steady state", a)
			}
		})
	}
}
