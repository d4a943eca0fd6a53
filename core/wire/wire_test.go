package wire_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/pagewire/pagewire/core/wire"
)

var be = binary.BigEndian

var testUUID = [16]byte{0x5a, 0xfe, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e}

// offsets returns n page offsets starting at page first.
func offsets(first, n int) []uint64 {
	o := make([]uint64, n)
	for i := range o {
		o[i] = uint64(first+i) * 4096
	}
	return o
}

// ramEqual compares two decoded RAM headers; a nil and an empty slice are
// the same.
func ramEqual(a, b *wire.RAM) bool {
	return a.Flags == b.Flags && a.PagesAlloc == b.PagesAlloc && a.NormalPages == b.NormalPages &&
		a.NextPacketSize == b.NextPacketSize && a.PacketNum == b.PacketNum && a.ZeroPages == b.ZeroPages &&
		bytes.Equal(a.Block, b.Block) && slices.Equal(a.Offsets, b.Offsets)
}

func devEqual(a, b *wire.DeviceState) bool {
	return a.Flags == b.Flags && bytes.Equal(a.IDStr, b.IDStr) && a.InstanceID == b.InstanceID && a.NextPacketSize == b.NextPacketSize
}

// rawHello encodes h like Hello.AppendBinary but without checking it, so
// that tests can build hellos a conforming sender would never send.
func rawHello(h wire.Hello) []byte { return wire.AppendHelloUnchecked(&h) }

func validHello() wire.Hello {
	return wire.Hello{
		UUID: testUUID, Channels: 4, PageSize: 4096, PacketPages: 128,
		MethodFlag: 0, Method: "nocomp",
		Blocks: []wire.BlockInfo{{Name: "pc.ram", Size: 1 << 30}, {Name: "vga.vram", Size: 16 << 20}},
	}
}

// mustEncode returns a func that passes on an encoder's bytes and fails
// the test on its error: mustEncode(t)(h.AppendBinary(nil)).
func mustEncode(t testing.TB) func([]byte, error) []byte {
	return func(b []byte, err error) []byte {
		t.Helper()
		if err != nil {
			t.Fatalf("encode: %v", err)
		}
		return b
	}
}

func TestInitRoundTrip(t *testing.T) {
	for _, in := range []wire.Init{
		{},
		{UUID: testUUID, ID: 0},
		{UUID: testUUID, ID: 3},
		{UUID: [16]byte{15: 0xff}, ID: 255},
	} {
		b := mustEncode(t)(in.AppendBinary([]byte("prefix")))
		if !bytes.HasPrefix(b, []byte("prefix")) {
			t.Fatal("AppendBinary overwrote dst")
		}
		b = b[len("prefix"):]
		if len(b) != wire.InitSize {
			t.Fatalf("%d bytes, want %d", len(b), wire.InitSize)
		}
		if m, v := be.Uint32(b), be.Uint32(b[4:]); m != 0x11223344 || v != 1 {
			t.Errorf("magic %#x version %d", m, v)
		}
		if !bytes.Equal(b[8:24], in.UUID[:]) || b[24] != in.ID {
			t.Errorf("uuid or id misplaced: % x", b[:25])
		}
		if !bytes.Equal(b[25:], make([]byte, wire.InitSize-25)) {
			t.Errorf("unused bytes not zero: % x", b[25:])
		}
		var out wire.Init
		if err := out.UnmarshalBinary(b); err != nil {
			t.Fatal(err)
		}
		if out != in {
			t.Errorf("decoded %+v, want %+v", out, in)
		}
		if err := out.Check(in.UUID, int(in.ID)+1); err != nil {
			t.Errorf("Check: %v", err)
		}
	}
	// QEMU ignores the unused bytes; so does the decoder.
	b := mustEncode(t)((&wire.Init{UUID: testUUID, ID: 1}).AppendBinary(nil))
	for i := 25; i < len(b); i++ {
		b[i] = 0xee
	}
	var out wire.Init
	if err := out.UnmarshalBinary(b); err != nil || out.ID != 1 || out.UUID != testUUID {
		t.Errorf("init with garbage in the unused bytes: %+v, %v", out, err)
	}
}

func TestRAMRoundTrip(t *testing.T) {
	name255 := bytes.Repeat([]byte{'b'}, wire.NameSize-1)
	tests := []struct {
		name  string
		pages int
		in    wire.RAM
		want  *wire.RAM // nil: same as in
	}{
		{name: "normal", pages: 128, in: wire.RAM{PagesAlloc: 128, NormalPages: 3, NextPacketSize: 3 * 4096, PacketNum: 7, Block: []byte("pc.ram"), Offsets: offsets(10, 3)}},
		{name: "normal and zero", pages: 128, in: wire.RAM{PagesAlloc: 128, NormalPages: 2, ZeroPages: 3, NextPacketSize: 2 * 4096, PacketNum: 1 << 40, Block: []byte("pc.ram"), Offsets: append(offsets(0, 2), offsets(100, 3)...)}},
		{name: "zero only", pages: 128, in: wire.RAM{PagesAlloc: 128, ZeroPages: 5, PacketNum: 2, Block: []byte("pc.ram"), Offsets: offsets(7, 5)}},
		{name: "full", pages: 128, in: wire.RAM{PagesAlloc: 128, NormalPages: 100, ZeroPages: 28, NextPacketSize: 100 * 4096, Block: []byte("pc.ram"), Offsets: offsets(0, 128)}},
		{name: "zstd flag", pages: 128, in: wire.RAM{Flags: 0x04, PagesAlloc: 128, NormalPages: 1, NextPacketSize: 77, Block: []byte("pc.ram"), Offsets: offsets(9, 1)}},
		{name: "one page per packet", pages: 1, in: wire.RAM{PagesAlloc: 1, NormalPages: 1, NextPacketSize: 4096, Block: []byte("x"), Offsets: offsets(1, 1)}},
		{name: "1024 pages per packet", pages: 1024, in: wire.RAM{PagesAlloc: 1024, NormalPages: 1024, NextPacketSize: 1024 * 4096, Block: []byte("pc.ram"), Offsets: offsets(0, 1024)}},
		{name: "longest block name", pages: 128, in: wire.RAM{PagesAlloc: 128, NormalPages: 1, NextPacketSize: 4096, Block: name255, Offsets: offsets(0, 1)}},
		{name: "offsets beyond 4 GiB", pages: 128, in: wire.RAM{PagesAlloc: 128, NormalPages: 2, NextPacketSize: 8192, Block: []byte("pc.ram"), Offsets: []uint64{5 << 32, 1<<63 - 4096}}},
		{name: "sync 10.x", pages: 128, in: wire.RAM{Flags: wire.FlagSync, PacketNum: 9}},
		{name: "sync 7.2", pages: 128, in: wire.RAM{Flags: wire.FlagSync, PagesAlloc: 128, PacketNum: 3}},
		{name: "7.2 sync with data", pages: 128, in: wire.RAM{Flags: wire.FlagSync, PagesAlloc: 128, NormalPages: 2, NextPacketSize: 8192, Block: []byte("pc.ram"), Offsets: offsets(4, 2)}},
		{name: "7.2 empty packet after sync", pages: 128, in: wire.RAM{PagesAlloc: 128, PacketNum: 4}},
		// A packet without pages keeps no block name: QEMU does not look
		// at it (7.2 leaves a stale one there).
		{name: "sync with stale block name", pages: 128,
			in:   wire.RAM{Flags: wire.FlagSync, PagesAlloc: 128, Block: []byte("pc.ram")},
			want: &wire.RAM{Flags: wire.FlagSync, PagesAlloc: 128}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := mustEncode(t)(tt.in.AppendBinary(nil, tt.pages))
			if len(b) != wire.RAMHeaderSize(tt.pages) {
				t.Fatalf("%d bytes, want %d", len(b), wire.RAMHeaderSize(tt.pages))
			}
			var out wire.RAM
			if err := out.UnmarshalBinary(b, tt.pages); err != nil {
				t.Fatal(err)
			}
			want := tt.want
			if want == nil {
				want = &tt.in
			}
			if !ramEqual(&out, want) {
				t.Errorf("decoded %+v\nwant    %+v", out, *want)
			}
			// Unused offset slots are zero (QEMU 10 memsets the packet).
			n := int(tt.in.NormalPages + tt.in.ZeroPages)
			if rest := b[wire.RAMFixedSize+8*n:]; !bytes.Equal(rest, make([]byte, len(rest))) {
				t.Error("unused offset slots not zero")
			}
			if p := new(wire.Prefix); p.UnmarshalBinary(b) != nil || p.Flags != tt.in.Flags || p.DeviceState() {
				t.Errorf("prefix of a RAM packet: %+v", p)
			}
		})
	}
}

// TestSyncPacketBytes pins the QEMU 10 SYNC packet of spec section 3.1a.
func TestSyncPacketBytes(t *testing.T) {
	h := wire.RAM{Flags: wire.FlagSync, PacketNum: 0x0102030405060708}
	b := mustEncode(t)(h.AppendBinary(nil, 128))
	want := make([]byte, 1344)
	copy(want, []byte{
		0x11, 0x22, 0x33, 0x44, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0,
		0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8,
	})
	if !bytes.Equal(b, want) {
		t.Errorf("SYNC packet:\n% x\nwant\n% x", b[:64], want[:64])
	}
}

func TestRAMReusesOffsets(t *testing.T) {
	in := wire.RAM{PagesAlloc: 128, NormalPages: 4, NextPacketSize: 4 * 4096, Block: []byte("pc.ram"), Offsets: offsets(0, 4)}
	b := mustEncode(t)(in.AppendBinary(nil, 128))
	out := wire.RAM{Offsets: make([]uint64, 99, 128)}
	base := &out.Offsets[:1][0]
	if err := out.UnmarshalBinary(b, 128); err != nil {
		t.Fatal(err)
	}
	if !ramEqual(&out, &in) || &out.Offsets[0] != base {
		t.Errorf("decode did not reuse the offsets' storage: %+v", out)
	}
	// A SYNC after it leaves no stale offsets or name behind.
	b = mustEncode(t)((&wire.RAM{Flags: wire.FlagSync}).AppendBinary(nil, 128))
	if err := out.UnmarshalBinary(b, 128); err != nil {
		t.Fatal(err)
	}
	if len(out.Offsets) != 0 || out.Block != nil {
		t.Errorf("stale fields after a SYNC: %+v", out)
	}
}

func TestDeviceStateRoundTrip(t *testing.T) {
	for _, in := range []wire.DeviceState{
		{IDStr: []byte("0000:00:02.0/vfio"), InstanceID: 0, NextPacketSize: 1},
		{IDStr: []byte("x"), InstanceID: 1<<32 - 1, NextPacketSize: 1<<32 - 1},
		{IDStr: []byte{}, InstanceID: 3, NextPacketSize: 4096},
		{IDStr: bytes.Repeat([]byte{'d'}, 255), InstanceID: 7, NextPacketSize: 12},
	} {
		b := mustEncode(t)(in.AppendBinary(nil))
		if len(b) != wire.DeviceStateSize {
			t.Fatalf("%d bytes, want %d", len(b), wire.DeviceStateSize)
		}
		if f := be.Uint32(b[8:]); f != wire.FlagDeviceState {
			t.Errorf("flags %#x, want %#x", f, wire.FlagDeviceState)
		}
		var p wire.Prefix
		if err := p.UnmarshalBinary(b); err != nil || !p.DeviceState() {
			t.Errorf("prefix %+v, %v", p, err)
		}
		var out wire.DeviceState
		if err := out.UnmarshalBinary(b); err != nil {
			t.Fatal(err)
		}
		want := in
		want.Flags = wire.FlagDeviceState // AppendBinary sets it
		if !devEqual(&out, &want) {
			t.Errorf("decoded %+v, want %+v", out, want)
		}
	}
}

func TestHelloRoundTrip(t *testing.T) {
	noBlocks := validHello()
	noBlocks.Blocks = nil
	many := validHello()
	many.Blocks = nil
	for i := range wire.MaxBlocks {
		many.Blocks = append(many.Blocks, wire.BlockInfo{Name: fmt.Sprintf("block%d", i), Size: uint64(i) * 512})
	}
	many.PageSize = 512
	for _, in := range []wire.Hello{
		validHello(),
		noBlocks,
		many,
		{Channels: 1, PageSize: wire.MinPageSize, PacketPages: 1, Method: "x"},
		{UUID: testUUID, Channels: 255, PageSize: wire.MaxPageSize, PacketPages: wire.MaxPacketPages, MethodFlag: 0x3e, Method: strings.Repeat("m", 255),
			Blocks: []wire.BlockInfo{{Name: strings.Repeat("b", 255), Size: 1 << 48}, {Name: "empty", Size: 0}}},
	} {
		b := mustEncode(t)(in.AppendBinary(nil))
		if !bytes.Equal(b, rawHello(in)) {
			t.Fatal("AppendBinary and the test's encoder disagree")
		}
		var out wire.Hello
		if err := out.UnmarshalBinary(b); err != nil {
			t.Fatalf("%s, %d blocks: %v", in.Method, len(in.Blocks), err)
		}
		if !reflect.DeepEqual(out, in) {
			t.Errorf("decoded %+v\nwant    %+v", out, in)
		}
		// Decoding into a used value replaces everything.
		out = many
		out.Blocks = slices.Clone(many.Blocks)
		if err := out.UnmarshalBinary(b); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(out.Blocks, in.Blocks) {
			t.Errorf("decoding into a used Hello: %d blocks, want %d", len(out.Blocks), len(in.Blocks))
		}
		out.Blocks, in.Blocks = nil, nil
		if !reflect.DeepEqual(out, in) {
			t.Errorf("decoding into a used Hello: %+v, want %+v", out, in)
		}
	}
}

func TestEndRoundTrip(t *testing.T) {
	for _, in := range []wire.End{{}, {Syncs: 3, Packets: 1 << 40}, {Syncs: 1<<64 - 1, Packets: 1<<64 - 1}} {
		b := mustEncode(t)(in.AppendBinary(nil))
		if len(b) != 16 {
			t.Fatalf("%d bytes, want 16", len(b))
		}
		var out wire.End
		if err := out.UnmarshalBinary(b); err != nil || out != in {
			t.Errorf("decoded %+v, %v; want %+v", out, err, in)
		}
	}
}

func TestMessageRoundTrip(t *testing.T) {
	hello := mustEncode(t)(func() ([]byte, error) { h := validHello(); return h.AppendBinary(nil) }())
	end := mustEncode(t)((&wire.End{Syncs: 2, Packets: 9}).AppendBinary(nil))
	msgs := []struct {
		typ  byte
		body []byte
	}{
		{wire.MsgHello, hello},
		{wire.MsgAccept, nil},
		{wire.MsgSync, be.AppendUint64(nil, 1)},
		{wire.MsgEnd, end},
		{wire.MsgError, []byte("receiver: boom")},
		{wire.MsgDone, nil},
		{wire.MsgError, make([]byte, wire.MaxMessage)},
	}
	var stream bytes.Buffer
	for _, m := range msgs {
		if err := wire.WriteMessage(&stream, m.typ, m.body); err != nil {
			t.Fatal(err)
		}
	}
	var buf []byte
	for i, m := range msgs {
		typ, body, err := wire.ReadMessage(&stream, buf)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if typ != m.typ || !bytes.Equal(body, m.body) {
			t.Errorf("message %d: %#x %d bytes, want %#x %d bytes", i, typ, len(body), m.typ, len(m.body))
		}
		buf = body
	}
	if _, _, err := wire.ReadMessage(&stream, buf); err != io.EOF {
		t.Errorf("after the last message: %v, want io.EOF", err)
	}
	if got := wire.ErrorText(strings.Repeat("e", 10<<10)); len(got) != 4<<10 {
		t.Errorf("ErrorText kept %d bytes, want %d", len(got), 4<<10)
	}
}

// Builders of bad inputs: a valid encoding, then one change.

func initBytes(change func(b []byte)) []byte {
	b, _ := (&wire.Init{UUID: testUUID, ID: 1}).AppendBinary(nil)
	change(b)
	return b
}

func ramBytes(pages int, change func(b []byte)) []byte {
	h := wire.RAM{PagesAlloc: uint32(pages), NormalPages: 1, ZeroPages: 1, NextPacketSize: 4096, Block: []byte("pc.ram"), Offsets: offsets(0, 2)}
	b, err := h.AppendBinary(nil, pages)
	if err != nil {
		panic(err)
	}
	change(b)
	return b
}

func devBytes(change func(b []byte)) []byte {
	b, _ := (&wire.DeviceState{IDStr: []byte("vfio"), InstanceID: 1, NextPacketSize: 100}).AppendBinary(nil)
	change(b)
	return b
}

func helloBytes(change func(h *wire.Hello)) []byte {
	h := validHello()
	change(&h)
	return rawHello(h)
}

func decodeRAM(b []byte, pages int) error {
	var h wire.RAM
	return h.UnmarshalBinary(b, pages)
}

func decodeHello(b []byte) error {
	var h wire.Hello
	return h.UnmarshalBinary(b)
}

func readMessage(b []byte) error {
	_, _, err := wire.ReadMessage(bytes.NewReader(b), nil)
	return err
}

func TestBadInput(t *testing.T) {
	fill := func(b []byte, v byte) {
		for i := range b {
			b[i] = v
		}
	}
	tests := []struct {
		name     string
		err      func() error
		sentinel error
		msg      string
	}{
		// MultiFDInit_t
		{"init/bad magic", func() error {
			var h wire.Init
			return h.UnmarshalBinary(initBytes(func(b []byte) { be.PutUint32(b, 0xdeadbeef) }))
		}, wire.ErrBadHandshake, "magic 0xdeadbeef, want 0x11223344"},
		{"init/bad version", func() error {
			var h wire.Init
			return h.UnmarshalBinary(initBytes(func(b []byte) { be.PutUint32(b[4:], 2) }))
		}, wire.ErrBadHandshake, "version 2, want 1"},
		{"init/short", func() error {
			var h wire.Init
			return h.UnmarshalBinary(initBytes(func([]byte) {})[:63])
		}, wire.ErrBadHandshake, "63 bytes, want 64"},
		{"init/long", func() error {
			var h wire.Init
			return h.UnmarshalBinary(append(initBytes(func([]byte) {}), 0))
		}, wire.ErrBadHandshake, "65 bytes, want 64"},
		{"init/uuid mismatch", func() error {
			h := wire.Init{UUID: testUUID}
			return h.Check([16]byte{}, 4)
		}, wire.ErrBadHandshake, "uuid 5afe"},
		{"init/channel id == channels", func() error {
			h := wire.Init{UUID: testUUID, ID: 4}
			return h.Check(testUUID, 4)
		}, wire.ErrBadHandshake, "channel id 4, but only 4 channels"},

		// packet prefix
		{"prefix/short", func() error {
			var p wire.Prefix
			return p.UnmarshalBinary(make([]byte, 11))
		}, wire.ErrBadPacket, "11 header bytes, want 12"},
		{"prefix/bad magic", func() error {
			return decodeRAM(ramBytes(128, func(b []byte) { be.PutUint32(b, 0x44332211) }), 128)
		}, wire.ErrBadPacket, "magic 0x44332211, want 0x11223344"},
		{"prefix/bad version", func() error {
			return decodeRAM(ramBytes(128, func(b []byte) { be.PutUint32(b[4:], 0) }), 128)
		}, wire.ErrBadPacket, "version 0, want 1"},
		{"prefix/unknown flag 0x100", func() error {
			return decodeRAM(ramBytes(128, func(b []byte) { be.PutUint32(b[8:], 0x100) }), 128)
		}, wire.ErrBadPacket, "unknown flags 0x100"},
		{"prefix/unknown high flags", func() error {
			var p wire.Prefix
			b := ramBytes(128, func(b []byte) { be.PutUint32(b[8:], 0xffffffff) })
			return p.UnmarshalBinary(b[:12])
		}, wire.ErrBadPacket, "unknown flags 0xffffff00"},
		{"prefix/SYNC on device-state", func() error {
			var p wire.Prefix
			return p.UnmarshalBinary(devBytes(func(b []byte) { be.PutUint32(b[8:], wire.FlagDeviceState|wire.FlagSync) }))
		}, wire.ErrBadPacket, "SYNC flag on a device-state packet"},

		// RAM packet header
		{"ram/header one byte short", func() error {
			return decodeRAM(ramBytes(128, func([]byte) {})[:1343], 128)
		}, wire.ErrBadPacket, "header of 1343 bytes, want 1344"},
		{"ram/header for another page count", func() error {
			return decodeRAM(ramBytes(128, func([]byte) {}), 64)
		}, wire.ErrBadPacket, "header of 1344 bytes, want 832"},
		{"ram/device-state flag", func() error {
			return decodeRAM(ramBytes(128, func(b []byte) { be.PutUint32(b[8:], wire.FlagDeviceState) }), 128)
		}, wire.ErrBadPacket, "device-state flag on a RAM packet"},
		{"ram/pages_alloc > page count", func() error {
			return decodeRAM(ramBytes(128, func(b []byte) { be.PutUint32(b[12:], 129) }), 128)
		}, wire.ErrBadPacket, "pages_alloc 129, at most 128"},
		{"ram/pages_alloc huge", func() error {
			return decodeRAM(ramBytes(128, func(b []byte) { be.PutUint32(b[12:], 1<<32-1) }), 128)
		}, wire.ErrBadPacket, "pages_alloc 4294967295, at most 128"},
		{"ram/normal > pages_alloc", func() error {
			return decodeRAM(ramBytes(128, func(b []byte) { be.PutUint32(b[12:], 4); be.PutUint32(b[16:], 5) }), 128)
		}, wire.ErrBadPacket, "5 normal pages, pages_alloc 4"},
		{"ram/zero > pages_alloc-normal", func() error {
			return decodeRAM(ramBytes(128, func(b []byte) {
				be.PutUint32(b[12:], 4)
				be.PutUint32(b[16:], 2)
				be.PutUint32(b[32:], 3)
			}), 128)
		}, wire.ErrBadPacket, "3 zero and 2 normal pages, pages_alloc 4"},
		{"ram/zero pages wrap around", func() error {
			return decodeRAM(ramBytes(128, func(b []byte) {
				be.PutUint32(b[16:], 1)
				be.PutUint32(b[32:], 1<<32-1)
			}), 128)
		}, wire.ErrBadPacket, "4294967295 zero and 1 normal pages"},
		{"ram/unterminated block name", func() error {
			return decodeRAM(ramBytes(128, func(b []byte) { fill(b[64:320], 'x') }), 128)
		}, wire.ErrBadPacket, "block name not NUL-terminated"},
		{"ram/unterminated block name, zero pages only", func() error {
			return decodeRAM(ramBytes(128, func(b []byte) { be.PutUint32(b[16:], 0); fill(b[64:320], 'x') }), 128)
		}, wire.ErrBadPacket, "block name not NUL-terminated"},

		// device-state header
		{"device state/unterminated idstr", func() error {
			var h wire.DeviceState
			return h.UnmarshalBinary(devBytes(func(b []byte) { fill(b[12:268], 'v') }))
		}, wire.ErrBadPacket, "unterminated device-state idstr"},
		{"device state/empty", func() error {
			var h wire.DeviceState
			return h.UnmarshalBinary(devBytes(func(b []byte) { be.PutUint32(b[272:], 0) }))
		}, wire.ErrBadPacket, "empty device-state packet"},
		{"device state/short", func() error {
			var h wire.DeviceState
			return h.UnmarshalBinary(devBytes(func([]byte) {})[:275])
		}, wire.ErrBadPacket, "device-state header of 275 bytes, want 276"},
		{"device state/RAM packet", func() error {
			var h wire.DeviceState
			return h.UnmarshalBinary(devBytes(func(b []byte) { be.PutUint32(b[8:], 0) }))
		}, wire.ErrBadPacket, "without the device-state flag"},
		{"device state/compressed", func() error {
			var h wire.DeviceState
			return h.UnmarshalBinary(devBytes(func(b []byte) { be.PutUint32(b[8:], wire.FlagDeviceState|0x04) }))
		}, wire.ErrBadPacket, "compressed device-state packet (flags 0x44)"},
		{"device state/SYNC", func() error {
			var h wire.DeviceState
			return h.UnmarshalBinary(devBytes(func(b []byte) { be.PutUint32(b[8:], wire.FlagDeviceState|wire.FlagSync) }))
		}, wire.ErrBadPacket, "SYNC flag on a device-state packet"},

		// encoders refuse what they could not send
		{"encode ram/offsets do not match counts", func() error {
			_, err := (&wire.RAM{NormalPages: 3, Offsets: offsets(0, 2)}).AppendBinary(nil, 128)
			return err
		}, wire.ErrBadPacket, "2 offsets for 3 pages"},
		{"encode ram/more pages than slots", func() error {
			_, err := (&wire.RAM{NormalPages: 129, Offsets: offsets(0, 129)}).AppendBinary(nil, 128)
			return err
		}, wire.ErrBadPacket, "129 pages in a packet of 128"},
		{"encode ram/pages_alloc > page count", func() error {
			_, err := (&wire.RAM{PagesAlloc: 129}).AppendBinary(nil, 128)
			return err
		}, wire.ErrBadPacket, "in a packet of 128"},
		{"encode ram/block name too long", func() error {
			_, err := (&wire.RAM{Block: make([]byte, 256)}).AppendBinary(nil, 128)
			return err
		}, wire.ErrBadPacket, "block name of 256 bytes, at most 255"},
		{"encode device state/idstr too long", func() error {
			_, err := (&wire.DeviceState{IDStr: make([]byte, 256), NextPacketSize: 1}).AppendBinary(nil)
			return err
		}, wire.ErrBadPacket, "idstr of 256 bytes, at most 255"},
		{"encode hello/invalid", func() error {
			_, err := (&wire.Hello{Channels: 0, PageSize: 4096, PacketPages: 128, Method: "nocomp"}).AppendBinary(nil)
			return err
		}, wire.ErrBadControl, "0 channels"},

		// hello
		{"hello/bad version", func() error {
			b := helloBytes(func(*wire.Hello) {})
			be.PutUint32(b, 2)
			return decodeHello(b)
		}, wire.ErrBadControl, "control protocol version 2, want 1"},
		{"hello/0 channels", func() error {
			return decodeHello(helloBytes(func(h *wire.Hello) { h.Channels = 0 }))
		}, wire.ErrBadControl, "0 channels, want 1..255"},
		{"hello/256 channels", func() error {
			return decodeHello(helloBytes(func(h *wire.Hello) { h.Channels = 256 }))
		}, wire.ErrBadControl, "256 channels, want 1..255"},
		{"hello/page size not a power of two", func() error {
			return decodeHello(helloBytes(func(h *wire.Hello) { h.PageSize = 4097 }))
		}, wire.ErrBadControl, "page size 4097, want a power of two"},
		{"hello/page size 3072", func() error {
			return decodeHello(helloBytes(func(h *wire.Hello) { h.PageSize = 3072; h.Blocks = nil }))
		}, wire.ErrBadControl, "page size 3072"},
		{"hello/page size too small", func() error {
			return decodeHello(helloBytes(func(h *wire.Hello) { h.PageSize = 256 }))
		}, wire.ErrBadControl, "page size 256"},
		{"hello/page size too large", func() error {
			return decodeHello(helloBytes(func(h *wire.Hello) { h.PageSize = 128 << 10 }))
		}, wire.ErrBadControl, "page size 131072"},
		{"hello/0 pages per packet", func() error {
			return decodeHello(helloBytes(func(h *wire.Hello) { h.PacketPages = 0 }))
		}, wire.ErrBadControl, "0 pages per packet, want 1..1024"},
		{"hello/1025 pages per packet", func() error {
			return decodeHello(helloBytes(func(h *wire.Hello) { h.PacketPages = 1025 }))
		}, wire.ErrBadControl, "1025 pages per packet"},
		{"hello/method flag outside the mask", func() error {
			return decodeHello(helloBytes(func(h *wire.Hello) { h.MethodFlag = 0x41 }))
		}, wire.ErrBadControl, "method flag 0x41 outside 0x3e"},
		{"hello/no method name", func() error {
			return decodeHello(helloBytes(func(h *wire.Hello) { h.Method = "" }))
		}, wire.ErrBadControl, "method name of 0 bytes"},
		{"hello/duplicate block", func() error {
			return decodeHello(helloBytes(func(h *wire.Hello) { h.Blocks = append(h.Blocks, h.Blocks[0]) }))
		}, wire.ErrBadControl, `block "pc.ram" listed twice`},
		{"hello/block not a page multiple", func() error {
			return decodeHello(helloBytes(func(h *wire.Hello) { h.Blocks[1].Size = 4096*3 + 512 }))
		}, wire.ErrBadControl, `block "vga.vram" of 12800 bytes is not a whole number of 4096-byte pages`},
		{"hello/empty block name", func() error {
			return decodeHello(helloBytes(func(h *wire.Hello) { h.Blocks[0].Name = "" }))
		}, wire.ErrBadControl, "block name of 0 bytes, want 1..255"},
		{"hello/block too large", func() error {
			return decodeHello(helloBytes(func(h *wire.Hello) { h.Blocks[0].Size = 1<<48 + 4096 }))
		}, wire.ErrBadControl, `block "pc.ram" of 281474976714752 bytes is too large`},
		{"hello/too many blocks", func() error {
			b := helloBytes(func(h *wire.Hello) { h.Blocks = nil })
			be.PutUint16(b[len(b)-3:], wire.MaxBlocks+1) // the count, before the flags byte
			return decodeHello(b)
		}, wire.ErrBadControl, fmt.Sprintf("%d blocks, at most %d", wire.MaxBlocks+1, wire.MaxBlocks)},
		{"hello/truncated", func() error {
			b := helloBytes(func(*wire.Hello) {})
			return decodeHello(b[:len(b)-1])
		}, wire.ErrBadControl, "hello: unexpected EOF"},
		{"hello/block count larger than the list", func() error {
			b := helloBytes(func(*wire.Hello) {})
			be.PutUint16(b[4+16+16+1+len("nocomp"):], 3)
			return decodeHello(b)
		}, wire.ErrBadControl, "hello: unexpected EOF"},
		{"hello/empty", func() error {
			return decodeHello(nil)
		}, wire.ErrBadControl, "hello: unexpected EOF"},
		{"hello/trailing bytes", func() error {
			return decodeHello(append(helloBytes(func(*wire.Hello) {}), 0, 0, 0))
		}, wire.ErrBadControl, "hello: 3 trailing bytes"},

		// end
		{"end/short", func() error {
			var e wire.End
			return e.UnmarshalBinary(make([]byte, 15))
		}, wire.ErrBadControl, "end message of 15 bytes, want 16"},
		{"end/long", func() error {
			var e wire.End
			return e.UnmarshalBinary(make([]byte, 17))
		}, wire.ErrBadControl, "end message of 17 bytes, want 16"},

		// control message framing
		{"message/oversized", func() error {
			return readMessage([]byte{wire.MsgHello, 0, 1, 0, 1})
		}, wire.ErrBadControl, "message of 65537 bytes, at most 65536"},
		{"message/oversized, unknown type", func() error {
			return readMessage([]byte{0xff, 0xff, 0xff, 0xff, 0xff})
		}, wire.ErrBadControl, "message of 4294967295 bytes"},
		{"message/unknown type", func() error {
			return readMessage([]byte{0x07, 0, 0, 0, 0})
		}, wire.ErrBadControl, "unknown message type 0x7"},
		{"message/type 0", func() error {
			return readMessage([]byte{0, 0, 0, 0, 1, 'x'})
		}, wire.ErrBadControl, "unknown message type 0x0"},
		{"message/truncated header", func() error {
			return readMessage([]byte{wire.MsgSync, 0, 0})
		}, wire.ErrBadControl, "truncated message header"},
		{"message/truncated body", func() error {
			return readMessage([]byte{wire.MsgSync, 0, 0, 0, 8, 1, 2, 3})
		}, wire.ErrBadControl, "truncated message body"},
		{"message/missing body", func() error {
			return readMessage([]byte{wire.MsgSync, 0, 0, 0, 8})
		}, wire.ErrBadControl, "truncated message body"},
		{"message/write oversized", func() error {
			return wire.WriteMessage(io.Discard, wire.MsgError, make([]byte, wire.MaxMessage+1))
		}, wire.ErrBadControl, "message of 65537 bytes, at most 65536"},
	}
	sentinels := []error{wire.ErrBadHandshake, wire.ErrBadPacket, wire.ErrBadControl}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.err()
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, tt.sentinel) {
				t.Errorf("error %q does not wrap %q", err, tt.sentinel)
			}
			for _, s := range sentinels {
				if s != tt.sentinel && errors.Is(err, s) {
					t.Errorf("error %q also wraps %q", err, s)
				}
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q does not say %q", err, tt.msg)
			}
		})
	}
}

// TestHelloTruncatedAnywhere cuts a valid hello at every length.
func TestHelloTruncatedAnywhere(t *testing.T) {
	b := helloBytes(func(*wire.Hello) {})
	for n := range len(b) {
		err := decodeHello(b[:n])
		if !errors.Is(err, wire.ErrBadControl) {
			t.Fatalf("hello cut to %d of %d bytes: %v", n, len(b), err)
		}
	}
}

// TestReadMessageEOF: a clean end before a message is io.EOF itself, so
// that callers can tell it from a broken message.
func TestReadMessageEOF(t *testing.T) {
	if _, _, err := wire.ReadMessage(bytes.NewReader(nil), nil); err != io.EOF {
		t.Errorf("empty stream: %v, want io.EOF", err)
	}
}

// TestRAMNoPagesSkipsNameAndOffsets: a packet without pages is accepted
// whatever its name and offset slots hold (QEMU never looks at them).
func TestRAMNoPagesSkipsNameAndOffsets(t *testing.T) {
	b := ramBytes(128, func(b []byte) {
		be.PutUint32(b[16:], 0)
		be.PutUint32(b[32:], 0)
		for i := 64; i < len(b); i++ {
			b[i] = 0xff
		}
	})
	var h wire.RAM
	if err := h.UnmarshalBinary(b, 128); err != nil {
		t.Fatal(err)
	}
	if h.Block != nil || len(h.Offsets) != 0 {
		t.Errorf("packet without pages decoded with %q and %d offsets", h.Block, len(h.Offsets))
	}
}

// TestHelloFitsMessage: the largest hello the limits allow can be sent.
func TestHelloFitsMessage(t *testing.T) {
	h := wire.Hello{Channels: 255, PageSize: 4096, PacketPages: 128, Method: strings.Repeat("m", 255)}
	for i := range wire.MaxBlocks {
		h.Blocks = append(h.Blocks, wire.BlockInfo{Name: fmt.Sprintf("%0255d", i), Size: 4096})
	}
	b, err := h.AppendBinary(nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > wire.MaxMessage {
		t.Fatalf("largest hello is %d bytes, a message at most %d", len(b), wire.MaxMessage)
	}
}
