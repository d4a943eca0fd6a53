package core_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/pagewire/pagewire/channels"
	"github.com/pagewire/pagewire/core"
	"github.com/pagewire/pagewire/internal/pagegen"
	"github.com/pagewire/pagewire/plugins/builtin"
)

// transport is one way to connect the two ends.
type transport struct {
	name   string
	listen func(t testing.TB) (net.Listener, channels.Dialer)
}

func tcpTransport(t testing.TB) (net.Listener, channels.Dialer) {
	ln, err := channels.Listen("tcp:127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d, err := channels.NewDialer(channels.Addr(ln.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	return ln, d
}

func unixTransport(t testing.TB) (net.Listener, channels.Dialer) {
	addr := "unix:" + filepath.Join(t.TempDir(), "pw.sock")
	ln, err := channels.Listen(addr)
	if err != nil {
		t.Fatal(err)
	}
	d, err := channels.NewDialer(addr)
	if err != nil {
		t.Fatal(err)
	}
	return ln, d
}

func pipeTransport(t testing.TB) (net.Listener, channels.Dialer) {
	p := channels.NewPipe()
	return p, p
}

var transports = []transport{
	{"tcp", tcpTransport},
	{"unix", unixTransport},
	{"pipe", pipeTransport},
}

// result is what the receiving end ended with.
type result struct {
	mem   core.Memory
	stats core.Stats
	err   error
}

// receive runs a receiver on ln in the background.
// Without Methods it accepts every built-in method.
func receive(ctx context.Context, ln net.Listener, cfg core.ReceiverConfig) <-chan result {
	if cfg.Methods == nil {
		cfg.Methods = builtin.Methods()
	}
	ch := make(chan result, 1)
	r := core.NewReceiver(cfg)
	go func() {
		mem, err := r.Receive(ctx, ln)
		ch <- result{mem, r.Stats(), err}
	}()
	return ch
}

// wait bounds the wait for the receiver.
func wait(t testing.TB, ch <-chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(60 * time.Second):
		t.Fatal("receiver did not finish within 60s")
		return result{}
	}
}

func blockData(t testing.TB, mem core.Memory, name string) []byte {
	t.Helper()
	for _, b := range mem.Blocks() {
		if b.Name == name {
			return b.Data
		}
	}
	t.Fatalf("no block %q", name)
	return nil
}

// send moves the whole of img in one transfer and returns both ends' results.
func transfer(t testing.TB, tr transport, img []byte, cfg core.SenderConfig) (core.Stats, result) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ln, d := tr.listen(t)
	rc := receive(ctx, ln, core.ReceiverConfig{})
	s, err := core.NewSender(ctx, d, core.Blocks{{Name: "pc.ram", Data: img}}, cfg)
	if err != nil {
		wait(t, rc)
		t.Fatal(err)
	}
	if err := s.SendBlock("pc.ram"); err != nil {
		t.Error(err)
	}
	st, err := s.Close()
	if err != nil {
		t.Fatal(err)
	}
	return st, wait(t, rc)
}

func TestRoundTripSynthetic(t *testing.T) {
	img := pagegen.Image(8<<20, 4096, 1)
	for _, tr := range transports {
		for _, n := range []int{1, 4, 8} {
			t.Run(fmt.Sprintf("%s/%d", tr.name, n), func(t *testing.T) {
				st, res := transfer(t, tr, img, core.SenderConfig{Channels: n})
				if res.err != nil {
					t.Fatal(res.err)
				}
				if got := blockData(t, res.mem, "pc.ram"); !bytes.Equal(got, img) {
					t.Fatal("received image differs")
				}
				if st.NormalPages+st.ZeroPages != uint64(len(img)/4096) {
					t.Errorf("sender stats: %d+%d pages, want %d", st.NormalPages, st.ZeroPages, len(img)/4096)
				}
				if res.stats.NormalPages != st.NormalPages || res.stats.ZeroPages != st.ZeroPages || res.stats.WireBytes != st.WireBytes {
					t.Errorf("receiver stats %+v differ from sender's %+v", res.stats, st)
				}
				if st.ZeroPages == 0 {
					t.Error("no zero pages detected")
				}
			})
		}
	}
}
