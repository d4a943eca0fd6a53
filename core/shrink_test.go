package core_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pagewire/pagewire/core"
	"github.com/pagewire/pagewire/plugins/builtin"
)

// TestSourceShrinks: a source image file truncated during the transfer
// fails the transfer with an error on both ends, not a SIGBUS crash, for
// a raw method (the kernel reads the pages) and a compressing one (the
// method reads them).
func TestSourceShrinks(t *testing.T) {
	for _, name := range []string{"nocomp", "zstd"} {
		t.Run(name, func(t *testing.T) {
			m, _ := builtin.Lookup(name)
			path := filepath.Join(t.TempDir(), "guest.img")
			img := make([]byte, 32<<20)
			for i := range img {
				img[i] = byte(i*7>>12) | 1
			}
			if err := os.WriteFile(path, img, 0o644); err != nil {
				t.Fatal(err)
			}
			src, err := core.OpenImage(path, "pc.ram")
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			ln, d := tcpTransport(t)
			rc := receive(ctx, ln, core.ReceiverConfig{})
			s, err := core.NewSender(ctx, slowDialer{d, 20 * time.Millisecond}, src, core.SenderConfig{Channels: 2, Method: m})
			if err != nil {
				t.Fatal(err)
			}
			time.AfterFunc(300*time.Millisecond, func() { os.Truncate(path, 0) })
			err = s.SendBlock("pc.ram")
			if err == nil {
				_, err = s.Close()
			} else {
				s.Close()
			}
			if err == nil || !strings.Contains(err.Error(), "memory fault") {
				t.Errorf("sender: %v, want a memory fault", err)
			}
			if res := wait(t, rc); res.err == nil || !strings.Contains(res.err.Error(), "memory fault") {
				t.Errorf("receiver: %v, want the sender's memory fault", res.err)
			}
		})
	}
}
