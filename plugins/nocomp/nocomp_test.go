package nocomp_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/pagewire/pagewire/plugins/nocomp"
	"github.com/pagewire/pagewire/sdk"
)

func TestPrepareRecv(t *testing.T) {
	m := nocomp.New()
	if info := m.Info(); info.Name != "nocomp" || info.Flag != 0 || !info.Raw || info.Check() != nil {
		t.Fatalf("info %+v", info)
	}
	o := sdk.Options{PageSize: 4096, PacketPages: 128}
	snd, _ := m.NewSender(0, o)
	rcv, _ := m.NewReceiver(0, o)
	src := [][]byte{bytes.Repeat([]byte{1}, 4096), bytes.Repeat([]byte{2}, 4096)}
	payload, err := snd.Prepare(&sdk.Packet{Pages: src}, nil)
	if err != nil || len(payload) != 8192 {
		t.Fatalf("Prepare: %d bytes, %v", len(payload), err)
	}
	dst := [][]byte{make([]byte, 4096), make([]byte, 4096)}
	if err := rcv.Recv(&sdk.Packet{Pages: dst}, payload); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dst[0], src[0]) || !bytes.Equal(dst[1], src[1]) {
		t.Fatal("pages differ")
	}
	if err := rcv.Recv(&sdk.Packet{Pages: dst}, payload[1:]); !errors.Is(err, sdk.ErrCorrupt) {
		t.Errorf("short payload: %v, want ErrCorrupt", err)
	}
	allocs := testing.AllocsPerRun(100, func() { payload, _ = snd.Prepare(&sdk.Packet{Pages: src}, payload[:0]) })
	if allocs != 0 {
		t.Errorf("Prepare allocates %v times per packet", allocs)
	}
}
