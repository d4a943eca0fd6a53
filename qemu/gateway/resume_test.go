package gateway_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/pagewire/pagewire/channels/resume"
	"github.com/pagewire/pagewire/core"
	"github.com/pagewire/pagewire/qemu/gateway"
)

// TestResume: the link's connections are closed under the gateways at
// two sync points of a migration whose link runs on resume sessions,
// with delta pages; the migration completes with the source's RAM, and
// both ends count the reconnections.
func TestResume(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	m := newMigration(core.Dialect10, 5)
	dst, err := startDestination(ctx, m, 2, "none")
	if err != nil {
		t.Fatal(err)
	}
	cut := &cutDialer{}
	var d *resume.Dialer
	var l *resume.Listener
	link := method(t, "lz4")
	link.Channels, link.DeltaCache = 3, 8<<20
	in := &gateway.In{Source: gateway.SourceConfig{UUID: m.uuid}, LinkConfig: link}
	out := &gateway.Out{Dest: dst.Dialer}
	p, err := startPairLn(ctx, in, out,
		func(dl gateway.Dialer) gateway.Dialer {
			cut.d = dl
			d = resume.NewDialer(cut, resume.Config{Events: func(e resume.Event) { t.Logf("%v dialer %v %v", time.Now().Format("05.000"), e.Kind, e.Err) }})
			return d
		},
		func(ln net.Listener) net.Listener {
			l = resume.NewListener(ln, resume.Config{Events: func(e resume.Event) { t.Logf("%v listener %v %v", time.Now().Format("05.000"), e.Kind, e.Err) }})
			return l
		})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.play(ctx, p.Source, func(k int) {
		t.Logf("%v round %d", time.Now().Format("05.000"), k)
		if k == 1 || k == 3 {
			linkUp(t, d, 4)
			cut.Reset()
		}
	}); err != nil {
		t.Error("source:", err)
	}
	rin, rout := p.wait()
	if rin.err != nil || rout.err != nil {
		t.Fatalf("In: %v; Out: %v", rin.err, rout.err)
	}
	if err := dst.matches(m); err != nil {
		t.Fatal("destination:", err)
	}
	ds, ls := d.Stats(), l.Stats()
	if ds.Reconnects < 2 || ls.Reconnects != ds.Reconnects || ds.Failed+ls.Failed != 0 {
		t.Errorf("dialer %+v, listener %+v: want two rounds of reconnections on both, no failure", ds, ls)
	}
}

// TestResumeBudget: a link that stays cut past the retry budget fails
// both gateways, naming the link, within the budget and a few seconds;
// TestMain checks that no goroutine is left.
func TestResumeBudget(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	m := newMigration(core.Dialect10, 5)
	dst, err := startDestination(ctx, m, 2, "none")
	if err != nil {
		t.Fatal(err)
	}
	cut := &cutDialer{}
	var d *resume.Dialer
	cfg := resume.Config{Retry: time.Second, HandshakeTimeout: 300 * time.Millisecond}
	in := &gateway.In{Source: gateway.SourceConfig{UUID: m.uuid}, LinkConfig: core.SenderConfig{Channels: 2}}
	out := &gateway.Out{Dest: dst.Dialer}
	p, err := startPairLn(ctx, in, out,
		func(dl gateway.Dialer) gateway.Dialer { cut.d = dl; d = resume.NewDialer(cut, cfg); return d },
		func(ln net.Listener) net.Listener { return resume.NewListener(ln, cfg) })
	if err != nil {
		t.Fatal(err)
	}
	var rin, rout result
	var cutAt time.Time
	m.play(ctx, p.Source, func(k int) {
		switch k {
		case 1:
			linkUp(t, d, 3)
			cut.Cut()
			cutAt = time.Now()
		case 2:
			rin, rout = p.wait()
		}
	})
	if rin.err == nil && rout.err == nil {
		rin, rout = p.wait()
	}
	for name, err := range map[string]error{"In": rin.err, "Out": rout.err} {
		var le *gateway.LegError
		if !errors.As(err, &le) || le.Leg != gateway.LegLink || !errors.Is(err, resume.ErrRetryBudget) {
			t.Errorf("%s: %v; want a link LegError wrapping ErrRetryBudget", name, err)
		}
	}
	if el := time.Since(cutAt); el > cfg.Retry+10*time.Second {
		t.Errorf("the gateways failed %v after the cut", el)
	}
}

// linkUp waits until d has opened n sessions (the link's channels), so
// that what the test does to the link happens to an open one.
func linkUp(t *testing.T, d *resume.Dialer, n int64) {
	for end := time.Now().Add(10 * time.Second); d.Stats().Sessions < n; time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Errorf("the link did not open: %+v", d.Stats())
			return
		}
	}
}
