package vmbus_test

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/pagewire/pagewire/vmbus"
)

// allMessages has one of each message pagewire speaks.
func allMessages() []vmbus.Message {
	pfns := make([]uint64, 26)
	for i := range pfns {
		pfns[i] = uint64(i)
	}
	return []vmbus.Message{
		vmbus.Initiate{Version: vmbus.VersionV5_3, TargetVCPU: 3, InterruptPage: 2, MonitorPage1: 7, MonitorPage2: 9},
		vmbus.VersionResponse{Supported: true, State: 1, ConnID: 4},
		vmbus.Offer{IfType: ifType, IfInstance: ifInstance, Flags: 0x10, MMIOMegabytes: 2, SubChannelIndex: 5,
			Relid: 2047, MonitorID: 33, MonitorAllocated: true, Dedicated: true, ConnectionID: 77},
		vmbus.RelidMsg{Kind: vmbus.MsgRescindOffer, Relid: 1},
		vmbus.RelidMsg{Kind: vmbus.MsgCloseChannel, Relid: 2},
		vmbus.RelidMsg{Kind: vmbus.MsgRelidReleased, Relid: 3},
		vmbus.BareMsg{Kind: vmbus.MsgRequestOffers},
		vmbus.BareMsg{Kind: vmbus.MsgAllOffersDelivered},
		vmbus.BareMsg{Kind: vmbus.MsgUnload},
		vmbus.BareMsg{Kind: vmbus.MsgUnloadResponse},
		vmbus.OpenChannel{Relid: 5, OpenID: 5, GPADL: vmbus.FirstGPADL, TargetVP: 1, DownstreamOffset: 257},
		vmbus.OpenResult{Relid: 5, OpenID: 5, Status: 0},
		vmbus.GPADLHeader{Relid: 5, GPADL: vmbus.FirstGPADL, ByteCount: 40 * 4096, Pages: 40, PFNs: pfns},
		vmbus.GPADLHeader{Relid: 5, GPADL: vmbus.FirstGPADL, ByteCount: 3 * 4096, Pages: 3, PFNs: pfns[:3]},
		vmbus.GPADLBody{MsgNumber: 0, GPADL: vmbus.FirstGPADL, PFNs: make([]uint64, 28)},
		vmbus.GPADLCreated{Relid: 5, GPADL: vmbus.FirstGPADL + 1, Status: 0},
		vmbus.GPADLTeardown{Relid: 5, GPADL: vmbus.FirstGPADL},
		vmbus.GPADLTorndown{GPADL: vmbus.FirstGPADL},
	}
}

// Sizes of spec 3.2 (and DPDK's rte_vmbus_reg.h).
var wantSize = map[vmbus.MsgType]int{
	vmbus.MsgInitiateContact: 40, vmbus.MsgVersionResponse: 16, vmbus.MsgOfferChannel: 196,
	vmbus.MsgOpenChannel: 148, vmbus.MsgOpenResult: 20, vmbus.MsgCloseChannel: 12,
	vmbus.MsgGPADLCreated: 20, vmbus.MsgGPADLTeardown: 16, vmbus.MsgGPADLTorndown: 12,
	vmbus.MsgRescindOffer: 12, vmbus.MsgRelidReleased: 12, vmbus.MsgRequestOffers: 8,
}

func TestMessageRoundTrip(t *testing.T) {
	for _, m := range allMessages() {
		b, err := vmbus.MarshalMessage(m)
		if err != nil {
			t.Fatalf("%v: %v", m.Type(), err)
		}
		if n, ok := wantSize[m.Type()]; ok && len(b) != n {
			t.Errorf("%v: %d bytes, want %d", m.Type(), len(b), n)
		}
		if len(b) > vmbus.MaxMessageSize {
			t.Errorf("%v: %d bytes", m.Type(), len(b))
		}
		got, err := vmbus.ParseMessage(b)
		if err != nil {
			t.Fatalf("%v: %v", m.Type(), err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Errorf("%v: got %+v, want %+v", m.Type(), got, m)
		}
	}
}

// TestMessageLayout pins a few offsets of spec 3.2.
func TestMessageLayout(t *testing.T) {
	b, _ := vmbus.MarshalMessage(vmbus.Offer{Relid: 0x0102, ConnectionID: 0x0a0b, SubChannelIndex: 7})
	if b[0] != 1 || b[184] != 2 || b[185] != 1 || b[192] != 0x0b || b[180] != 7 {
		t.Errorf("offer layout % x", b)
	}
	b, _ = vmbus.MarshalMessage(vmbus.OpenChannel{Relid: 9, DownstreamOffset: 0x101})
	if b[0] != 5 || b[8] != 9 || b[24] != 1 || b[25] != 1 {
		t.Errorf("open layout % x", b[:32])
	}
	b, _ = vmbus.MarshalMessage(vmbus.GPADLHeader{Relid: 1, GPADL: 2, ByteCount: 8192, Pages: 2, PFNs: []uint64{0, 1}})
	if len(b) != 44 || b[16] != 24 || b[18] != 1 {
		t.Errorf("gpadl header layout % x", b)
	}
}

func TestParseMessageRejects(t *testing.T) {
	good := func(m vmbus.Message) []byte { b, _ := vmbus.MarshalMessage(m); return b }
	put := func(b []byte, off int, v uint32) []byte {
		b = append([]byte(nil), b...)
		b[off], b[off+1], b[off+2], b[off+3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
		return b
	}
	hdr := good(vmbus.GPADLHeader{Relid: 1, GPADL: 2, ByteCount: 8192, Pages: 2, PFNs: []uint64{0, 1}})
	cases := []struct {
		name, field string
		b           []byte
	}{
		{"empty", "length", nil},
		{"short header", "length", []byte{1, 0, 0}},
		{"too long", "length", make([]byte, 241)},
		{"invalid type", "msgtype", make([]byte, 8)},
		{"unknown type", "msgtype", put(make([]byte, 16), 0, 22)},
		{"type out of range", "msgtype", put(make([]byte, 16), 0, 1000)},
		{"short offer", "length", good(vmbus.Offer{Relid: 1})[:195]},
		{"long open result", "length", append(good(vmbus.OpenResult{Relid: 1}), 0)},
		{"relid 0", "child_relid", good(vmbus.RelidMsg{Kind: vmbus.MsgCloseChannel, Relid: 0})},
		{"relid 2048", "child_relid", good(vmbus.Offer{Relid: 2048})},
		{"huge relid", "child_relid", put(good(vmbus.OpenChannel{Relid: 1}), 8, 0xffffffff)},
		{"gpadl two ranges", "rangecount", put(hdr, 16, 24|2<<16)},
		{"gpadl buflen 8", "range_buflen", put(hdr, 16, 8|1<<16)},
		{"gpadl odd buflen", "range_buflen", put(hdr, 16, 25|1<<16)},
		{"gpadl more pfns than range", "length", put(hdr, 16, 16|1<<16)},
		{"gpadl fewer pfns, not full", "length", put(hdr, 16, 40|1<<16)},
		{"gpadl ragged", "length", hdr[:40]},
		{"body ragged", "length", good(vmbus.GPADLBody{PFNs: []uint64{1}})[:20]},
	}
	for _, c := range cases {
		_, err := vmbus.ParseMessage(c.b)
		var me *vmbus.MessageError
		if !errors.As(err, &me) || !errors.Is(err, vmbus.ErrBadMessage) || me.Field != c.field {
			t.Errorf("%s: got %v, want a MessageError on %s", c.name, err, c.field)
		}
	}
}

func FuzzParseMessage(f *testing.F) {
	for _, m := range allMessages() {
		b, _ := vmbus.MarshalMessage(m)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := vmbus.ParseMessage(b)
		if err != nil {
			if !errors.Is(err, vmbus.ErrBadMessage) {
				t.Fatalf("error %v does not match ErrBadMessage", err)
			}
			return
		}
		// What parses re-encodes to something that parses the same.
		out, err := vmbus.MarshalMessage(m)
		if err != nil {
			t.Fatalf("%+v: %v", m, err)
		}
		if len(out) != len(b) {
			t.Fatalf("%v: %d bytes re-encoded to %d", m.Type(), len(b), len(out))
		}
		m2, err := vmbus.ParseMessage(out)
		if err != nil || !reflect.DeepEqual(m, m2) {
			t.Fatalf("%v: re-parse %+v, %v", m.Type(), m2, err)
		}
	})
}

func TestPostRetry(t *testing.T) {
	run := func(statuses ...vmbus.Status) (tries int, delays []time.Duration, err error) {
		err = vmbus.PostRetry(context.Background(), func() (vmbus.Status, error) {
			st := statuses[min(tries, len(statuses)-1)]
			tries++
			return st, nil
		}, func(_ context.Context, d time.Duration) error { delays = append(delays, d); return nil })
		return
	}
	if n, _, err := run(vmbus.StatusSuccess); n != 1 || err != nil {
		t.Fatalf("success: %d tries, %v", n, err)
	}
	if n, d, err := run(vmbus.StatusInsufficientBuffers, vmbus.StatusInsufficientMemory, vmbus.StatusSuccess); n != 3 || err != nil || len(d) != 2 || d[0] != time.Microsecond || d[1] != 2*time.Microsecond {
		t.Fatalf("transient: %d tries, delays %v, %v", n, d, err)
	}
	n, d, err := run(vmbus.StatusInvalidConnectionID)
	if n != 100 || !errors.Is(err, vmbus.ErrPostAgain) {
		t.Fatalf("invalid connection id: %d tries, %v", n, err)
	}
	// 1 µs doubling while below 256,000 µs: 2^18 µs = 262,144 µs is the cap.
	if d[18] != 262144*time.Microsecond || d[17] != 131072*time.Microsecond || d[99] != d[18] {
		t.Fatalf("delays %v", d)
	}
	if n, _, err := run(vmbus.StatusInsufficientMemory); n != 100 || !errors.Is(err, vmbus.ErrPostNoMem) {
		t.Fatalf("no memory: %d tries, %v", n, err)
	}
	if n, _, err := run(vmbus.Status(5)); n != 1 || !errors.Is(err, vmbus.ErrPostFailed) {
		t.Fatalf("other status: %d tries, %v", n, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = vmbus.PostRetry(ctx, func() (vmbus.Status, error) { return vmbus.StatusInsufficientBuffers, nil },
		func(ctx context.Context, _ time.Duration) error { return ctx.Err() })
	if !errors.Is(err, vmbus.ErrPostNoMem) {
		t.Fatalf("cancelled: %v", err)
	}
}
