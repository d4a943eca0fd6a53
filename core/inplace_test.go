package core_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pagewire/pagewire/core"
	"github.com/pagewire/pagewire/sdk"
)

// inPlace is a copying method whose ends use their own buffers through
// core.InPlaceSender and core.InPlaceReceiver; with noBuffer its
// receivers decline every RecvBuffer.
type inPlace struct {
	noBuffer                 bool
	inPlace, buffered, recvs atomic.Int64
	bad                      atomic.Value // the first misuse seen
}

func (m *inPlace) Info() sdk.Info { return sdk.Info{Name: "inplace", Flag: 0x3c} }

func (m *inPlace) NewSender(int, sdk.Options) (sdk.Sender, error) {
	return &inPlaceCodec{m: m, buf: make([]byte, 0, 128*4096)}, nil
}

func (m *inPlace) NewReceiver(int, sdk.Options) (sdk.Receiver, error) {
	return &inPlaceCodec{m: m, buf: make([]byte, 128*4096)}, nil
}

type inPlaceCodec struct {
	m      *inPlace
	buf    []byte
	handed bool // RecvBuffer handed out buf for the coming Recv
}

func (c *inPlaceCodec) misuse(err error) error {
	c.m.bad.CompareAndSwap(nil, err)
	return err
}

func (c *inPlaceCodec) Prepare(*sdk.Packet, []byte) ([]byte, error) {
	return nil, c.misuse(errors.New("Prepare called on an InPlaceSender"))
}

func (c *inPlaceCodec) PrepareInPlace(p *sdk.Packet) ([]byte, error) {
	c.m.inPlace.Add(1)
	c.buf = c.buf[:0]
	for _, pg := range p.Pages {
		c.buf = append(c.buf, pg...)
	}
	return c.buf, nil
}

func (c *inPlaceCodec) RecvBuffer(n int) []byte {
	if c.m.noBuffer {
		return nil
	}
	c.handed = true
	return c.buf[:n]
}

func (c *inPlaceCodec) Recv(p *sdk.Packet, payload []byte) error {
	c.m.recvs.Add(1)
	own := len(payload) > 0 && &payload[0] == &c.buf[0]
	if own != c.handed {
		return c.misuse(fmt.Errorf("payload in the receiver's buffer: %v, handed out: %v", own, c.handed))
	}
	if own {
		c.m.buffered.Add(1)
	}
	c.handed = false
	return unpack(p, payload)
}

func (c *inPlaceCodec) Close() error { return nil }

// TestInPlace: the engine takes an InPlaceSender's payload from its own
// buffer and reads payloads into an InPlaceReceiver's buffer, or into its
// own when the receiver declines; the image arrives intact either way.
func TestInPlace(t *testing.T) {
	img := make([]byte, 8<<20)
	for i := range img {
		img[i] = byte(i>>12) ^ byte(i) | 1
	}
	for _, noBuffer := range []bool{false, true} {
		t.Run(fmt.Sprint("declined ", noBuffer), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			m := &inPlace{noBuffer: noBuffer}
			ln, d := tcpTransport(t)
			rc := receive(ctx, ln, core.ReceiverConfig{Method: m})
			s, err := core.NewSender(ctx, d, core.Blocks{{Name: "pc.ram", Data: img}}, core.SenderConfig{Channels: 2, Method: m})
			if err != nil {
				t.Fatal(err)
			}
			s.SendBlock("pc.ram")
			if _, err := s.Close(); err != nil {
				t.Fatal(err)
			}
			res := wait(t, rc)
			if res.err != nil {
				t.Fatal(res.err)
			}
			if bad := m.bad.Load(); bad != nil {
				t.Fatal(bad)
			}
			if !bytes.Equal(blockData(t, res.mem, "pc.ram"), img) {
				t.Fatal("image differs")
			}
			packets := int64(len(img) / (128 * 4096))
			want := packets
			if noBuffer {
				want = 0
			}
			if n, r, b := m.inPlace.Load(), m.recvs.Load(), m.buffered.Load(); n != packets || r != packets || b != want {
				t.Errorf("%d packets prepared in place, %d received, %d of them read in place; want %d, %d, %d", n, r, b, packets, packets, want)
			}
		})
	}
}
