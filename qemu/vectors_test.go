package qemu_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pagewire/pagewire/core"
	"github.com/pagewire/pagewire/internal/methodtest"
	"github.com/pagewire/pagewire/internal/qemuvectors"
	"github.com/pagewire/pagewire/qemu"
)

// TestQEMU72Vectors rebuilds pc.ram from every migration captured from a
// real QEMU 7.2 and checks every page against the source's final RAM.
func TestQEMU72Vectors(t *testing.T) {
	testVectors(t, "PAGEWIRE_QEMU_VECTORS", "qemu-7.2", qemu.Dialect72)
}

// TestQEMU10Vectors does the same for QEMU 10.0.13 captures: zero pages in
// packets, MULTIFD_FLUSH sync points, SWITCHOVER_START.
func TestQEMU10Vectors(t *testing.T) {
	testVectors(t, "PAGEWIRE_QEMU10_VECTORS", "qemu-10.0", qemu.Dialect10)
}

// TestQEMUDialectInsisted: a receiver told the dialect refuses a stream
// of the other one, at its first sync marker.
func TestQEMUDialectInsisted(t *testing.T) {
	for _, c := range []struct {
		env, set string
		insist   qemu.Dialect
		msg      string
	}{
		{"PAGEWIRE_QEMU10_VECTORS", "qemu-10.0", qemu.Dialect72, "RAM_SAVE_FLAG_MULTIFD_FLUSH: not the QEMU 7.2 dialect"},
		{"PAGEWIRE_QEMU_VECTORS", "qemu-7.2", qemu.Dialect10, "RAM_SAVE_FLAG_EOS before any MULTIFD_FLUSH: not the QEMU 10.0 dialect"},
	} {
		t.Run(c.set, func(t *testing.T) {
			cases := qemuvectors.Cases(t, c.env, c.set)
			_, err := replayCase(t, cases[0], c.insist)
			if !errors.Is(err, qemu.ErrBadStream) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("%v, want ErrBadStream: %s", err, c.msg)
			}
		})
	}
}

// replayCase runs a QEMUReceiver on loopback and replays the case into it.
func replayCase(t *testing.T, c qemuvectors.Case, dialect qemu.Dialect) (*qemu.Receiver, error) {
	return replayWith(t, c, dialect, false)
}

// replayWith replays the case into a receiver that is told the method,
// or detects it.
func replayWith(t *testing.T, c qemuvectors.Case, dialect qemu.Dialect, detect bool) (*qemu.Receiver, error) {
	t.Helper()
	streams, err := c.LoadAll()
	if err != nil {
		t.Fatal(err)
	}
	m, err := qemu.Methods().Lookup(c.Method)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tm := &methodtest.Tracked{Method: m, FailCh: -1}
	defer func() {
		if n := tm.Open.Load(); n != 0 {
			t.Errorf("%d receiving ends left open", n)
		}
	}()
	cfg := qemu.Config{Channels: c.Channels, Method: tm, Dialect: dialect}
	if detect {
		cfg.Method = nil
	}
	q := qemu.NewReceiver(cfg)
	done := make(chan error, 1)
	var mem core.Memory
	go func() {
		var err error
		mem, err = q.Receive(ctx, ln)
		done <- err
	}()
	// A receiver that refuses the stream stops reading it: write errors
	// are expected then, and its own error below is what the test checks.
	qemuvectors.Replay(ln.Addr().String(), streams)
	err = <-done
	if err != nil {
		return q, err
	}
	var ram []byte
	for _, b := range mem.Blocks() {
		if b.Name == "pc.ram" {
			ram = b.Data
		}
	}
	return q, c.Check(ram)
}

func testVectors(t *testing.T, env, set string, want qemu.Dialect) {
	cases := qemuvectors.Cases(t, env, set)
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			q, err := replayCase(t, c, "")
			if err != nil {
				t.Fatal(err)
			}
			st := q.Stats()
			if st.Dialect != string(want) {
				t.Errorf("dialect %q, want %q", st.Dialect, want)
			}
			t.Logf("%s: %d pages on %d channels, %d zero pages on main, %d sync points, %d device bytes, machine %s",
				c.Name, st.NormalPages, len(st.Channels), st.MainZeroPages, st.SyncPoints, st.DeviceBytes, st.Machine)
		})
	}
}

// TestQEMUVectorsDetect replays every capture of both QEMUs into a
// receiver that is not told the method: the first packet with pages
// names it, and RAM comes out right.
func TestQEMUVectorsDetect(t *testing.T) {
	for _, set := range []struct{ env, name string }{{"PAGEWIRE_QEMU_VECTORS", "qemu-7.2"}, {"PAGEWIRE_QEMU10_VECTORS", "qemu-10.0"}} {
		for _, c := range qemuvectors.Cases(t, set.env, set.name) {
			t.Run(set.name+"/"+c.Name, func(t *testing.T) {
				q, err := replayWith(t, c, "", true)
				if err != nil {
					t.Fatal(err)
				}
				want := c.Method
				if want == "none" {
					want = "nocomp"
				}
				if got := q.Stats().Method; got != want {
					t.Errorf("detected %q, want %q", got, want)
				}
			})
		}
	}
}
