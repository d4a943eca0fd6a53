package gateway_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pagewire/pagewire/core"
	"github.com/pagewire/pagewire/plugins/builtin"
	"github.com/pagewire/pagewire/qemu/gateway"
)

// timeout bounds every test's migration.
const timeout = 30 * time.Second

func method(t *testing.T, name string) core.SenderConfig {
	t.Helper()
	m, err := builtin.Methods().Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	return core.SenderConfig{Method: m}
}

// TestForward migrates a source through an In and an Out to a
// destination, in both dialects, over rounds that rewrite pages between
// sync points: the destination's RAM is the source's, its main stream
// is the source's byte for byte, and both gateways report the link. In
// the 10.0 run the In knows when the source stopped (In.Stopped), and
// the Out has that time at the end (Out.SourceStopped); in the 7.2 run
// it does not, and the Out says zero.
func TestForward(t *testing.T) {
	for _, d := range []core.Dialect{core.Dialect72, core.Dialect10} {
		t.Run(string(d), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			m := newMigration(d, 5)
			dst, err := startDestination(ctx, m, 3, "zlib")
			if err != nil {
				t.Fatal(err)
			}
			link := method(t, "zstd")
			link.Channels = 4
			destCfg := method(t, "zlib")
			destCfg.Channels = 3
			in := &gateway.In{Source: gateway.SourceConfig{UUID: m.uuid}, LinkConfig: link}
			stop := time.Unix(1700000000, 123456000)
			if d == core.Dialect10 {
				in.Stopped = func() time.Time { return stop }
			}
			out := &gateway.Out{Dest: dst.Dialer, DestConfig: destCfg}
			p, err := startPair(ctx, in, out, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := m.play(ctx, p.Source, nil); err != nil {
				t.Error("source:", err)
			}
			rin, rout := p.wait()
			if rin.err != nil || rout.err != nil {
				t.Fatalf("In: %v; Out: %v", rin.err, rout.err)
			}
			if err := dst.matches(m); err != nil {
				t.Fatal("destination:", err)
			}
			for name, st := range map[string]core.Stats{"In.Run": rin.st, "Out.Run": rout.st, "In.Stats": in.Stats(), "Out.Stats": out.Stats()} {
				if len(st.Channels) != 4 || st.Method != "zstd" || st.NormalPages == 0 {
					t.Errorf("%s: %d channels, method %s, %d pages", name, len(st.Channels), st.Method, st.NormalPages)
				}
			}
			if in.QEMUDialect() != d || out.QEMUDialect() != d {
				t.Errorf("QEMUDialect: In %q, Out %q, want %q", in.QEMUDialect(), out.QEMUDialect(), d)
			}
			if in.RAMBytes() != m.ramBytes() || out.RAMBytes() != m.ramBytes() {
				t.Errorf("RAMBytes: In %d, Out %d, want %d", in.RAMBytes(), out.RAMBytes(), m.ramBytes())
			}
			if got := out.SourceStopped(); d == core.Dialect10 && !got.Equal(stop) || d == core.Dialect72 && !got.IsZero() {
				t.Errorf("SourceStopped: %v", got)
			}
		})
	}
}

// TestSourceMethodDetected: an In that is not told the source's method
// (nil, as 'qemu gateway-in' without --qemu-method) takes it from the
// first packet with pages, and refuses a packet of a method QEMU does
// not have.
func TestSourceMethodDetected(t *testing.T) {
	for _, c := range []struct {
		method string
		fails  bool
	}{{"zstd", false}, {"zlib", false}, {"nocomp", false}, {"lz4", true}} {
		t.Run(c.method, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			m := newMigration(core.Dialect10, 3)
			m.method = method(t, c.method).Method
			dst, err := startDestination(ctx, m, 2, "nocomp")
			if err != nil {
				t.Fatal(err)
			}
			in := &gateway.In{Source: gateway.SourceConfig{UUID: m.uuid}, LinkConfig: core.SenderConfig{Channels: 2}}
			out := &gateway.Out{Dest: dst.Dialer}
			p, err := startPair(ctx, in, out, nil)
			if err != nil {
				t.Fatal(err)
			}
			serr := m.play(ctx, p.Source, nil)
			rin, rout := p.wait()
			if c.fails {
				if !errors.Is(rin.err, core.ErrMethodMismatch) || !strings.Contains(rin.err.Error(), "packet flags 0x3c name no method") {
					t.Errorf("In: %v, want a method QEMU does not have", rin.err)
				}
				if serr == nil || rout.err == nil {
					t.Errorf("source: %v; Out: %v; want both failed", serr, rout.err)
				}
				dst.wait()
				return
			}
			if serr != nil || rin.err != nil || rout.err != nil {
				t.Fatalf("source: %v; In: %v; Out: %v", serr, rin.err, rout.err)
			}
			if err := dst.matches(m); err != nil {
				t.Fatal("destination:", err)
			}
		})
	}
}

// legOf returns err's leg, failing t if err is no *LegError.
func legOf(t *testing.T, who string, err error) gateway.Leg {
	t.Helper()
	var le *gateway.LegError
	if !errors.As(err, &le) {
		t.Fatalf("%s: %v (%T), want a *gateway.LegError", who, err, err)
	}
	if !strings.HasPrefix(err.Error(), string(le.Leg)+": ") {
		t.Errorf("%s: %q does not start with its leg %q", who, err, le.Leg)
	}
	return le.Leg
}

// TestFailingLeg cuts one leg in the middle of a migration, after the
// source's second round: the In and the Out both fail with a *LegError
// that names the leg each saw fail, the source and the destination fail,
// and every Run returns.
func TestFailingLeg(t *testing.T) {
	for _, c := range []struct {
		name    string
		cut     gateway.Leg // the leg whose connections close
		in, out gateway.Leg // what In.Run and Out.Run report
	}{
		// The destination hangs up: the Out sees it, the In sees the
		// link fail (usually with the Out's reason).
		{"destination", gateway.LegDestination, gateway.LegLink, gateway.LegDestination},
		{"link", gateway.LegLink, gateway.LegLink, gateway.LegLink},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			m := newMigration(core.Dialect10, 6)
			dst, err := startDestination(ctx, m, 2, "nocomp")
			if err != nil {
				t.Fatal(err)
			}
			cut := &cutDialer{}
			in := &gateway.In{Source: gateway.SourceConfig{UUID: m.uuid}, LinkConfig: core.SenderConfig{Channels: 2}}
			// A link cut before it opened leaves the Out waiting for it:
			// it gives up well within the test's bound.
			out := &gateway.Out{Dest: dst.Dialer, Link: gateway.LinkConfig{HandshakeTimeout: 5 * time.Second}}
			var wrap func(gateway.Dialer) gateway.Dialer
			if c.cut == gateway.LegDestination {
				cut.d, out.Dest = dst.Dialer, cut
			} else {
				wrap = func(d gateway.Dialer) gateway.Dialer { cut.d = d; return cut }
			}
			p, err := startPair(ctx, in, out, wrap)
			if err != nil {
				t.Fatal(err)
			}
			// The source's next round makes the gateways write on the
			// cut leg (a leg with nothing to write notices nothing); the
			// source goes on once both have failed, so it finds its
			// connections closed.
			var rin, rout result
			waited := false
			err = m.play(ctx, p.Source, func(k int) {
				switch k {
				case 1:
					cut.Cut()
				case 2:
					rin, rout = p.wait()
					waited = true
				}
			})
			if err == nil {
				t.Error("the source completed")
			}
			if !waited {
				rin, rout = p.wait()
			}
			t.Logf("In: %v\nOut: %v\nsource: %v", rin.err, rout.err, err)
			if leg := legOf(t, "In", rin.err); leg != c.in {
				t.Errorf("In: %v, want leg %s", rin.err, c.in)
			}
			if leg := legOf(t, "Out", rout.err); leg != c.out {
				t.Errorf("Out: %v, want leg %s", rout.err, c.out)
			}
			if _, err := dst.wait(); err == nil {
				t.Error("the destination completed")
			}
			if ctx.Err() != nil {
				t.Error("the chain failed only at the test's timeout")
			}
		})
	}
}
