package core_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/pagewire/pagewire/core"
	"github.com/pagewire/pagewire/internal/methodtest"
	"github.com/pagewire/pagewire/sdk"
)

// flaky is a copying method that fails on one side at one packet.
type flaky struct {
	sendFailAt, recvFailAt uint64 // packet of channel 0 to fail at; 0 never
	badSize                bool   // the sender's payload is one byte short
}

func (f flaky) Info() sdk.Info { return sdk.Info{Name: "flaky", Flag: 0x3e} }

func (f flaky) NewSender(ch int, _ sdk.Options) (sdk.Sender, error) {
	return &flakyCodec{f: f, ch: ch}, nil
}

func (f flaky) NewReceiver(ch int, _ sdk.Options) (sdk.Receiver, error) {
	return &flakyCodec{f: f, ch: ch}, nil
}

type flakyCodec struct {
	f  flaky
	ch int
}

func (c *flakyCodec) Prepare(p *sdk.Packet, dst []byte) ([]byte, error) {
	if c.ch == 0 && p.Seq == c.f.sendFailAt {
		return nil, errors.New("boom on send")
	}
	for _, pg := range p.Pages {
		dst = append(dst, pg...)
	}
	if c.f.badSize {
		dst = dst[:len(dst)-1]
	}
	return dst, nil
}

func (c *flakyCodec) Recv(p *sdk.Packet, payload []byte) error {
	if c.ch == 0 && p.Seq == c.f.recvFailAt {
		return errors.New("boom on recv")
	}
	return unpack(p, payload)
}

// unpack copies a copying method's payload to the packet's pages.
func unpack(p *sdk.Packet, payload []byte) error {
	if len(payload) != len(p.Pages)*4096 {
		return fmt.Errorf("%w: %d bytes for %d pages", sdk.ErrCorrupt, len(payload), len(p.Pages))
	}
	for _, pg := range p.Pages {
		payload = payload[copy(pg, payload):]
	}
	return nil
}

func (c *flakyCodec) Close() error { return nil }

// TestMethodFailure: a method error on either side fails both ends
// promptly, names the channel and packet on the failing side, and reports
// the failing side's reason on the other.
func TestMethodFailure(t *testing.T) {
	img := make([]byte, 16<<20)
	for i := range img {
		img[i] = byte(i>>12) | 1
	}
	cases := []struct {
		name     string
		m        flaky
		sendSide bool // the failure is the sender's own
		want     string
	}{
		{"prepare", flaky{sendFailAt: 3}, true, "channel 0, packet 3: method failed: flaky prepare: boom on send"},
		{"recv", flaky{recvFailAt: 2}, false, "channel 0, packet 2: method failed: flaky: boom on recv"},
		{"short payload", flaky{badSize: true}, false, "corrupt payload: 524287 bytes for 128 pages"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			ln, d := tcpTransport(t)
			rc := receive(ctx, ln, core.ReceiverConfig{Method: c.m})
			s, err := core.NewSender(ctx, d, core.Blocks{{Name: "pc.ram", Data: img}}, core.SenderConfig{Channels: 2, Method: c.m})
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			s.SendBlock("pc.ram")
			_, serr := s.Close() // the transfer's most telling error
			res := wait(t, rc)
			if el := time.Since(start); el > 5*time.Second {
				t.Errorf("both ends took %v to stop", el)
			}
			own, other := serr, res.err
			if !c.sendSide {
				own, other = res.err, serr
			}
			var ce *core.ChannelError
			if !errors.As(own, &ce) || !errors.Is(own, core.ErrMethod) {
				t.Fatalf("failing side: %v, want a ChannelError wrapping ErrMethod", own)
			}
			if !contains(own.Error(), c.want) {
				t.Errorf("failing side: %q, want it to contain %q", own, c.want)
			}
			var re *core.RemoteError
			if !errors.As(other, &re) || !contains(re.Msg, c.want) {
				t.Errorf("other side: %v, want the peer's reason %q", other, c.want)
			}
		})
	}
}

// TestReceiverSetup: the receiver sets up the method for every channel
// before it accepts the transfer, so a setup failure reaches the sender
// when it opens the transfer, naming the channel; every receiving end it
// set up is closed, whether the transfer ran or not.
func TestReceiverSetup(t *testing.T) {
	img := make([]byte, 4<<20)
	for i := range img {
		img[i] = byte(i>>12) | 1
	}
	for _, failCh := range []int{-1, 1} {
		t.Run(fmt.Sprint("fail channel ", failCh), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			m := &methodtest.Tracked{Method: flaky{}, FailCh: failCh}
			ln, d := tcpTransport(t)
			rc := receive(ctx, ln, core.ReceiverConfig{Method: m})
			s, err := core.NewSender(ctx, d, core.Blocks{{Name: "pc.ram", Data: img}}, core.SenderConfig{Channels: 3, Method: m})
			if failCh < 0 {
				if err != nil {
					t.Fatal(err)
				}
				if n := m.Created.Load(); n != 3 {
					t.Errorf("%d receiving ends set up when the transfer was accepted, want 3", n)
				}
				s.SendBlock("pc.ram")
				if _, err := s.Close(); err != nil {
					t.Fatal(err)
				}
				if res := wait(t, rc); res.err != nil {
					t.Fatal(res.err)
				}
			} else {
				const want = "channel 1, handshake: method failed: flaky recv setup: no room for another"
				var re *core.RemoteError
				if !errors.As(err, &re) || !contains(re.Msg, want) {
					t.Errorf("sender: %v, want the receiver's %q", err, want)
				}
				res := wait(t, rc)
				var ce *core.ChannelError
				if !errors.As(res.err, &ce) || ce.Channel != 1 || !errors.Is(res.err, core.ErrMethod) || !contains(res.err.Error(), want) {
					t.Errorf("receiver: %v, want a ChannelError of channel 1 wrapping ErrMethod: %q", res.err, want)
				}
			}
			if n := m.Open.Load(); n != 0 {
				t.Errorf("%d receiving ends left open", n)
			}
		})
	}
}

func contains(s, sub string) bool {
	return len(sub) == 0 || len(s) >= len(sub) && (s == sub || indexOf(s, sub) >= 0)
}

func indexOf(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}
