package wasm_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pagewire/pagewire/core"
	"github.com/pagewire/pagewire/internal/pagegen"
	"github.com/pagewire/pagewire/internal/qemuvectors"
	"github.com/pagewire/pagewire/qemu"
	"github.com/pagewire/pagewire/sdk"
	"github.com/pagewire/pagewire/sdk/plugintest"
	"github.com/pagewire/pagewire/wasm"
)

// TestTier: modules that import pagewire.check and nothing from WASI run
// in the fast tier; Go's wasip1 modules and modules that do not import
// check (nothing could stop them) in the checked one unless trusted, and
// every module under Strict.
func TestTier(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  wasm.Config
		want wasm.Tier
	}{
		{"zstd-c", wasm.Config{}, wasm.TierFast},
		{"lz4-c", wasm.Config{}, wasm.TierFast},
		{"zstd-c", wasm.Config{Strict: true}, wasm.TierChecked},
		{"zstd", wasm.Config{}, wasm.TierChecked},
		{"zstd", wasm.Config{Trusted: true}, wasm.TierTrusted},
		{"rle-c", wasm.Config{}, wasm.TierFast},   // imports only pagewire.check
		{"deaf", wasm.Config{}, wasm.TierChecked}, // imports nothing
		{"deaf", wasm.Config{Strict: true}, wasm.TierChecked},
		{"deaf", wasm.Config{Trusted: true}, wasm.TierTrusted},
		{"hog", wasm.Config{}, wasm.TierChecked},
		{"zstd-c", wasm.Config{Trusted: true}, wasm.TierFast},
	} {
		m := load(t, c.name, c.cfg)
		in := m.Inspect()
		if m.Tier() != c.want || in.Tier != c.want {
			t.Errorf("%s %+v: tier %s (inspect %s), want %s", c.name, c.cfg, m.Tier(), in.Tier, c.want)
		}
		if c.name == "zstd-c" || c.name == "lz4-c" {
			if in.WASI || !slices.Equal(in.Imports, []string{"pagewire.check"}) {
				t.Errorf("%s imports %v", c.name, in.Imports)
			}
			if want := builtinMethod(t, strings.TrimSuffix(c.name, "-c")).Info(); m.Info() != want {
				t.Errorf("%s: info %+v, want %+v", c.name, m.Info(), want)
			}
		}
	}
}

// TestConformanceC runs the conformance kit against the C-built codecs.
func TestConformanceC(t *testing.T) {
	for _, name := range []string{"zstd-c", "lz4-c"} {
		t.Run(name, func(t *testing.T) {
			plugintest.Run(t, load(t, name, wasm.Config{}))
		})
	}
}

// TestZstdCFrames: the C-built zstd ends its frame at a packet boundary
// before the frame could outgrow its 2 MiB window (plugins/zstd-c/shim.c):
// with full packets of 512 KiB, every fourth; with shorter ones, once
// another full packet might not fit. The packet after starts a new frame
// (its magic number first), and the built-in receiver and the C-built
// one decode the run of frames packet by packet.
func TestZstdCFrames(t *testing.T) {
	pkts := packets(20)
	for i := 13; i < len(pkts); i++ {
		pkts[i] = pkts[i][:40+i] // shorter packets from the 14th on
	}
	o := sdk.Options{PageSize: 4096, PacketPages: 128}
	c := load(t, "zstd-c", wasm.Config{})
	snd, err := c.NewSender(0, o)
	if err != nil {
		t.Fatal(err)
	}
	defer snd.Close()
	if _, ok := snd.(core.InPlaceSender); !ok {
		t.Error("a Wasm sender is not a core.InPlaceSender")
	}
	var rcvs []sdk.Receiver
	for _, m := range []sdk.Method{builtinMethod(t, "zstd"), c} {
		r, err := m.NewReceiver(0, o)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		rcvs = append(rcvs, r)
	}
	if _, ok := rcvs[1].(core.InPlaceReceiver); !ok {
		t.Error("a Wasm receiver is not a core.InPlaceReceiver")
	}
	magic := []byte{0x28, 0xb5, 0x2f, 0xfd}
	dst := make([][]byte, 128)
	for j := range dst {
		dst[j] = make([]byte, 4096)
	}
	var payload []byte
	const window, full = 2 << 20, 128 * 4096
	frame := 0 // bytes in the current frame before this packet
	for i, p := range pkts {
		if payload, err = snd.Prepare(&sdk.Packet{Pages: p}, payload[:0]); err != nil {
			t.Fatal(err)
		}
		if got, want := bytes.HasPrefix(payload, magic), frame == 0; got != want {
			t.Errorf("packet %d: starts a frame: %v, want %v", i, got, want)
		}
		if frame += len(p) * 4096; frame+full > window {
			frame = 0
		}
		for k, r := range rcvs {
			if err := r.Recv(&sdk.Packet{Pages: dst[:len(p)]}, payload); err != nil {
				t.Fatalf("receiver %d, packet %d: %v", k, i, err)
			}
			for j := range p {
				if !bytes.Equal(dst[j], p[j]) {
					t.Fatalf("receiver %d, packet %d: page %d differs", k, i, j)
				}
			}
		}
	}
}

// TestQEMUVectorsC: the C-built zstd, as the receiver's method, rebuilds
// the RAM of every zstd migration captured from a real QEMU, page for
// page.
func TestQEMUVectorsC(t *testing.T) {
	m := load(t, "zstd-c", wasm.Config{})
	n := 0
	for _, set := range []struct{ env, name string }{{"PAGEWIRE_QEMU_VECTORS", "qemu-7.2"}, {"PAGEWIRE_QEMU10_VECTORS", "qemu-10.0"}} {
		cases := qemuvectors.Cases(t, set.env, set.name)
		for _, c := range cases {
			if c.Method != "zstd" {
				continue
			}
			n++
			t.Run(set.name+"/"+c.Name, func(t *testing.T) {
				if err := replayVector(c, m); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
	if n == 0 {
		t.Fatal("no zstd captures found")
	}
}

// replayVector replays a captured migration into a QEMU receiver using m
// and checks the RAM it rebuilt.
func replayVector(c qemuvectors.Case, m sdk.Method) error {
	streams, err := c.LoadAll()
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	q := qemu.NewReceiver(qemu.Config{Channels: c.Channels, Method: m})
	done := make(chan error, 1)
	var mem core.Memory
	go func() {
		var err error
		mem, err = q.Receive(ctx, ln)
		done <- err
	}()
	qemuvectors.Replay(ln.Addr().String(), streams) // the receiver's error is what counts
	if err := <-done; err != nil {
		return err
	}
	for _, b := range mem.Blocks() {
		if b.Name == "pc.ram" {
			return c.Check(b.Data)
		}
	}
	return errors.New("no pc.ram")
}

// TestDeaf: a module that imports nothing, not even pagewire.check, runs
// checked: its prepare and recv, which loop without a call to the host,
// are stopped at the deadline and when the context is cancelled.
func TestDeaf(t *testing.T) {
	m := load(t, "deaf", wasm.Config{CallTimeout: 200 * time.Millisecond})
	pkt := &sdk.Packet{Pages: [][]byte{make([]byte, 4096)}}
	s, err := m.NewSender(1, sdk.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Prepare(pkt, nil); err != nil {
		t.Fatalf("first packet: %v", err)
	}
	start := time.Now()
	_, err = s.Prepare(pkt, nil)
	if el := time.Since(start); !errors.Is(err, wasm.ErrDeadline) || el > 3*time.Second {
		t.Fatalf("second packet: %v after %v", err, el)
	}
	r, err := m.NewReceiver(2, sdk.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	start = time.Now()
	err = r.Recv(&sdk.Packet{Pages: [][]byte{make([]byte, 4096)}}, []byte{0})
	if el := time.Since(start); !errors.Is(err, wasm.ErrDeadline) ||
		!strings.Contains(err.Error(), "deaf.wasm, channel 2: pagewire_recv: no answer within 200ms") || el > 3*time.Second {
		t.Fatalf("recv: %v after %v", err, el)
	}
}

// TestWatchdog: a fast-tier call that spins past its deadline is stopped
// at its next pagewire.check; the channel fails naming module and
// channel, the instance is closed, and an engine transfer using the module
// fails cleanly with that error (TestMain checks for leaked goroutines).
func TestWatchdog(t *testing.T) {
	m := load(t, "spin", wasm.Config{CallTimeout: 200 * time.Millisecond})
	if m.Tier() != wasm.TierFast {
		t.Fatalf("spin runs in tier %s", m.Tier())
	}
	t.Run("call", func(t *testing.T) {
		s, err := m.NewSender(3, sdk.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if n := wasm.LiveInstances(m); n != 1 {
			t.Fatalf("%d live instances, want 1", n)
		}
		start := time.Now()
		_, err = s.Prepare(&sdk.Packet{Pages: [][]byte{make([]byte, 4096)}}, nil)
		el := time.Since(start)
		if !errors.Is(err, wasm.ErrDeadline) || !errors.Is(err, wasm.ErrPlugin) ||
			!strings.Contains(err.Error(), "spin.wasm, channel 3: pagewire_prepare: no answer within 200ms") {
			t.Fatalf("%v", err)
		}
		if el < 200*time.Millisecond || el > 3*time.Second {
			t.Errorf("stopped after %v, deadline 200ms", el)
		}
		if n := wasm.LiveInstances(m); n != 0 {
			t.Errorf("%d live instances after the watchdog fired, want 0", n)
		}
		if _, err := s.Prepare(&sdk.Packet{Pages: [][]byte{make([]byte, 4096)}}, nil); !errors.Is(err, wasm.ErrDeadline) {
			t.Errorf("a dead instance answered: %v", err)
		}
		s.Close()
	})
	t.Run("transfer", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		p := channelsPipe()
		img := pagegen.Image(1<<20, 4096, 5)
		done := make(chan error, 1)
		r := core.NewReceiver(core.ReceiverConfig{Method: m})
		go func() {
			_, err := r.Receive(ctx, p)
			done <- err
		}()
		s, err := core.NewSender(ctx, p, core.Blocks{{Name: "pc.ram", Data: img}}, core.SenderConfig{Channels: 2, Method: m})
		if err != nil {
			t.Fatal(err)
		}
		err = s.SendBlock("pc.ram")
		if _, cerr := s.Close(); err == nil {
			err = cerr
		}
		// (the engine wraps a method's error as text: match the words)
		if err == nil || !strings.Contains(err.Error(), "spin.wasm, channel ") || !strings.Contains(err.Error(), "no answer within 200ms") {
			t.Errorf("sender: %v", err)
		}
		select {
		case rerr := <-done:
			if rerr == nil {
				t.Error("the receiver finished a transfer whose sender failed")
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the receiver did not stop within 30s of the sender's failure")
		}
		if n := wasm.LiveInstances(m); n != 0 {
			t.Errorf("%d live instances after the transfer, want 0", n)
		}
	})
}

// FuzzRecvC feeds the C-built decoders hostile payloads: each must decode
// or fail with sdk.ErrCorrupt, never trap, run away or break the ABI.
func FuzzRecvC(f *testing.F) {
	o := sdk.Options{PageSize: 4096, PacketPages: 128}
	names := []string{"zstd-c", "lz4-c"}
	mods := make([]*wasm.Module, len(names))
	for i, name := range names {
		mods[i] = load(f, name, wasm.Config{CallTimeout: 5 * time.Second})
		// Seeds: the first packets of a real stream, whole and cut short.
		snd, err := mods[i].NewSender(0, o)
		if err != nil {
			f.Fatal(err)
		}
		for _, p := range packets(2) {
			payload, err := snd.Prepare(&sdk.Packet{Pages: p[:3]}, nil)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(payload, uint8(3))
			f.Add(payload[:len(payload)/2], uint8(3))
			f.Add(payload, uint8(2))
		}
		snd.Close()
	}
	f.Add([]byte("\x28\xb5\x2f\xfd"), uint8(1))
	dst := make([][]byte, 4)
	for i := range dst {
		dst[i] = make([]byte, 4096)
	}
	f.Fuzz(func(t *testing.T, payload []byte, n uint8) {
		pages := dst[:1+n%4]
		for i, m := range mods {
			r, err := m.NewReceiver(0, o)
			if err != nil {
				t.Fatal(err)
			}
			err = r.Recv(&sdk.Packet{Pages: pages}, payload)
			if err != nil && (!errors.Is(err, sdk.ErrCorrupt) || errors.Is(err, wasm.ErrPlugin)) {
				t.Errorf("%s: %v", names[i], err)
			}
			r.Close()
		}
	})
}
