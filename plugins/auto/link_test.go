package auto_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pagewire/pagewire/channels"
	"github.com/pagewire/pagewire/core"
	"github.com/pagewire/pagewire/internal/corpus"
	"github.com/pagewire/pagewire/plugins/auto"
	"github.com/pagewire/pagewire/plugins/builtin"
)

// TestAdaptsToLink sends 96 MiB of a real guest's memory with auto over
// four channels through a link of 24 MB/s, three times over (a Sync
// between), so that the first windows, before the link is known, are a
// small part of it: the controller finds the link (within a factor of
// 1.5) and sends most pages compressed with zstd, and the receiver's
// memory equals the source's. Unlimited, the same transfer also lands
// whole, whatever it chose.
func TestAdaptsToLink(t *testing.T) {
	img, err := corpus.LoadFirst()
	if err != nil {
		t.Fatal(err)
	}
	img = bytes.Clone(img[:min(len(img), 96<<20)])
	for _, bps := range []int64{24e6, 0} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		ln, err := channels.Listen("tcp:127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		d, err := channels.NewDialer(channels.Addr(ln.Addr()))
		if err != nil {
			t.Fatal(err)
		}
		type result struct {
			mem core.Memory
			err error
		}
		done := make(chan result, 1)
		go func() {
			r := core.NewReceiver(core.ReceiverConfig{Methods: builtin.Methods()})
			mem, err := r.Receive(ctx, ln)
			done <- result{mem, err}
		}()
		m := auto.New()
		s, err := core.NewSender(ctx, channels.Limit(d, bps), core.Blocks{{Name: "pc.ram", Data: img}}, core.SenderConfig{Channels: 4, Method: m})
		if err != nil {
			t.Fatal(err)
		}
		for round := range 3 {
			if round > 0 {
				if err := s.Sync(); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.SendBlock("pc.ram"); err != nil {
				t.Fatal(err)
			}
		}
		st, err := s.Close()
		if err != nil {
			t.Fatal(err)
		}
		res := <-done
		if res.err != nil {
			t.Fatal(res.err)
		}
		if !bytes.Equal(res.mem.Blocks()[0].Data, img) {
			t.Fatal("received memory differs")
		}
		rep := m.Report()
		t.Logf("%d B/s: %s (%.1f s, %.0f MB on the wire)", bps, rep, st.Elapsed.Seconds(), float64(st.WireBytes)/1e6)
		var total, zstd uint64
		for _, c := range rep.Candidates {
			total += c.InBytes
			if strings.HasPrefix(c.Name, "zstd") {
				zstd += c.InBytes
			}
		}
		if bps == 0 {
			continue
		}
		if rep.LinkBytesPerSec < float64(bps)/1.5 || rep.LinkBytesPerSec > float64(bps)*1.5 {
			t.Errorf("link estimate %.0f B/s, the link is %d", rep.LinkBytesPerSec, bps)
		}
		if zstd < total*3/4 {
			t.Errorf("zstd took %d of %d bytes of pages on a %d B/s link", zstd, total, bps)
		}
	}
}
