package wire_test

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"

	"github.com/pagewire/pagewire/core/wire"
)

// Every decoder of peer bytes is fuzzed with the same three properties:
// it never panics, its errors wrap the package's sentinel, and what it
// accepts encodes again and decodes to the same value.

func FuzzInit(f *testing.F) {
	for _, h := range []wire.Init{{}, {UUID: testUUID, ID: 3}, {UUID: testUUID, ID: 255}} {
		b, _ := h.AppendBinary(nil)
		f.Add(b)
	}
	f.Add(initBytes(func(b []byte) { be.PutUint32(b[4:], 2) }))
	f.Add(make([]byte, wire.InitSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		var h wire.Init
		if err := h.UnmarshalBinary(b); err != nil {
			if !errors.Is(err, wire.ErrBadHandshake) {
				t.Fatalf("error %q does not wrap ErrBadHandshake", err)
			}
			return
		}
		// Check is fed peer values too.
		if err := h.Check(testUUID, int(b[63])); err != nil && !errors.Is(err, wire.ErrBadHandshake) {
			t.Fatalf("Check error %q does not wrap ErrBadHandshake", err)
		}
		enc, err := h.AppendBinary(nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(enc) != wire.InitSize || !bytes.Equal(enc[:25], b[:25]) {
			t.Fatalf("re-encoded\n% x\nfrom\n% x", enc, b)
		}
		var h2 wire.Init
		if err := h2.UnmarshalBinary(enc); err != nil || h2 != h {
			t.Fatalf("round trip: %+v, %v; want %+v", h2, err, h)
		}
	})
}

// FuzzRAM decodes b as the header of packets of 1+n%1024 pages: once as
// given (mostly a length error) and once cut or zero-padded to the right
// length, so that the fuzzer spends its time on the fields.
func FuzzRAM(f *testing.F) {
	seeds := []struct {
		pages int
		h     wire.RAM
	}{
		{128, wire.RAM{PagesAlloc: 128, NormalPages: 2, ZeroPages: 1, NextPacketSize: 8192, PacketNum: 5, Block: []byte("pc.ram"), Offsets: offsets(0, 3)}},
		{128, wire.RAM{Flags: wire.FlagSync, PacketNum: 6}},
		{128, wire.RAM{Flags: wire.FlagSync, PagesAlloc: 128}},
		{1, wire.RAM{Flags: 0x04, PagesAlloc: 1, NormalPages: 1, NextPacketSize: 100, Block: []byte("x"), Offsets: offsets(3, 1)}},
		{1024, wire.RAM{PagesAlloc: 1024, ZeroPages: 1024, Block: []byte("pc.ram"), Offsets: offsets(0, 1024)}},
		{4, wire.RAM{PagesAlloc: 4, NormalPages: 4, NextPacketSize: 4 * 4096, Block: bytes.Repeat([]byte{'b'}, 255), Offsets: offsets(0, 4)}},
	}
	for _, s := range seeds {
		b, err := s.h.AppendBinary(nil, s.pages)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint16(s.pages-1), b)
	}
	f.Add(uint16(127), ramBytes(128, func(b []byte) { be.PutUint32(b[12:], 129) }))
	f.Add(uint16(0), []byte{0x11, 0x22, 0x33, 0x44, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, n uint16, b []byte) {
		pages := 1 + int(n)%wire.MaxPacketPages
		fit := make([]byte, wire.RAMHeaderSize(pages))
		copy(fit, b)
		for _, in := range [][]byte{b, fit} {
			var h wire.RAM
			if err := h.UnmarshalBinary(in, pages); err != nil {
				if !errors.Is(err, wire.ErrBadPacket) {
					t.Fatalf("error %q does not wrap ErrBadPacket", err)
				}
				continue
			}
			k := int(h.NormalPages) + int(h.ZeroPages)
			switch {
			case k > pages || h.PagesAlloc > uint32(pages) || k > int(h.PagesAlloc):
				t.Fatalf("accepted %d+%d pages, pages_alloc %d, in a packet of %d", h.NormalPages, h.ZeroPages, h.PagesAlloc, pages)
			case len(h.Offsets) != k:
				t.Fatalf("%d offsets for %d pages", len(h.Offsets), k)
			case len(h.Block) >= wire.NameSize || bytes.IndexByte(h.Block, 0) >= 0:
				t.Fatalf("block name %q", h.Block)
			case h.Flags&wire.FlagDeviceState != 0:
				t.Fatalf("RAM packet with flags %#x", h.Flags)
			}
			enc, err := h.AppendBinary(nil, pages)
			if err != nil {
				t.Fatalf("re-encoding %+v: %v", h, err)
			}
			if !bytes.Equal(enc[:36], in[:36]) {
				t.Fatalf("re-encoded fields\n% x\nfrom\n% x", enc[:36], in[:36])
			}
			var h2 wire.RAM
			if err := h2.UnmarshalBinary(enc, pages); err != nil || !ramEqual(&h2, &h) {
				t.Fatalf("round trip: %+v, %v\nwant %+v", h2, err, h)
			}
			// Decoding into a used value gives the same result.
			h3 := wire.RAM{Block: []byte("stale"), Offsets: make([]uint64, 3, 7)}
			if err := h3.UnmarshalBinary(in, pages); err != nil || !ramEqual(&h3, &h) {
				t.Fatalf("decoding into a used RAM: %+v, %v\nwant %+v", h3, err, h)
			}
		}
	})
}

// FuzzDeviceState decodes b as given and cut or zero-padded to 276 bytes.
func FuzzDeviceState(f *testing.F) {
	for _, h := range []wire.DeviceState{
		{IDStr: []byte("0000:00:02.0/vfio"), InstanceID: 1, NextPacketSize: 4096},
		{IDStr: bytes.Repeat([]byte{'d'}, 255), NextPacketSize: 1},
	} {
		b, _ := h.AppendBinary(nil)
		f.Add(b)
	}
	f.Add(devBytes(func(b []byte) { be.PutUint32(b[272:], 0) }))
	f.Fuzz(func(t *testing.T, b []byte) {
		fit := make([]byte, wire.DeviceStateSize)
		copy(fit, b)
		for _, in := range [][]byte{b, fit} {
			var h wire.DeviceState
			if err := h.UnmarshalBinary(in); err != nil {
				if !errors.Is(err, wire.ErrBadPacket) {
					t.Fatalf("error %q does not wrap ErrBadPacket", err)
				}
				continue
			}
			switch {
			case h.Flags != wire.FlagDeviceState:
				t.Fatalf("device-state packet with flags %#x", h.Flags)
			case h.NextPacketSize == 0:
				t.Fatal("empty device-state packet accepted")
			case len(h.IDStr) >= wire.NameSize || bytes.IndexByte(h.IDStr, 0) >= 0:
				t.Fatalf("idstr %q", h.IDStr)
			}
			enc, err := h.AppendBinary(nil)
			if err != nil {
				t.Fatalf("re-encoding %+v: %v", h, err)
			}
			var h2 wire.DeviceState
			if err := h2.UnmarshalBinary(enc); err != nil || !devEqual(&h2, &h) {
				t.Fatalf("round trip: %+v, %v\nwant %+v", h2, err, h)
			}
		}
	})
}

// FuzzHello: the hello encoding has exactly one form, so what decodes must
// encode to the very same bytes.
func FuzzHello(f *testing.F) {
	for _, h := range []wire.Hello{
		validHello(),
		{Channels: 1, PageSize: 512, PacketPages: 1, Method: "zstd", MethodFlag: 0x04},
	} {
		b, err := h.AppendBinary(nil)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add(helloBytes(func(h *wire.Hello) { h.Blocks = append(h.Blocks, h.Blocks[0]) }))
	f.Add(helloBytes(func(h *wire.Hello) { h.PageSize = 3000 }))
	f.Fuzz(func(t *testing.T, b []byte) {
		var h wire.Hello
		if err := h.UnmarshalBinary(b); err != nil {
			if !errors.Is(err, wire.ErrBadControl) {
				t.Fatalf("error %q does not wrap ErrBadControl", err)
			}
			return
		}
		if err := h.Check(); err != nil {
			t.Fatalf("accepted a hello that fails Check: %v", err)
		}
		enc, err := h.AppendBinary(nil)
		if err != nil {
			t.Fatalf("re-encoding %+v: %v", h, err)
		}
		if !bytes.Equal(enc, b) {
			t.Fatalf("re-encoded\n% x\nfrom\n% x", enc, b)
		}
		var h2 wire.Hello
		if err := h2.UnmarshalBinary(enc); err != nil || !reflect.DeepEqual(h2, h) {
			t.Fatalf("round trip: %+v, %v\nwant %+v", h2, err, h)
		}
	})
}

// FuzzReadMessage reads messages from b until the stream fails or ends,
// reusing the body buffer as the engine does, and decodes the bodies of
// hello and end.
func FuzzReadMessage(f *testing.F) {
	var stream bytes.Buffer
	h := validHello()
	hello, _ := h.AppendBinary(nil)
	end, _ := (&wire.End{Syncs: 1, Packets: 2}).AppendBinary(nil)
	wire.WriteMessage(&stream, wire.MsgHello, hello)
	f.Add(bytes.Clone(stream.Bytes()))
	wire.WriteMessage(&stream, wire.MsgSync, be.AppendUint64(nil, 1))
	wire.WriteMessage(&stream, wire.MsgEnd, end)
	wire.WriteMessage(&stream, wire.MsgError, []byte("boom"))
	f.Add(stream.Bytes())
	f.Add([]byte{wire.MsgAccept, 0, 0, 0, 0, wire.MsgDone, 0, 0, 0, 0})
	f.Add([]byte{0x7f, 0, 0, 0, 0})
	f.Add([]byte{wire.MsgHello, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		var buf []byte
		for {
			start := len(b) - r.Len()
			typ, body, err := wire.ReadMessage(r, buf)
			if err == io.EOF {
				if start != len(b) {
					t.Fatalf("io.EOF with %d bytes left", len(b)-start)
				}
				return
			}
			if err != nil {
				if !errors.Is(err, wire.ErrBadControl) {
					t.Fatalf("error %q does not wrap ErrBadControl", err)
				}
				return
			}
			if len(body) > wire.MaxMessage {
				t.Fatalf("body of %d bytes", len(body))
			}
			var enc bytes.Buffer
			if err := wire.WriteMessage(&enc, typ, body); err != nil {
				t.Fatal(err)
			}
			if used := b[start : len(b)-r.Len()]; !bytes.Equal(enc.Bytes(), used) {
				t.Fatalf("re-encoded\n% x\nfrom\n% x", enc.Bytes(), used)
			}
			typ2, body2, err := wire.ReadMessage(&enc, nil)
			if err != nil || typ2 != typ || !bytes.Equal(body2, body) {
				t.Fatalf("round trip: %#x %q %v; want %#x %q", typ2, body2, err, typ, body)
			}
			switch typ {
			case wire.MsgHello:
				var h wire.Hello
				if err := h.UnmarshalBinary(body); err != nil && !errors.Is(err, wire.ErrBadControl) {
					t.Fatalf("hello: error %q does not wrap ErrBadControl", err)
				}
			case wire.MsgEnd:
				var e wire.End
				if err := e.UnmarshalBinary(body); err != nil && !errors.Is(err, wire.ErrBadControl) {
					t.Fatalf("end: error %q does not wrap ErrBadControl", err)
				}
			}
			buf = body
		}
	})
}
