package core_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pagewire/pagewire/channels"
	"github.com/pagewire/pagewire/core"
	"github.com/pagewire/pagewire/core/wire"
	"github.com/pagewire/pagewire/internal/pagegen"
	"github.com/pagewire/pagewire/plugins/builtin"
	"github.com/pagewire/pagewire/plugins/nocomp"
	"github.com/pagewire/pagewire/sdk"
)

// The tests in this file put a Receiver in front of a hand-written
// hostile sender that writes raw bytes, and check that every malformed,
// mismatched or truncated input ends Receive promptly with the right
// sentinel, channel and packet.

const (
	hostileBound = 5 * time.Second // every wait in these tests
	hostilePS    = 4096
	hostilePP    = 128 // pages per packet
	hostilePages = 64  // pages of the one block, "pc.ram"
)

var bigEndian = binary.BigEndian

var hostileUUID = [16]byte{'p', 'g', 'w', 'r', 0xba, 0xd1, 0x2e, 0x0f, 1, 2, 3, 4, 5, 6, 7, 8}

func hostileHello() wire.Hello {
	return wire.Hello{
		UUID: hostileUUID, Channels: 2, PageSize: hostilePS, PacketPages: hostilePP,
		Method: "nocomp", MethodFlag: 0,
		Blocks: []wire.BlockInfo{{Name: "pc.ram", Size: hostilePages * hostilePS}},
	}
}

func hostileReceiverConfig() core.ReceiverConfig {
	return core.ReceiverConfig{
		UUID:             hostileUUID,
		Methods:          core.NewRegistry(nocomp.New()), // whatever else gets registered
		HandshakeTimeout: hostileBound,
	}
}

// ramFields are the fields of a hand-crafted RAM packet header; nothing is
// checked, every field is written as given.
type ramFields struct {
	Flags, PagesAlloc, Normal, Zero, Size uint32
	Num                                   uint64
	Block                                 string
	Offsets                               []uint64
}

// ramHeader lays out a RAM packet header of 128 pages the way QEMU does.
func ramHeader(f ramFields) []byte {
	b := make([]byte, wire.RAMHeaderSize(hostilePP))
	bigEndian.PutUint32(b[0:], wire.Magic)
	bigEndian.PutUint32(b[4:], wire.Version)
	bigEndian.PutUint32(b[8:], f.Flags)
	bigEndian.PutUint32(b[12:], f.PagesAlloc)
	bigEndian.PutUint32(b[16:], f.Normal)
	bigEndian.PutUint32(b[20:], f.Size)
	bigEndian.PutUint64(b[24:], f.Num)
	bigEndian.PutUint32(b[32:], f.Zero)
	copy(b[64:320], f.Block)
	for i, o := range f.Offsets {
		bigEndian.PutUint64(b[320+8*i:], o)
	}
	return b
}

// hostilePage is the content the hostile sender sends for the page at off.
func hostilePage(off uint64) []byte {
	return bytes.Repeat([]byte{byte(off>>12) | 0x80}, hostilePS)
}

// dataPacket is a valid nocomp packet carrying the pages at offs.
func dataPacket(offs ...uint64) []byte {
	n := uint32(len(offs))
	b := ramHeader(ramFields{PagesAlloc: hostilePP, Normal: n, Size: n * hostilePS, Block: "pc.ram", Offsets: offs})
	for _, o := range offs {
		b = append(b, hostilePage(o)...)
	}
	return b
}

// deltaPacket is a delta packet (wire.FlagDelta) for the page at off:
// enc, and the crc32c the page must have once enc is applied.
func deltaPacket(off uint64, enc []byte, crc uint32) []byte {
	payload := bigEndian.AppendUint16(nil, uint16(len(enc)))
	payload = bigEndian.AppendUint32(payload, crc)
	payload = append(payload, enc...)
	b := ramHeader(ramFields{Flags: wire.FlagDelta, PagesAlloc: hostilePP, Normal: 1, Size: uint32(len(payload)), Block: "pc.ram", Offsets: []uint64{off}})
	return append(b, payload...)
}

// zeroPacket is a valid packet of zero pages only.
func zeroPacket(offs ...uint64) []byte {
	return ramHeader(ramFields{PagesAlloc: hostilePP, Zero: uint32(len(offs)), Block: "pc.ram", Offsets: offs})
}

// syncPacket is QEMU 10's SYNC packet.
func syncPacket() []byte { return ramHeader(ramFields{Flags: wire.FlagSync}) }

// devPacket is a device-state header with the given flags and size, and
// size bytes of blob.
func devPacket(flags, size uint32) []byte {
	b := make([]byte, wire.DeviceStateSize)
	bigEndian.PutUint32(b[0:], wire.Magic)
	bigEndian.PutUint32(b[4:], wire.Version)
	bigEndian.PutUint32(b[8:], flags)
	copy(b[12:], "0000:00:02.0/vfio")
	bigEndian.PutUint32(b[268:], 1)
	bigEndian.PutUint32(b[272:], size)
	return append(b, make([]byte, size)...)
}

func patch32(b []byte, off int, v uint32) []byte {
	bigEndian.PutUint32(b[off:], v)
	return b
}

func initBytes(uuid [16]byte, id int) []byte {
	b, _ := (&wire.Init{UUID: uuid, ID: uint8(id)}).AppendBinary(nil)
	return b
}

func magicBytes(m uint32) []byte {
	return bigEndian.AppendUint32(nil, m)
}

func syncMarker(n uint64) []byte { return bigEndian.AppendUint64(nil, n) }

func endBody(syncs, packets uint64) []byte {
	b, _ := (&wire.End{Syncs: syncs, Packets: packets}).AppendBinary(nil)
	return b
}

// hostile is a sender made of raw bytes. Its I/O errors after the hello
// are only logged: the receiver is expected to hang up on it.
type hostile struct {
	t     *testing.T
	d     channels.Dialer
	hello wire.Hello
	body  []byte // the hello body; nil is hello's encoding

	ctl   net.Conn
	chans []net.Conn  // multifd connections in dial order; nil if the dial failed
	all   []net.Conn  // every connection, closed by close
	msgs  chan ctlMsg // what the receiver says after accepting; closed at EOF
}

type ctlMsg struct {
	typ  byte
	body string
}

func newHostile(t *testing.T, d channels.Dialer) *hostile {
	h := &hostile{t: t, d: d, hello: hostileHello()}
	t.Cleanup(h.close)
	return h
}

func (h *hostile) dial() net.Conn {
	ctx, cancel := context.WithTimeout(context.Background(), hostileBound)
	defer cancel()
	c, err := h.d.Dial(ctx)
	if err != nil {
		h.t.Logf("hostile: dial: %v", err)
		return nil
	}
	c.SetDeadline(time.Now().Add(hostileBound))
	h.all = append(h.all, c)
	return c
}

func (h *hostile) write(c net.Conn, bs ...[]byte) {
	if c == nil {
		return
	}
	for _, b := range bs {
		if _, err := c.Write(b); err != nil {
			h.t.Logf("hostile: write: %v", err)
			return
		}
	}
}

// open connects the control channel, sends the hello and returns the
// receiver's answer. After an accept, a goroutine collects what the
// receiver says next.
func (h *hostile) open() (typ byte, body string) {
	h.t.Helper()
	return h.openWith(wire.MsgHello, nil)
}

// openWith is open with a message of another type or a body of its own.
func (h *hostile) openWith(msgType byte, raw []byte) (typ byte, body string) {
	h.t.Helper()
	h.ctl = h.dial()
	if h.ctl == nil {
		h.t.Fatal("cannot connect the control channel")
	}
	if raw == nil {
		raw = h.body
	}
	if raw == nil {
		var err error
		if raw, err = h.hello.AppendBinary(nil); err != nil {
			h.t.Fatal(err)
		}
	}
	var msg bytes.Buffer
	msg.Write(magicBytes(wire.ControlMagic))
	wire.WriteMessage(&msg, msgType, raw)
	h.write(h.ctl, msg.Bytes())
	typ, b, err := wire.ReadMessage(h.ctl, nil)
	if err != nil {
		h.t.Fatalf("hostile: no answer to the hello: %v", err)
	}
	if typ == wire.MsgAccept {
		h.msgs = make(chan ctlMsg, 16)
		go func(ctl net.Conn, msgs chan<- ctlMsg) {
			defer close(msgs)
			for {
				typ, body, err := wire.ReadMessage(ctl, nil)
				if err != nil {
					return
				}
				select {
				case msgs <- ctlMsg{typ, string(body)}:
				default:
				}
			}
		}(h.ctl, h.msgs)
	}
	return typ, string(b)
}

// rejected sends the hello and checks that the receiver refuses it with a
// MsgError saying msg.
func (h *hostile) rejected(msg string) {
	h.t.Helper()
	typ, body := h.open()
	if typ != wire.MsgError || !strings.HasPrefix(body, "receiver: ") || !strings.Contains(body, msg) {
		h.t.Errorf("answer to the hello: %#x %q, want MsgError saying %q", typ, body, msg)
	}
}

// connect opens the transfer and one multifd channel per id.
func (h *hostile) connect(ids ...int) {
	h.t.Helper()
	if typ, body := h.open(); typ != wire.MsgAccept {
		h.t.Fatalf("answer to the hello: %#x %q, want accept", typ, body)
	}
	for _, id := range ids {
		h.channel(initBytes(h.hello.UUID, id))
	}
}

// channel dials a multifd connection and writes b, its handshake, on it.
func (h *hostile) channel(b []byte) net.Conn {
	c := h.dial()
	h.chans = append(h.chans, c)
	h.write(c, b)
	return c
}

// send writes packets on the i-th multifd connection.
func (h *hostile) send(i int, packets ...[]byte) { h.write(h.chans[i], packets...) }

// control writes a control message.
func (h *hostile) control(typ byte, body []byte) {
	var msg bytes.Buffer
	wire.WriteMessage(&msg, typ, body)
	h.write(h.ctl, msg.Bytes())
}

func (h *hostile) hangUp(i int) {
	if c := h.chans[i]; c != nil {
		c.Close()
	}
}

// notice waits for the receiver's MsgError after an accepted hello.
func (h *hostile) notice() (string, bool) {
	timeout := time.After(hostileBound)
	for {
		select {
		case m, ok := <-h.msgs:
			if !ok {
				return "", false
			}
			if m.typ == wire.MsgError {
				return m.body, true
			}
		case <-timeout:
			return "", false
		}
	}
}

// close hangs up everything and waits for the control reader.
func (h *hostile) close() {
	for _, c := range h.all {
		c.Close()
	}
	h.all = nil
	if h.msgs != nil {
		for range h.msgs {
		}
		h.msgs = nil
	}
}

// hostileRun is a Receive call in the background.
type hostileRun struct {
	r      *core.Receiver
	cancel context.CancelFunc
	done   chan result
}

func startReceiver(ln net.Listener, cfg core.ReceiverConfig) *hostileRun {
	ctx, cancel := context.WithCancel(context.Background())
	run := &hostileRun{r: core.NewReceiver(cfg), cancel: cancel, done: make(chan result, 1)}
	go func() {
		mem, err := run.r.Receive(ctx, ln)
		run.done <- result{mem: mem, err: err}
	}()
	return run
}

// wait returns Receive's result, failing the test if it takes longer than
// hostileBound; it then cancels Receive and hangs up h to get it back.
func (run *hostileRun) wait(t *testing.T, h *hostile) result {
	t.Helper()
	defer run.cancel()
	select {
	case res := <-run.done:
		return res
	case <-time.After(hostileBound):
	}
	t.Errorf("Receive did not return within %v", hostileBound)
	run.cancel()
	if h != nil {
		h.close()
	}
	select {
	case res := <-run.done:
		return res
	case <-time.After(hostileBound):
		t.Fatalf("Receive did not return even after cancelling it")
		return result{}
	}
}

// waitFor polls cond until it holds, for at most hostileBound.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(hostileBound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not happen within %v", what, hostileBound)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// checkChannelError checks that err wraps sentinel, is a ChannelError of
// channel ch at packet pkt, and says msg.
func checkChannelError(t *testing.T, err, sentinel error, ch int, pkt uint64, msg string) {
	t.Helper()
	if err == nil {
		t.Fatal("Receive succeeded")
	}
	if !errors.Is(err, sentinel) {
		t.Errorf("error %q does not wrap %q", err, sentinel)
	}
	var ce *core.ChannelError
	if !errors.As(err, &ce) {
		t.Errorf("error %q (%T) is not a *core.ChannelError", err, err)
	} else if ce.Channel != ch || ce.Packet != pkt {
		t.Errorf("error %q is on channel %d, packet %d; want channel %d, packet %d", err, ce.Channel, ce.Packet, ch, pkt)
	}
	if !strings.Contains(err.Error(), msg) {
		t.Errorf("error %q does not say %q", err, msg)
	}
}

type badCase struct {
	name   string
	cfg    func(*core.ReceiverConfig)
	hello  func(*wire.Hello)
	script func(h *hostile, run *hostileRun)

	want    error // sentinel
	channel int
	packet  uint64
	msg     string
	remote  string // instead of want: a RemoteError from the sender with this text
	silent  bool   // the receiver cannot tell the hostile sender why
}

var badCases = []badCase{
	// Channel handshakes.
	// A connection that is not the transfer's is dropped: it fails the
	// transfer only by the channel that then does not come.
	{name: "init/bad magic",
		cfg: func(c *core.ReceiverConfig) { c.HandshakeTimeout = 400 * time.Millisecond },
		script: func(h *hostile, _ *hostileRun) {
			h.connect(0)
			h.channel(patch32(initBytes(hostileUUID, 1), 0, 0xdeadbeef))
		},
		want: core.ErrBadHandshake, channel: -1, msg: "unknown magic 0xdeadbeef"},
	{name: "init/QEMU main channel",
		cfg:    func(c *core.ReceiverConfig) { c.HandshakeTimeout = 400 * time.Millisecond },
		script: func(h *hostile, _ *hostileRun) { h.connect(0); h.channel([]byte("QEVM\x00\x00\x00\x03")) },
		want:   core.ErrBadHandshake, channel: -1, msg: "a QEMU migration stream"},
	{name: "init/bad version",
		script: func(h *hostile, _ *hostileRun) { h.connect(0); h.channel(patch32(initBytes(hostileUUID, 1), 4, 2)) },
		want:   core.ErrBadHandshake, channel: 1, msg: "version 2, want 1"},
	{name: "init/truncated",
		script: func(h *hostile, _ *hostileRun) {
			h.connect(0)
			h.channel(initBytes(hostileUUID, 1)[:10])
			h.hangUp(1)
		},
		want: core.ErrBadHandshake, channel: -1, msg: "truncated channel handshake"},
	{name: "init/uuid mismatch",
		script: func(h *hostile, _ *hostileRun) { h.connect(0); h.channel(initBytes([16]byte{1}, 1)) },
		want:   core.ErrBadHandshake, channel: 1, msg: "uuid 01000000"},
	{name: "init/channel id >= channels",
		script: func(h *hostile, _ *hostileRun) { h.connect(0, 2) },
		want:   core.ErrBadHandshake, channel: 2, msg: "channel id 2, but only 2 channels"},
	{name: "init/channel id 255",
		script: func(h *hostile, _ *hostileRun) { h.connect(255) },
		want:   core.ErrBadHandshake, channel: 255, msg: "channel id 255"},
	{name: "init/duplicate channel id",
		script: func(h *hostile, _ *hostileRun) { h.connect(1, 1) },
		want:   core.ErrBadHandshake, channel: 1, msg: "channel 1 connected twice"},
	{name: "init/channel missing",
		cfg:    func(c *core.ReceiverConfig) { c.HandshakeTimeout = 400 * time.Millisecond },
		script: func(h *hostile, _ *hostileRun) { h.connect(1) },
		want:   core.ErrBadHandshake, channel: -1, msg: "1 of 2 channels connected within 400ms"},
	{name: "init/no control channel",
		cfg:    func(c *core.ReceiverConfig) { c.HandshakeTimeout = 400 * time.Millisecond },
		script: func(h *hostile, _ *hostileRun) { h.channel(initBytes(hostileUUID, 0)) },
		want:   core.ErrBadHandshake, channel: -1, msg: "no control channel within 400ms", silent: true},
	{name: "init/second control channel",
		script: func(h *hostile, _ *hostileRun) { h.connect(0); h.channel(magicBytes(wire.ControlMagic)) },
		want:   core.ErrBadHandshake, channel: -1, msg: "a second control channel"},

	// The hello.
	{name: "hello/uuid mismatch",
		cfg:    func(c *core.ReceiverConfig) { c.UUID = [16]byte{0xee} },
		script: func(h *hostile, _ *hostileRun) { h.rejected("sender's uuid 70677772") },
		want:   core.ErrBadHandshake, channel: -1, msg: "sender's uuid 70677772"},
	{name: "hello/method the receiver lacks",
		hello:  func(h *wire.Hello) { h.Method, h.MethodFlag = "zstd", 0x04 },
		script: func(h *hostile, _ *hostileRun) { h.rejected("sender uses zstd, which this receiver does not have") },
		want:   core.ErrMethodMismatch, channel: -1, msg: "sender uses zstd, which this receiver does not have (it has nocomp)"},
	{name: "hello/method flag differs",
		hello:  func(h *wire.Hello) { h.MethodFlag = 0x02 },
		script: func(h *hostile, _ *hostileRun) { h.rejected("flag 0x2") },
		want:   core.ErrMethodMismatch, channel: -1, msg: "sender's nocomp has flag 0x2, this receiver's has 0"},
	{name: "hello/required method differs",
		cfg:    func(c *core.ReceiverConfig) { c.Method = nocomp.New() },
		hello:  func(h *wire.Hello) { h.Method, h.MethodFlag = "zstd", 0x04 },
		script: func(h *hostile, _ *hostileRun) { h.rejected("receiver expects nocomp") },
		want:   core.ErrMethodMismatch, channel: -1, msg: "sender uses zstd (flag 0x4), receiver expects nocomp (flag 0x0)"},
	{name: "hello/channel count",
		cfg:    func(c *core.ReceiverConfig) { c.Channels = 2 },
		hello:  func(h *wire.Hello) { h.Channels = 4 },
		script: func(h *hostile, _ *hostileRun) { h.rejected("sender uses 4 channels, receiver expects 2") },
		want:   core.ErrBadHandshake, channel: -1, msg: "sender uses 4 channels, receiver expects 2"},
	{name: "hello/0 channels",
		script: func(h *hostile, _ *hostileRun) {
			b, _ := h.hello.AppendBinary(nil)
			h.body = patch32(b, 4+16, 0)
			h.rejected("0 channels")
		},
		want: core.ErrBadControl, channel: -1, msg: "0 channels, want 1..255"},
	{name: "hello/not a hello",
		script: func(h *hostile, _ *hostileRun) {
			if typ, body := h.openWith(wire.MsgSync, syncMarker(1)); typ != wire.MsgError || !strings.Contains(body, "instead of hello") {
				h.t.Errorf("answer: %#x %q", typ, body)
			}
		},
		want: core.ErrBadControl, channel: -1, msg: "message 0x2 instead of hello"},
	{name: "hello/unknown message type",
		script: func(h *hostile, _ *hostileRun) {
			h.ctl = h.dial()
			h.write(h.ctl, magicBytes(wire.ControlMagic), []byte{0x7f, 0, 0, 0, 0})
		},
		want: core.ErrBadControl, channel: -1, msg: "unknown message type 0x7f"},
	{name: "hello/destination lacks the block",
		cfg: func(c *core.ReceiverConfig) {
			c.Memory = core.Blocks{{Name: "pc.ram", Data: make([]byte, 2*hostilePages*hostilePS)}}
		},
		script: func(h *hostile, _ *hostileRun) { h.rejected("block \"pc.ram\"") },
		want:   core.ErrBadHandshake, channel: -1, msg: "block \"pc.ram\": sender has 262144 bytes, destination 524288"},

	// RAM packets.
	{name: "packet/bad magic",
		script: func(h *hostile, _ *hostileRun) { h.connect(0, 1); h.send(0, patch32(dataPacket(0), 0, 0)) },
		want:   core.ErrBadPacket, channel: 0, packet: 1, msg: "magic 0x0, want 0x11223344"},
	{name: "packet/bad version",
		script: func(h *hostile, _ *hostileRun) { h.connect(0, 1); h.send(1, patch32(dataPacket(0), 4, 2)) },
		want:   core.ErrBadPacket, channel: 1, packet: 1, msg: "version 2, want 1"},
	{name: "packet/unknown flags",
		script: func(h *hostile, _ *hostileRun) {
			h.connect(0, 1)
			h.send(0, dataPacket(0), patch32(dataPacket(4096), 8, 0x100))
		},
		want: core.ErrBadPacket, channel: 0, packet: 2, msg: "unknown flags 0x100"},
	{name: "packet/delta not offered",
		script: func(h *hostile, _ *hostileRun) {
			h.connect(0, 1)
			h.send(0, dataPacket(0), deltaPacket(4096, []byte{0, 1, 1}, 0))
		},
		want: core.ErrBadPacket, channel: 0, packet: 2, msg: "a delta packet in a transfer that did not offer delta pages"},
	{name: "packet/delta against a base this end lacks",
		script: func(h *hostile, _ *hostileRun) {
			h.hello.Delta = true
			h.connect(0, 1)
			// The page at 4096 never came: this end holds zeros, the
			// delta claims a base of hostilePage(4096).
			want := hostilePage(4096)
			want[0] = 1
			h.send(0, dataPacket(0), deltaPacket(4096, []byte{0, 1, 1}, crc32.Checksum(want, crc32.MakeTable(crc32.Castagnoli))))
		},
		want: core.ErrBadPacket, channel: 0, packet: 2, msg: "delta for page 0x1000 of block \"pc.ram\" does not rebuild the sender's page"},
	{name: "packet/delta encoding past the page",
		script: func(h *hostile, _ *hostileRun) {
			h.hello.Delta = true
			h.connect(0, 1)
			h.send(1, dataPacket(0), deltaPacket(4096, []byte{0x80, 0x20, 0x01, 0xaa}, 0))
		},
		want: core.ErrBadPacket, channel: 1, packet: 2, msg: "corrupt delta: run of 4096+1 bytes at 0 past the page's 4096"},
	{name: "packet/delta lengths and payload disagree",
		script: func(h *hostile, _ *hostileRun) {
			h.hello.Delta = true
			h.connect(0, 1)
			b := deltaPacket(4096, []byte{0, 1, 1}, 0)
			b = append(patch32(b, 20, uint32(len(b)-wire.RAMHeaderSize(hostilePP)+1)), 0)
			h.send(0, b)
		},
		want: core.ErrBadPacket, channel: 0, packet: 1, msg: "delta lengths add up to 3 bytes, the payload has 4"},
	{name: "packet/pages_alloc > 128",
		script: func(h *hostile, _ *hostileRun) {
			h.connect(0, 1)
			h.send(1, dataPacket(0), ramHeader(ramFields{PagesAlloc: 129, Normal: 1, Size: 4096, Block: "pc.ram", Offsets: []uint64{0}}))
		},
		want: core.ErrBadPacket, channel: 1, packet: 2, msg: "pages_alloc 129, at most 128"},
	{name: "packet/normal > pages_alloc",
		script: func(h *hostile, _ *hostileRun) {
			h.connect(0, 1)
			h.send(0, ramHeader(ramFields{PagesAlloc: 4, Normal: 5, Size: 5 * 4096, Block: "pc.ram", Offsets: []uint64{0, 4096, 8192, 12288, 16384}}))
		},
		want: core.ErrBadPacket, channel: 0, packet: 1, msg: "5 normal pages, pages_alloc 4"},
	{name: "packet/zero > pages_alloc-normal",
		script: func(h *hostile, _ *hostileRun) {
			h.connect(0, 1)
			h.send(0, ramHeader(ramFields{PagesAlloc: 128, Normal: 100, Zero: 29, Block: "pc.ram"}))
		},
		want: core.ErrBadPacket, channel: 0, packet: 1, msg: "29 zero and 100 normal pages, pages_alloc 128"},
	{name: "packet/unterminated block name",
		script: func(h *hostile, _ *hostileRun) {
			h.connect(0, 1)
			h.send(1, ramHeader(ramFields{PagesAlloc: 128, Zero: 1, Block: strings.Repeat("r", 256), Offsets: []uint64{0}}))
		},
		want: core.ErrBadPacket, channel: 1, packet: 1, msg: "block name not NUL-terminated"},
	{name: "packet/unknown block",
		script: func(h *hostile, _ *hostileRun) {
			h.connect(0, 1)
			h.send(0, dataPacket(0), zeroPacket(4096), ramHeader(ramFields{PagesAlloc: 128, Normal: 1, Size: 4096, Block: "pc.rom", Offsets: []uint64{0}}))
		},
		want: core.ErrBadPacket, channel: 0, packet: 3, msg: `unknown block "pc.rom"`},
	{name: "packet/offset not page aligned",
		script: func(h *hostile, _ *hostileRun) {
			h.connect(0, 1)
			h.send(1, ramHeader(ramFields{PagesAlloc: 128, Normal: 2, Size: 8192, Block: "pc.ram", Offsets: []uint64{0, 4096 + 100}}))
		},
		want: core.ErrBadPacket, channel: 1, packet: 1, msg: `offset 0x1064 in block "pc.ram" is not page aligned`},
	{name: "packet/offset beyond the block",
		script: func(h *hostile, _ *hostileRun) {
			h.connect(0, 1)
			h.send(0, dataPacket(63*4096), dataPacket(64*4096))
		},
		want: core.ErrBadPacket, channel: 0, packet: 2, msg: `offset 0x40000 beyond block "pc.ram" of 262144 bytes`},
	{name: "packet/zero page beyond the block",
		script: func(h *hostile, _ *hostileRun) { h.connect(0, 1); h.send(1, zeroPacket(0, 1<<64-4096)) },
		want:   core.ErrBadPacket, channel: 1, packet: 1, msg: "offset 0xfffffffffffff000 beyond block"},
	{name: "packet/corrupt zstd payload",
		cfg:   func(c *core.ReceiverConfig) { c.Method = zstdMethod() },
		hello: func(h *wire.Hello) { h.Method, h.MethodFlag = "zstd", 0x04 },
		script: func(h *hostile, _ *hostileRun) {
			h.connect(0, 1)
			h.send(1, ramHeader(ramFields{Flags: 0x04, PagesAlloc: 128, Normal: 1, Size: 12, Block: "pc.ram", Offsets: []uint64{0}}),
				[]byte("not zstd at all"[:12]))
		},
		want: core.ErrMethod, channel: 1, packet: 1, msg: "method failed: zstd: corrupt payload"},
	{name: "packet/compressed payload too large",
		cfg:   func(c *core.ReceiverConfig) { c.Method = zstdMethod() },
		hello: func(h *wire.Hello) { h.Method, h.MethodFlag = "zstd", 0x04 },
		script: func(h *hostile, _ *hostileRun) {
			h.connect(0, 1)
			h.send(0, ramHeader(ramFields{Flags: 0x04, PagesAlloc: 128, Normal: 1, Size: 1 << 30, Block: "pc.ram", Offsets: []uint64{0}}))
		},
		want: core.ErrBadPacket, channel: 0, packet: 1, msg: "payload of 1073741824 bytes, at most 1114112"},
	{name: "packet/method flags mismatch",
		script: func(h *hostile, _ *hostileRun) { h.connect(0, 1); h.send(0, patch32(dataPacket(0), 8, 0x04)) },
		want:   core.ErrMethodMismatch, channel: 0, packet: 1, msg: "packet flags 0x4, method nocomp has 0"},
	{name: "packet/method flags on zero pages",
		script: func(h *hostile, _ *hostileRun) {
			h.connect(0, 1)
			h.send(1, patch32(zeroPacket(0), 8, 0x04|wire.FlagSync))
		},
		want: core.ErrMethodMismatch, channel: 1, packet: 1, msg: "packet flags 0x4"},
	{name: "packet/next_packet_size wrong for nocomp",
		script: func(h *hostile, _ *hostileRun) {
			h.connect(0, 1)
			h.send(0, dataPacket(0), patch32(dataPacket(4096, 8192), 20, 4096))
		},
		want: core.ErrBadPacket, channel: 0, packet: 2, msg: "payload of 4096 bytes for 2 pages of 4096 bytes"},
	{name: "packet/payload without pages",
		script: func(h *hostile, _ *hostileRun) { h.connect(0, 1); h.send(1, patch32(syncPacket(), 20, 10)) },
		want:   core.ErrBadPacket, channel: 1, packet: 1, msg: "10 payload bytes in a packet without pages"},
	{name: "packet/payload for zero pages only",
		script: func(h *hostile, _ *hostileRun) { h.connect(0, 1); h.send(1, patch32(zeroPacket(0), 20, 4096)) },
		want:   core.ErrBadPacket, channel: 1, packet: 1, msg: "4096 payload bytes for a packet of zero pages only"},

	// Dialects.
	{name: "dialect 7.2/zero pages in a packet",
		hello:  func(h *wire.Hello) { h.ZeroOnControl = true },
		script: func(h *hostile, _ *hostileRun) { h.connect(0, 1); h.send(1, zeroPacket(0)) },
		want:   core.ErrBadPacket, channel: 1, packet: 1, msg: "1 zero pages in a packet of a QEMU 7.2 dialect transfer"},
	{name: "dialect 10.0/zero pages on the control channel",
		script: func(h *hostile, _ *hostileRun) {
			h.connect(0, 1)
			h.control(wire.MsgZero, wire.AppendZero(nil, []byte("pc.ram"), []uint64{0}))
		},
		want: core.ErrBadControl, channel: -1, msg: "zero pages on the control channel in the QEMU 10.0 dialect"},
	{name: "dialect 7.2/zero page beyond the block",
		hello: func(h *wire.Hello) { h.ZeroOnControl = true },
		script: func(h *hostile, _ *hostileRun) {
			h.connect(0, 1)
			h.control(wire.MsgZero, wire.AppendZero(nil, []byte("pc.ram"), []uint64{64 * 4096}))
		},
		want: core.ErrBadControl, channel: -1, msg: `zero page at 0x40000 of block "pc.ram" (262144 bytes)`},
	{name: "dialect 7.2/zero pages of an unknown block",
		hello: func(h *wire.Hello) { h.ZeroOnControl = true },
		script: func(h *hostile, _ *hostileRun) {
			h.connect(0, 1)
			h.control(wire.MsgZero, wire.AppendZero(nil, []byte("pc.rom"), []uint64{0}))
		},
		want: core.ErrBadControl, channel: -1, msg: `zero pages of unknown block "pc.rom"`},

	// Device-state packets.
	{name: "device state/empty",
		script: func(h *hostile, _ *hostileRun) { h.connect(0, 1); h.send(0, devPacket(wire.FlagDeviceState, 0)) },
		want:   core.ErrBadPacket, channel: 0, packet: 1, msg: "empty device-state packet"},
	{name: "device state/SYNC",
		script: func(h *hostile, _ *hostileRun) {
			h.connect(0, 1)
			h.send(1, devPacket(wire.FlagDeviceState|wire.FlagSync, 8))
		},
		want: core.ErrBadPacket, channel: 1, packet: 1, msg: "SYNC flag on a device-state packet"},
	{name: "device state/compressed",
		script: func(h *hostile, _ *hostileRun) { h.connect(0, 1); h.send(0, devPacket(wire.FlagDeviceState|0x04, 8)) },
		want:   core.ErrBadPacket, channel: 0, packet: 1, msg: "compressed device-state packet"},
	{name: "device state/too large",
		cfg: func(c *core.ReceiverConfig) { c.MaxDeviceState = 1024 },
		script: func(h *hostile, _ *hostileRun) {
			h.connect(0, 1)
			h.send(1, devPacket(wire.FlagDeviceState, 1024), devPacket(wire.FlagDeviceState, 1025))
		},
		want: core.ErrBadPacket, channel: 1, packet: 2, msg: "device-state blob of 1025 bytes, at most 1024"},

	// The sender disappears.
	{name: "peer gone/inside a header",
		script: func(h *hostile, _ *hostileRun) { h.connect(0, 1); h.send(1, dataPacket(0)[:100]); h.hangUp(1) },
		want:   core.ErrPeerGone, channel: 1, packet: 1, msg: "stream ends inside a packet"},
	{name: "peer gone/after a prefix",
		script: func(h *hostile, _ *hostileRun) {
			h.connect(0, 1)
			h.send(0, dataPacket(0), dataPacket(4096)[:12])
			h.hangUp(0)
		},
		want: core.ErrPeerGone, channel: 0, packet: 2, msg: "stream ends inside a packet"},
	{name: "peer gone/inside a payload",
		script: func(h *hostile, _ *hostileRun) {
			h.connect(0, 1)
			h.send(0, dataPacket(0), dataPacket(4096, 8192)[:wire.RAMHeaderSize(hostilePP)+4096+100])
			h.hangUp(0)
		},
		want: core.ErrPeerGone, channel: 0, packet: 2, msg: "stream ends inside a packet"},
	{name: "peer gone/inside a device-state blob",
		script: func(h *hostile, _ *hostileRun) {
			h.connect(0, 1)
			h.send(1, devPacket(wire.FlagDeviceState, 3<<20)[:wire.DeviceStateSize+(3<<19)])
			h.hangUp(1)
		},
		want: core.ErrPeerGone, channel: 1, packet: 1, msg: "stream ends inside a packet"},
	{name: "peer gone/control channel closed before END",
		script: func(h *hostile, _ *hostileRun) {
			h.connect(0, 1)
			h.send(0, dataPacket(0), syncPacket())
			h.send(1, zeroPacket(4096), syncPacket())
			h.control(wire.MsgSync, syncMarker(1))
			h.close() // everything, at packet boundaries
		},
		want: core.ErrPeerGone, channel: -1, msg: "sender closed the control channel before the end of the transfer", silent: true},
	{name: "peer gone/SYNC on some channels, then EOF",
		script: func(h *hostile, run *hostileRun) {
			h.connect(0, 1)
			h.send(0, dataPacket(0), syncPacket())
			waitFor(h.t, "channel 0 parked at its SYNC", func() bool { return core.ParkedAtSync(run.r) == 1 })
			h.hangUp(1)
		},
		want: core.ErrPeerGone, channel: 1, packet: 1, msg: "channel ended while 1 channels wait at SYNC 1"},
	{name: "peer gone/SYNC on some channels, then EOF after data",
		script: func(h *hostile, run *hostileRun) {
			h.connect(0, 1)
			h.send(1, dataPacket(4096))
			h.send(0, dataPacket(0), syncPacket())
			waitFor(h.t, "channel 0 parked at its SYNC and channel 1's packet", func() bool {
				return core.ParkedAtSync(run.r) == 1 && run.r.Stats().Packets == 2
			})
			h.hangUp(1)
		},
		want: core.ErrPeerGone, channel: 1, packet: 2, msg: "channel ended while 1 channels wait at SYNC 1"},

	// The control channel.
	{name: "control/unknown message type",
		script: func(h *hostile, _ *hostileRun) { h.connect(0, 1); h.write(h.ctl, []byte{0x7f, 0, 0, 0, 0}) },
		want:   core.ErrBadControl, channel: -1, msg: "unknown message type 0x7f"},
	{name: "control/oversized message",
		script: func(h *hostile, _ *hostileRun) { h.connect(0, 1); h.write(h.ctl, []byte{wire.MsgSync, 0, 0x10, 0, 0}) },
		want:   core.ErrBadControl, channel: -1, msg: "message of 1048576 bytes, at most 65536"},
	{name: "control/bad sync marker",
		script: func(h *hostile, _ *hostileRun) { h.connect(0, 1); h.control(wire.MsgSync, syncMarker(2)) },
		want:   core.ErrBadControl, channel: -1, msg: "sync marker 0000000000000002, want 1"},
	{name: "control/accept from the sender",
		script: func(h *hostile, _ *hostileRun) { h.connect(0, 1); h.control(wire.MsgAccept, nil) },
		want:   core.ErrBadControl, channel: -1, msg: "unexpected message 0x81 from the sender"},
	{name: "control/short end",
		script: func(h *hostile, _ *hostileRun) { h.connect(0, 1); h.control(wire.MsgEnd, []byte{0, 0, 1}) },
		want:   core.ErrBadControl, channel: -1, msg: "end message of 3 bytes, want 16"},
	{name: "control/sender reports a failure",
		script: func(h *hostile, _ *hostileRun) {
			h.connect(0, 1)
			h.send(0, dataPacket(0))
			h.control(wire.MsgError, []byte("sender: disk on fire"))
		},
		remote: "sender: disk on fire", silent: true},

	// The end does not match what arrived.
	{name: "end/packet count",
		script: func(h *hostile, _ *hostileRun) {
			h.connect(0, 1)
			h.send(0, dataPacket(0), syncPacket())
			h.send(1, zeroPacket(4096), syncPacket())
			h.control(wire.MsgSync, syncMarker(1))
			h.control(wire.MsgEnd, endBody(1, 5))
			h.hangUp(0)
			h.hangUp(1)
		},
		want: core.ErrBadPacket, channel: -1, msg: "2 packets arrived, sender sent 5"},
	{name: "end/sync count",
		script: func(h *hostile, _ *hostileRun) {
			h.connect(0, 1)
			h.send(0, dataPacket(0), syncPacket())
			h.send(1, zeroPacket(4096), syncPacket())
			h.control(wire.MsgSync, syncMarker(1))
			h.control(wire.MsgEnd, endBody(2, 2))
			h.hangUp(0)
			h.hangUp(1)
		},
		want: core.ErrBadPacket, channel: 0, packet: 2, msg: "1 SYNCs on this channel, sender sent 2"},
	{name: "end/missing sync marker",
		script: func(h *hostile, _ *hostileRun) {
			h.connect(0, 1)
			h.send(0, syncPacket())
			h.send(1, syncPacket())
			h.control(wire.MsgEnd, endBody(1, 0))
			h.hangUp(0)
			h.hangUp(1)
		},
		want: core.ErrBadControl, channel: -1, msg: "0 sync markers, sender sent 1"},
}

// hostileTransports are the transports the hostile tests run on.
var hostileTransports = []transport{{"tcp", tcpTransport}, {"pipe", pipeTransport}}

func TestReceiverBadInput(t *testing.T) {
	for _, tr := range hostileTransports {
		for _, tt := range badCases {
			t.Run(tr.name+"/"+tt.name, func(t *testing.T) {
				ln, d := tr.listen(t)
				cfg := hostileReceiverConfig()
				if tt.cfg != nil {
					tt.cfg(&cfg)
				}
				run := startReceiver(ln, cfg)
				h := newHostile(t, d)
				if tt.hello != nil {
					tt.hello(&h.hello)
				}
				start := time.Now()
				tt.script(h, run)
				res := run.wait(t, h)
				t.Logf("%v after %v", res.err, time.Since(start).Round(time.Millisecond))
				if res.mem != nil {
					t.Error("Receive returned memory with its error")
				}
				if tt.remote != "" {
					var re *core.RemoteError
					if !errors.As(res.err, &re) || re.Side != "sender" || re.Msg != tt.remote {
						t.Errorf("error %v (%T), want the sender's %q", res.err, res.err, tt.remote)
					}
				} else {
					checkChannelError(t, res.err, tt.want, tt.channel, tt.packet, tt.msg)
				}
				if h.msgs != nil && !tt.silent {
					if text, ok := h.notice(); !ok {
						t.Error("the receiver did not tell the sender why it failed")
					} else if !strings.HasPrefix(text, "receiver: ") || !strings.Contains(text, tt.msg) {
						t.Errorf("the receiver told the sender %q, want it to say %q", text, tt.msg)
					}
				}
			})
		}
	}
}

// TestReceiverHostileValid runs a well-formed hand-crafted transfer, with
// QEMU 7.2 and 10 style packets, through the same helpers, so that the bad
// cases above fail for the reason they claim.
func TestReceiverHostileValid(t *testing.T) {
	for _, tr := range hostileTransports {
		t.Run(tr.name, func(t *testing.T) {
			ln, d := tr.listen(t)
			var blobs []string
			var mu sync.Mutex
			cfg := hostileReceiverConfig()
			cfg.OnDeviceState = func(idstr string, instance uint32, blob []byte) error {
				mu.Lock()
				defer mu.Unlock()
				blobs = append(blobs, idstr)
				return nil
			}
			run := startReceiver(ln, cfg)
			h := newHostile(t, d)
			h.connect(1, 0)
			// Never write on a channel parked at a SYNC: a pipe write would
			// block until the other channel gets there.
			// 7.2 style: an empty SYNC first, then a SYNC riding on data.
			sync72 := ramHeader(ramFields{Flags: wire.FlagSync, PagesAlloc: hostilePP, Block: "stale"})
			h.send(0, sync72)
			h.send(1, sync72)
			h.control(wire.MsgSync, syncMarker(1))
			last := dataPacket(63 * 4096)
			bigEndian.PutUint32(last[8:], wire.FlagSync)
			h.send(0, dataPacket(0, 4096, 3*4096), zeroPacket(2*4096), last)
			h.send(1, devPacket(wire.FlagDeviceState, 10), dataPacket(10*4096), syncPacket())
			h.control(wire.MsgSync, syncMarker(2))
			// 10 style: dedicated SYNC packets.
			h.send(0, syncPacket())
			h.send(1, syncPacket())
			h.control(wire.MsgSync, syncMarker(3))
			h.control(wire.MsgEnd, endBody(3, 4))
			h.hangUp(0)
			h.hangUp(1)
			res := run.wait(t, h)
			if res.err != nil {
				t.Fatal(res.err)
			}
			got := blockData(t, res.mem, "pc.ram")
			for _, off := range []uint64{0, 4096, 3 * 4096, 10 * 4096, 63 * 4096} {
				if !bytes.Equal(got[off:off+hostilePS], hostilePage(off)) {
					t.Errorf("page %#x differs", off)
				}
			}
			if !core.IsZero(got[2*4096 : 3*4096]) {
				t.Error("zero page not zero")
			}
			if len(blobs) != 1 || blobs[0] != "0000:00:02.0/vfio" {
				t.Errorf("device state: %q", blobs)
			}
			if m, ok := <-h.msgs; !ok || m.typ != wire.MsgDone {
				t.Errorf("the receiver answered the end with %+v, want done", m)
			}
		})
	}
}

// trackingListener remembers the connections it accepted, so that a test
// can cut them as if the receiving host died.
type trackingListener struct {
	net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.conns = append(l.conns, c)
		l.mu.Unlock()
	}
	return c, err
}

func (l *trackingListener) cut() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		c.Close()
	}
}

// trackingDialer is the sending side's trackingListener.
type trackingDialer struct {
	channels.Dialer
	mu    sync.Mutex
	conns []net.Conn
}

func (d *trackingDialer) Dial(ctx context.Context) (net.Conn, error) {
	c, err := d.Dialer.Dial(ctx)
	if err == nil {
		d.mu.Lock()
		d.conns = append(d.conns, c)
		d.mu.Unlock()
	}
	return c, err
}

func (d *trackingDialer) cut() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.conns {
		c.Close()
	}
}

type sendOutcome struct {
	sendErr, closeErr error
	at                time.Time // when Close returned
}

// keepSending sends the block over and over until the transfer fails or
// limit passes, then closes the sender.
func keepSending(s *core.Sender, limit time.Duration) <-chan sendOutcome {
	out := make(chan sendOutcome, 1)
	go func() {
		var err error
		for end := time.Now().Add(limit); err == nil && time.Now().Before(end); {
			if err = s.SendBlock("pc.ram"); err == nil {
				// A page may be queued once between Syncs: two copies in
				// flight would be written by two receiving channels at once.
				err = s.Sync()
			}
		}
		_, cerr := s.Close()
		out <- sendOutcome{err, cerr, time.Now()}
	}()
	return out
}

// peerGoneSetup starts a receiver and a real sender that keeps sending,
// and waits until pages are landing.
func peerGoneSetup(t *testing.T, tr transport, sctx context.Context) (*hostileRun, *trackingListener, *trackingDialer, <-chan sendOutcome) {
	t.Helper()
	ln, d := tr.listen(t)
	tl := &trackingListener{Listener: ln}
	td := &trackingDialer{Dialer: d}
	run := startReceiver(tl, core.ReceiverConfig{HandshakeTimeout: hostileBound})
	img := pagegen.Image(1<<20, 4096, 3)
	s, err := core.NewSender(sctx, td, core.Blocks{{Name: "pc.ram", Data: img}}, core.SenderConfig{Channels: 4, HandshakeTimeout: hostileBound})
	if err != nil {
		run.cancel()
		run.wait(t, nil)
		t.Fatal(err)
	}
	out := keepSending(s, 3*hostileBound)
	waitFor(t, "pages landing", func() bool { return run.r.Stats().Packets >= 8 })
	return run, tl, td, out
}

// TestSenderNoticesReceiverGone: when the receiving end goes away in the
// middle of a transfer (its context is cancelled, or its host dies), the
// sender's calls fail within 2 seconds.
func TestSenderNoticesReceiverGone(t *testing.T) {
	for _, tr := range hostileTransports {
		for _, how := range []string{"cancel", "crash"} {
			t.Run(tr.name+"/"+how, func(t *testing.T) {
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				run, tl, _, out := peerGoneSetup(t, tr, ctx)
				gone := time.Now()
				if how == "cancel" {
					run.cancel()
				} else {
					tl.cut()
				}
				var o sendOutcome
				select {
				case o = <-out:
				case <-time.After(hostileBound):
					cancel()
					select {
					case <-out:
					case <-time.After(hostileBound):
					}
					run.wait(t, nil)
					t.Fatalf("the sender did not notice within %v", hostileBound)
				}
				if el := o.at.Sub(gone); el > 2*time.Second {
					t.Errorf("the sender took %v to notice", el)
				}
				res := run.wait(t, nil)
				t.Logf("sender: %v; close: %v; receiver: %v", o.sendErr, o.closeErr, res.err)
				for _, err := range []error{o.sendErr, o.closeErr} {
					var re *core.RemoteError
					switch {
					case err == nil:
						t.Error("the sender's calls succeeded")
					case errors.As(err, &re):
						if re.Side != "receiver" {
							t.Errorf("remote error from the %s", re.Side)
						}
					case !errors.Is(err, core.ErrPeerGone):
						t.Errorf("sender error %q is neither a RemoteError nor ErrPeerGone", err)
					}
				}
				if how == "cancel" && !errors.Is(res.err, context.Canceled) {
					t.Errorf("receiver: %v, want context.Canceled", res.err)
				}
				if re := (*core.RemoteError)(nil); how == "cancel" && !errors.As(o.closeErr, &re) {
					t.Errorf("Close returned %v, not the receiver's reason", o.closeErr)
				}
				if res.err == nil {
					t.Error("Receive succeeded")
				}
				goleak.VerifyNone(t)
			})
		}
	}
}

// TestReceiverNoticesSenderGone: when the sending end goes away in the
// middle of a transfer, Receive fails within 2 seconds with the sender's
// reason or ErrPeerGone.
func TestReceiverNoticesSenderGone(t *testing.T) {
	for _, tr := range hostileTransports {
		for _, how := range []string{"cancel", "crash"} {
			t.Run(tr.name+"/"+how, func(t *testing.T) {
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				run, _, td, out := peerGoneSetup(t, tr, ctx)
				gone := time.Now()
				if how == "cancel" {
					cancel()
				} else {
					td.cut()
				}
				var res result
				select {
				case res = <-run.done:
				case <-time.After(hostileBound):
					run.cancel()
					res = run.wait(t, nil)
					t.Errorf("Receive did not notice within %v", hostileBound)
				}
				if el := time.Since(gone); el > 2*time.Second {
					t.Errorf("Receive took %v to notice", el)
				}
				var o sendOutcome
				select {
				case o = <-out:
				case <-time.After(hostileBound):
					t.Fatalf("the sender did not stop within %v", hostileBound)
				}
				t.Logf("receiver: %v; sender: %v; close: %v", res.err, o.sendErr, o.closeErr)
				var re *core.RemoteError
				switch {
				case res.err == nil:
					t.Error("Receive succeeded")
				case errors.As(res.err, &re):
					if re.Side != "sender" {
						t.Errorf("remote error from the %s", re.Side)
					}
				case !errors.Is(res.err, core.ErrPeerGone):
					t.Errorf("receiver error %q is neither a RemoteError nor ErrPeerGone", res.err)
				}
				if how == "cancel" && !errors.Is(o.closeErr, context.Canceled) {
					t.Errorf("Close: %v, want context.Canceled", o.closeErr)
				}
				if o.closeErr == nil {
					t.Error("Close succeeded")
				}
				goleak.VerifyNone(t)
			})
		}
	}
}

func zstdMethod() sdk.Method {
	m, _ := builtin.Methods().Lookup("zstd")
	return m
}
