package gpproto

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/pagewire/pagewire/sdk"
)

// echo is a method whose sender copies the pages and whose receiver
// copies the payload back into them; it lets the fuzzers drive serve.
type echo struct{}

func (echo) Info() sdk.Info { return sdk.Info{Name: "echo", Flag: 0x7f} }
func (echo) NewSender(int, sdk.Options) (sdk.Sender, error) {
	return echoSender{}, nil
}
func (echo) NewReceiver(int, sdk.Options) (sdk.Receiver, error) {
	return echoReceiver{}, nil
}

type echoSender struct{}

func (echoSender) Prepare(p *sdk.Packet, dst []byte) ([]byte, error) {
	for _, pg := range p.Pages {
		dst = append(dst, pg...)
	}
	return dst, nil
}
func (echoSender) Close() error { return nil }

type echoReceiver struct{}

func (echoReceiver) Recv(p *sdk.Packet, payload []byte) error {
	for _, pg := range p.Pages {
		if len(payload) < len(pg) {
			return sdk.ErrCorrupt
		}
		payload = payload[copy(pg, payload):]
	}
	return nil
}
func (echoReceiver) Close() error { return nil }

// FuzzPlaneResponse: any bytes as a data-plane response decode to a
// bounded result or an error, never a panic.
func FuzzPlaneResponse(f *testing.F) {
	ok := make([]byte, PlaneResponseSize)
	f.Add(ok)
	f.Add(append(bytes.Clone(ok), "text"...))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		code, _, text, err := PlaneResponse(b)
		if err == nil && (code > PlaneFailed || len(text) > PlaneMaxText) {
			t.Fatalf("accepted code %d, text of %d bytes", code, len(text))
		}
	})
}

// FuzzPlaneServe: any request on a channel's data plane, with any
// bytes in the region's first half (pages, payload or page offsets), gets
// a response of bounded size and never a panic, and a valid one
// round-trips.
func FuzzPlaneServe(f *testing.F) {
	req := make([]byte, PlaneRequestSize)
	PutPlaneRequest(req, PlanePrepare, 3, 1, 0)
	f.Add(req, []byte{}, true)
	PutPlaneRequest(req, PlaneRecv, 128, 2, 128*4096)
	f.Add(req, []byte{}, false)
	PutPlaneRequest(req, PlanePrepareShared, 2, 3, 1)
	offs := make([]byte, 16)
	binary.LittleEndian.PutUint64(offs[8:], 4*4096)
	f.Add(req, offs, true)
	f.Add([]byte{1}, []byte{}, true)
	half := PlaneHalf(128, 4096)
	shm := make([]byte, 2*half)
	shared := make([]byte, 5*4096) // mapping 1
	f.Fuzz(func(t *testing.T, req, in []byte, send bool) {
		clear(shm)
		copy(shm[:half], in)
		c := &channel{opts: sdk.Options{PageSize: 4096, PacketPages: 128}, shm: shm, half: half,
			maps: map[uint64][]byte{1: shared}}
		c.packet.Pages = make([][]byte, 0, 128)
		if send {
			c.snd = echoSender{}
		} else {
			c.rcv = echoReceiver{}
		}
		resp := c.serve(req, -1, make([]byte, PlaneResponseSize+PlaneMaxText))
		code, n, text, err := PlaneResponse(resp)
		if err != nil {
			t.Fatalf("serve answered something PlaneResponse refuses: %v", err)
		}
		if strings.HasPrefix(text, "panic:") {
			t.Fatalf("serve recovered from a panic: %s", text)
		}
		if code == PlaneOK && n > uint64(half) {
			t.Fatalf("payload of %d bytes in a half of %d", n, half)
		}
		if len(req) == PlaneRequestSize && code == PlaneOK && send && binary.LittleEndian.Uint32(req) == PlanePrepare {
			np := int(binary.LittleEndian.Uint32(req[4:]))
			if n != uint64(np*4096) || !bytes.Equal(shm[half:half+int(n)], shm[:n]) {
				t.Fatalf("echo of %d pages gave %d bytes", np, n)
			}
		}
	})
}
