package engine

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pagewire/pagewire/core/wire"
	"github.com/pagewire/pagewire/internal/delta"
	"github.com/pagewire/pagewire/sdk"
)

// Receiver is the receiving end of transfers. Create it with
// [NewReceiver] and run one transfer per [Receiver.Receive] call.
type Receiver struct {
	cfg ReceiverConfig

	ctlBytes atomic.Uint64 // control channel bytes after the hello
	ctlZero  atomic.Uint64 // zero pages received on the control channel
	ctlDevs  atomic.Uint64 // empty device-state blobs on the control channel

	mu      sync.Mutex // guards the fields below for Stats
	dialect Dialect
	chans   []*recvChan
	method  string
	ps      int
	start   time.Time
	elapsed time.Duration
}

// NewReceiver returns a receiver with the given configuration.
func NewReceiver(cfg ReceiverConfig) *Receiver {
	return &Receiver{cfg: cfg.withDefaults()}
}

// transfer is the state of one Receive call.
type transfer struct {
	r   *Receiver
	cfg *ReceiverConfig
	ctx context.Context
	// failPath holds the listener, the connections and the first error
	// (ln, ctl, conns, err under its mu, cancel).
	failPath

	hello   wire.Hello
	method  sdk.Method
	info    sdk.Info
	mem     Memory
	blocks  map[string]*dstBlock
	chans   []*recvChan
	bar     barrier
	ctlSync uint64
	end     wire.End
	gotEnd  bool

	// unsorted are the connections not yet classified (under mu): the
	// handshake closes them once the transfer has all its channels.
	// strays counts the ones that were not the transfer's, lastStray is
	// the last of them.
	unsorted  map[net.Conn]bool
	strays    int
	lastStray *strayError

	// progress is when a packet or message last arrived, or a hook
	// last returned (unix ns); hooking counts hooks running. A Timeout
	// bounds a stall of the whole transfer, not the idleness of one
	// connection (see readStart).
	progress atomic.Int64
	hooking  atomic.Int32
	running  atomic.Bool // the handshake is done; it bounds the wait before

	wg      *sync.WaitGroup // the transfer's goroutines (pagewire's protocol)
	ctlDone chan struct{}   // closed when readControl has returned

	// detect, while not nil, is where the method is looked up by the
	// first packet with pages (see decide); methodMu orders that.
	detect   Methods
	methodMu sync.Mutex

	// lead is the transfer's lead channel: pagewire's control channel
	// (ctl) or a QEMU source's main stream (main). fmt is what the
	// packets may hold, which the lead's handshake decides.
	lead recvLead
	fmt  packetFormat
	main net.Conn

	// onSync is the OnSync hook, and mainChunk (QEMU) what its Main is.
	onSync    func(*SyncPoint) error
	mainChunk func() []byte
	onPages   func(block string, offs []uint64)
	ctlLanded []uint64 // the control channel's zero pages, for onPages

	// recvs are the method's receiving ends, one per channel, set up
	// before the first channel connects (newReceivers).
	recvs []sdk.Receiver
}

type recvChan struct {
	id      int
	t       *transfer
	conn    net.Conn
	m       sdk.Receiver
	inPlace InPlaceReceiver // m, if it is one
	seq     uint64
	ctr     counters
	decided bool // the transfer's method is known to this channel (see decide)

	hdr     []byte
	rh      wire.RAM
	payload []byte
	blob    []byte
	sp      sdk.Packet
	mine    []bool   // per normal page of the packet: this channel claimed it
	landed  []uint64 // pages this packet wrote, for OnPages
	scratch []byte   // where pages another channel claimed are decoded
	dpage   []byte   // where a delta page is rebuilt before it is written
	wbuf    []byte   // raw pages on their way to the block's file (dstBlock.file)
}

var errFinished = errors.New("transfer finished")

type arrival struct {
	conn net.Conn
	lead bool // the lead channel; its magic has been read
	init wire.Init
}

// recvLead is a receiving transfer's lead channel: pagewire's control
// channel ([ctlLead]) or a QEMU source's main stream (qemuLead). The
// handshake hands it the lead connection; until it has set the transfer
// up (t.chans), multifd channels wait.
type recvLead interface {
	// magic is the lead connection's first four bytes; name names it.
	magic() uint32
	name() string
	// accept sets the transfer up from the lead connection.
	accept(t *transfer, conn net.Conn) error
	// missing says what did not connect within the handshake timeout.
	missing(t *transfer, got int) error
}

// packetFormat is what a transfer's multifd packets may hold.
type packetFormat struct {
	// staleSize: a packet without pages may carry a stale
	// next_packet_size and no payload (QEMU 7.2's source).
	staleSize bool
	// maxPayload bounds a packet's compressed payload.
	maxPayload int
}

// ctlLead is pagewire's control channel: the sender's hello sets the
// transfer up.
type ctlLead struct{}

func (ctlLead) magic() uint32 { return wire.ControlMagic }
func (ctlLead) name() string  { return "control channel" }

func (ctlLead) accept(t *transfer, conn net.Conn) error {
	t.setLead(conn, true)
	if err := t.readHello(); err != nil {
		return err
	}
	// From here on the control channel is read, also while the multifd
	// channels connect: a sender that fails now (its method's setup
	// after the accept) is heard at once, not at the handshake timeout.
	t.ctlDone = make(chan struct{})
	t.progressed()
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		defer close(t.ctlDone)
		if err := t.readControl(); err != nil {
			t.fail(err)
		}
	}()
	return nil
}

func (ctlLead) missing(t *transfer, got int) error {
	if t.ctl == nil {
		return &ChannelError{Channel: -1, Err: fmt.Errorf("%w: no control channel within %v", ErrBadHandshake, t.cfg.HandshakeTimeout)}
	}
	return &ChannelError{Channel: -1, Err: fmt.Errorf("%w: %d of %d channels connected within %v", ErrBadHandshake, got, t.hello.Channels, t.cfg.HandshakeTimeout)}
}

// strayError is a connection that is not one of the transfer's: it sent
// nothing, or something that is no channel of this kind of transfer.
type strayError struct {
	addr net.Addr
	err  error
}

func (e *strayError) Error() string { return fmt.Sprintf("connection from %v: %v", e.addr, e.err) }
func (e *strayError) Unwrap() error { return e.err }

// describeMagic says what a connection's first four bytes look like.
func describeMagic(b []byte) string {
	switch {
	case b[0] == 0x16 && b[1] == 0x03:
		return "a TLS handshake, where this end expects no TLS"
	case string(b) == "GET " || string(b) == "POST" || string(b) == "HEAD" || string(b) == "PUT " || string(b) == "HTTP":
		return fmt.Sprintf("HTTP (%q)", b)
	case b[0] >= 0x20 && b[0] < 0x7f && b[1] >= 0x20 && b[1] < 0x7f && b[2] >= 0x20 && b[2] < 0x7f && b[3] >= 0x20 && b[3] < 0x7f:
		return fmt.Sprintf("unknown magic %q", b)
	}
	return fmt.Sprintf("unknown magic %#08x", be.Uint32(b))
}

// progressed records that the transfer moved on (see readStart).
func (t *transfer) progressed() {
	if t.cfg.Timeout > 0 {
		t.progress.Store(time.Now().UnixNano())
	}
}

// enterHook and leaveHook bracket a hook: the time it runs is no stall
// (see readStart). Without a Timeout nobody reads the count, and the
// channels do not share a counter per packet for nothing.
func (t *transfer) enterHook() {
	if t.cfg.Timeout > 0 {
		t.hooking.Add(1)
	}
}

func (t *transfer) leaveHook() {
	if t.cfg.Timeout > 0 {
		t.hooking.Add(-1)
		t.progressed()
	}
}

// readStart reads b, the start of a packet or message, from conn. With
// a Timeout, the read may wait as long as the transfer as a whole makes
// progress (another channel's packets, the control channel's messages,
// a hook that runs), and fails once nothing has moved for Timeout; the
// rest of the packet or message must then follow within Timeout (the
// deadline set here stays).
func (t *transfer) readStart(conn net.Conn, b []byte) (int, error) {
	if t.cfg.Timeout <= 0 {
		return io.ReadFull(conn, b)
	}
	n := 0
	for {
		conn.SetReadDeadline(time.Now().Add(t.cfg.Timeout))
		m, err := io.ReadFull(conn, b[n:])
		n += m
		if err == nil || !errors.Is(err, os.ErrDeadlineExceeded) || t.ctx.Err() != nil {
			return n, err
		}
		if m > 0 {
			t.progressed()
		}
		idle := time.Since(time.Unix(0, t.progress.Load()))
		if t.running.Load() && t.hooking.Load() == 0 && idle >= t.cfg.Timeout {
			return n, fmt.Errorf("nothing arrived for %v: %w", idle.Round(time.Millisecond), err)
		}
	}
}

// errReader returns its error (io.EOF for none), after the bytes of a
// message's start: the reason that start was cut short.
type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) {
	if r.err == nil {
		return 0, io.EOF
	}
	return 0, r.err
}

// transferKinds names the kinds of transfer by their lead's magic, for
// a connection that opens with another kind's.
var transferKinds = map[uint32]string{
	wire.ControlMagic:  "a pagewire transfer (PGWR)",
	wire.QEMUFileMagic: "a QEMU migration stream (QEVM)",
}

// Receive runs one transfer: it accepts the control channel and the
// multifd channels from ln (in any order), checks every handshake, applies
// pages to the destination until the sender ends the transfer, and
// confirms to the sender that every page landed. It returns the
// destination memory. Receive closes ln once every channel is connected
// or the transfer failed; it returns only after every goroutine it
// started has returned and every connection is closed.
func (r *Receiver) Receive(ctx context.Context, ln net.Listener) (Memory, error) {
	t := &transfer{r: r, cfg: &r.cfg, failPath: failPath{side: "receiver", ln: ln}, lead: ctlLead{}, onSync: r.cfg.OnSync, onPages: r.cfg.OnPages}
	var wg sync.WaitGroup
	t.wg = &wg
	defer t.closeReceivers() // after every goroutine has stopped
	defer t.begin(ctx, &wg)()

	r.ctlBytes.Store(0)
	r.ctlZero.Store(0)
	r.ctlDevs.Store(0)
	if err := t.handshake(&wg); err != nil {
		t.fail(err)
		return nil, t.failure()
	}
	r.mu.Lock()
	r.chans, r.method, r.ps, r.start, r.elapsed = t.chans, t.info.Name, t.hello.PageSize, time.Now(), 0
	r.dialect = Dialect10
	if t.hello.ZeroOnControl {
		r.dialect = Dialect72
	}
	r.mu.Unlock()

	t.progressed()
	t.running.Store(true)
	for _, c := range t.chans {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.loop(); err != nil {
				t.fail(err)
			}
		}()
	}
	<-t.ctlDone // the control reader started with the hello
	wg.Wait()
	t.closeReceivers()
	r.mu.Lock()
	r.elapsed = time.Since(r.start)
	r.mu.Unlock()
	if err := t.failure(); err != nil {
		return nil, err
	}
	if err := t.checkEnd(); err != nil {
		t.fail(err)
		return nil, err
	}
	if t.cfg.Finish != nil {
		if err := t.cfg.Finish(t.mem); err != nil {
			err = fmt.Errorf("finishing the destination: %w", err)
			t.fail(err)
			return nil, err
		}
	}
	t.ctl.SetWriteDeadline(time.Now().Add(time.Second))
	if err := wire.WriteMessage(t.ctl, wire.MsgDone, nil); err != nil {
		// Everything landed; only the sender's confirmation is lost.
		return t.mem, &ChannelError{Channel: -1, Err: fmt.Errorf("%w: confirming the end: %w", ErrPeerGone, err)}
	}
	return t.mem, nil
}

// begin ties the transfer to the caller's ctx. The returned func ends
// it: it closes every connection, stops the transfer's goroutines (those
// counted in wg) and waits for them.
func (t *transfer) begin(ctx context.Context, wg *sync.WaitGroup) (end func()) {
	t.ctx, t.cancel = context.WithCancelCause(context.Background())
	watch := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(watch)
		t.fail(context.Cause(ctx))
	})
	return func() {
		t.closeConns()
		t.cancel(errFinished)
		wg.Wait()
		if !stop() {
			<-watch
		}
	}
}

// Stats returns the statistics of the running or last transfer. It may be
// called from any goroutine.
func (r *Receiver) Stats() Stats {
	r.mu.Lock()
	cs := make([]*counters, len(r.chans))
	for i, c := range r.chans {
		cs[i] = &c.ctr
	}
	el := r.elapsed
	if el == 0 && !r.start.IsZero() {
		el = time.Since(r.start)
	}
	method, ps, dialect := r.method, r.ps, r.dialect
	r.mu.Unlock()
	st := collect(method, ps, el, cs)
	st.ControlBytes = r.ctlBytes.Load()
	st.ZeroPages += r.ctlZero.Load()
	st.DeviceStates += r.ctlDevs.Load()
	st.Dialect = string(dialect)
	return st
}

// handshake accepts connections until the lead channel and every
// multifd channel are there, within the handshake timeout. Multifd
// channels that come before the lead has set the transfer up wait.
func (t *transfer) handshake(wg *sync.WaitGroup) error {
	arrivals := make(chan arrival)
	wg.Add(1)
	go func() {
		defer wg.Done()
		t.accept(wg, arrivals)
	}()
	defer t.ln.Close()
	timer := time.NewTimer(t.cfg.HandshakeTimeout)
	defer timer.Stop()

	var pending []arrival
	led, got := false, 0
	for !led || t.chans == nil || got < len(t.chans) {
		select {
		case a := <-arrivals:
			if a.lead {
				if led {
					return &ChannelError{Channel: -1, Err: fmt.Errorf("%w: a second %s", ErrBadHandshake, t.lead.name())}
				}
				led = true
				if err := t.lead.accept(t, a.conn); err != nil {
					return err
				}
			} else {
				pending = append(pending, a)
			}
			if t.chans == nil {
				continue
			}
			for _, a := range pending {
				if err := t.addChannel(a); err != nil {
					return err
				}
				got++
			}
			pending = pending[:0]
		case <-timer.C:
			err := t.lead.missing(t, got)
			t.mu.Lock()
			if t.strays > 0 {
				err = fmt.Errorf("%w; dropped %d connection(s) that were not this transfer's, the last: %v", err, t.strays, t.lastStray)
			}
			t.mu.Unlock()
			return err
		case <-t.ctx.Done():
			return t.failure()
		}
	}
	// Every channel is here: what has not said what it is yet is no
	// channel of this transfer.
	t.mu.Lock()
	for c := range t.unsorted {
		c.Close()
	}
	t.mu.Unlock()
	return nil
}

// accept classifies each new connection by its first bytes.
func (t *transfer) accept(wg *sync.WaitGroup, arrivals chan<- arrival) {
	for {
		conn, err := t.ln.Accept()
		if err != nil {
			if t.ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				t.fail(fmt.Errorf("accept: %w", err))
			}
			return
		}
		t.mu.Lock()
		if t.err != nil {
			t.mu.Unlock()
			conn.Close()
			return
		}
		t.conns = append(t.conns, conn)
		if t.unsorted == nil {
			t.unsorted = make(map[net.Conn]bool)
		}
		t.unsorted[conn] = true
		t.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, err := t.classify(conn)
			t.mu.Lock()
			delete(t.unsorted, conn)
			t.mu.Unlock()
			var stray *strayError
			if errors.As(err, &stray) {
				// Not a connection of this transfer: a probe, a port
				// scan, a peer of another kind. It delays and fails
				// nothing; the handshake's timeout names it.
				conn.Close()
				t.mu.Lock()
				t.strays++
				t.lastStray = stray
				t.mu.Unlock()
				return
			}
			if err != nil {
				t.fail(err)
				return
			}
			select {
			case arrivals <- a:
			case <-t.ctx.Done():
			}
		}()
	}
}

func (t *transfer) classify(conn net.Conn) (arrival, error) {
	conn.SetReadDeadline(time.Now().Add(t.cfg.HandshakeTimeout))
	var b [wire.InitSize]byte
	if _, err := io.ReadFull(conn, b[:4]); err != nil {
		return arrival{}, &strayError{conn.RemoteAddr(), fmt.Errorf("%w: sent no magic: %w", ErrBadHandshake, err)}
	}
	switch m := be.Uint32(b[:]); m {
	case t.lead.magic():
		conn.SetReadDeadline(time.Time{})
		return arrival{conn: conn, lead: true}, nil
	case wire.Magic:
		if _, err := io.ReadFull(conn, b[4:]); err != nil {
			return arrival{}, &ChannelError{Channel: -1, Err: fmt.Errorf("%w: truncated channel handshake: %w", ErrBadHandshake, err)}
		}
		var init wire.Init
		if err := init.UnmarshalBinary(b[:]); err != nil {
			return arrival{}, &ChannelError{Channel: int(b[24]), Err: err}
		}
		conn.SetReadDeadline(time.Time{})
		return arrival{conn: conn, init: init}, nil
	default:
		if b[0] == 0x16 && b[1] == 0x03 && t.lead.magic() == wire.ControlMagic {
			// A TLS sender on a plaintext receiver: an answer that is no
			// TLS record makes its handshake fail at once.
			conn.SetWriteDeadline(time.Now().Add(errorGrace))
			wire.WriteMessage(conn, wire.MsgError, wire.AppendError(nil, "receiver: this receiver does not use TLS", nil))
		}
		if kind, ok := transferKinds[m]; ok {
			return arrival{}, &strayError{conn.RemoteAddr(), fmt.Errorf("%w: %s, not %s", ErrBadHandshake, kind, transferKinds[t.lead.magic()])}
		}
		return arrival{}, &strayError{conn.RemoteAddr(), fmt.Errorf("%w: %s", ErrBadHandshake, describeMagic(b[:4]))}
	}
}

// readHello reads and checks the sender's parameters, sets up the
// destination and the method, and answers accept or error.
func (t *transfer) readHello() error {
	t.ctl.SetReadDeadline(time.Now().Add(t.cfg.HandshakeTimeout))
	typ, body, err := wire.ReadMessage(t.ctl, nil)
	if err == nil && typ != wire.MsgHello {
		err = fmt.Errorf("%w: message %#x instead of hello", ErrBadControl, typ)
	}
	if err == nil {
		err = t.hello.UnmarshalBinary(body)
	}
	if err != nil {
		return &ChannelError{Channel: -1, Err: err}
	}
	t.ctl.SetReadDeadline(time.Time{})
	if err := t.setup(); err != nil {
		return &ChannelError{Channel: -1, Err: err}
	}
	if err := t.newReceivers(); err != nil {
		return err
	}
	t.ctl.SetWriteDeadline(time.Now().Add(t.cfg.HandshakeTimeout))
	if err := wire.WriteMessage(t.ctl, wire.MsgAccept, nil); err != nil {
		return &ChannelError{Channel: -1, Err: fmt.Errorf("%w: %w", ErrPeerGone, err)}
	}
	t.ctl.SetWriteDeadline(time.Time{})
	return nil
}

func (t *transfer) setup() error {
	h, cfg := &t.hello, t.cfg
	if h.UUID != cfg.UUID {
		return fmt.Errorf("%w: sender's uuid %x, want %x", ErrBadHandshake, h.UUID, cfg.UUID)
	}
	if cfg.Channels != 0 && h.Channels != cfg.Channels {
		return fmt.Errorf("%w: sender uses %d channels, receiver expects %d", ErrBadHandshake, h.Channels, cfg.Channels)
	}
	if cfg.Method != nil {
		info := cfg.Method.Info()
		if h.Method != info.Name || h.MethodFlag != info.Flag {
			return fmt.Errorf("%w: sender uses %s (flag %#x), receiver expects %s (flag %#x)", ErrMethodMismatch, h.Method, h.MethodFlag, info.Name, info.Flag)
		}
		t.method = cfg.Method
	} else {
		m, err := cfg.Methods.Lookup(h.Method)
		if err != nil {
			return fmt.Errorf("%w: sender uses %s, which this receiver does not have (it has %s)", ErrMethodMismatch, h.Method, strings.Join(cfg.Methods.Names(), ", "))
		}
		if f := m.Info().Flag; f != h.MethodFlag {
			return fmt.Errorf("%w: sender's %s has flag %#x, this receiver's has %#x", ErrMethodMismatch, h.Method, h.MethodFlag, f)
		}
		t.method = m
	}
	t.info = t.method.Info()
	t.fmt = packetFormat{maxPayload: sdk.MaxPayload(h.PacketPages, h.PageSize)}

	// Only memory made for this transfer is trusted to start as zeros.
	mem, fresh := cfg.Memory, false
	if mem == nil {
		var err error
		if mem, err = cfg.Alloc(h.Blocks); err != nil {
			return fmt.Errorf("destination: %w", err)
		}
		fresh = zeroed(mem)
	}
	have := make(map[string]Block)
	for _, b := range mem.Blocks() {
		have[b.Name] = b
	}
	t.blocks = make(map[string]*dstBlock, len(h.Blocks))
	for _, b := range h.Blocks {
		dst, ok := have[b.Name]
		if !ok {
			return fmt.Errorf("%w: destination has no block %q", ErrBadHandshake, b.Name)
		}
		if uint64(len(dst.Data)) != b.Size {
			return fmt.Errorf("%w: block %q: sender has %d bytes, destination %d", ErrBadHandshake, b.Name, b.Size, len(dst.Data))
		}
		t.blocks[b.Name] = blockOf(dst, h.PageSize, fresh)
		if t.onSync != nil && t.onPages == nil {
			t.blocks[b.Name].track()
		}
	}
	t.mem = mem
	t.chans = make([]*recvChan, h.Channels)
	members := h.Channels
	if h.ZeroOnControl {
		members++ // the control channel's zero pages are ordered by the syncs too
	}
	t.bar.init(members, t.syncPoint)
	return nil
}

// addChannel checks a multifd channel's handshake against the transfer
// and sets up its method state.
func (t *transfer) addChannel(a arrival) error {
	id := int(a.init.ID)
	if err := a.init.Check(t.hello.UUID, t.hello.Channels); err != nil {
		return &ChannelError{Channel: id, Err: err}
	}
	if t.chans[id] != nil {
		return &ChannelError{Channel: id, Err: fmt.Errorf("%w: channel %d connected twice", ErrBadHandshake, id)}
	}
	h := &t.hello
	c := &recvChan{id: id, t: t, conn: a.conn, m: t.recvs[id]}
	c.inPlace, _ = c.m.(InPlaceReceiver)
	c.hdr = make([]byte, max(wire.RAMHeaderSize(h.PacketPages), wire.DeviceStateSize))
	c.rh.Offsets = make([]uint64, 0, h.PacketPages)
	c.sp.Pages = make([][]byte, 0, h.PacketPages)
	t.chans[id] = c
	return nil
}

// newReceivers sets up the method's receiving end of every channel, so
// that a plugin's setup (a Wasm instance, a channel in a plugin process)
// fails before the transfer is accepted and does not hold up the first
// packets.
func (t *transfer) newReceivers() error {
	h := &t.hello
	opts := methodOptions(t.cfg.Level, h.PageSize, h.PacketPages)
	t.recvs = make([]sdk.Receiver, h.Channels)
	for i := range t.recvs {
		m, err := t.method.NewReceiver(i, opts)
		if err != nil {
			return &ChannelError{Channel: i, Err: fmt.Errorf("%w: %s recv setup: %w", ErrMethod, t.info.Name, err)}
		}
		t.recvs[i] = m
		if st, ok := m.(Stopper); ok {
			context.AfterFunc(t.ctx, st.Stop) // t.ctx ends with the transfer
		}
	}
	return nil
}

// decide makes sure the transfer's method is known before this channel
// uses it. A transfer that detects its method (a QEMU source, whose
// method nothing on the wire announces) takes it from the first packet
// with pages on any channel, whose flags name it; every channel comes
// here, under methodMu, before it first reads t.method or t.info.
func (c *recvChan) decide(flag uint32) error {
	t := c.t
	t.methodMu.Lock()
	defer t.methodMu.Unlock()
	if t.detect != nil {
		m, err := methodByFlag(t.detect, flag)
		if err != nil {
			return c.errf("%w: %w", ErrMethodMismatch, err)
		}
		t.detect = nil
		old := t.recvs
		t.method, t.info = m, m.Info()
		if err := t.newReceivers(); err != nil {
			t.recvs = old // closed with the rest
			return err
		}
		for _, r := range old {
			if r != nil {
				r.Close() // the detecting method's: never used
			}
		}
		t.r.mu.Lock()
		t.r.method = t.info.Name
		t.r.mu.Unlock()
	}
	c.m = t.recvs[c.id]
	c.inPlace, _ = c.m.(InPlaceReceiver)
	c.decided = true
	return nil
}

// methodByFlag finds the method of ms whose wire flag is flag.
func methodByFlag(ms Methods, flag uint32) (sdk.Method, error) {
	for _, name := range ms.Names() {
		if m, err := ms.Lookup(name); err == nil && m.Info().Flag == flag {
			return m, nil
		}
	}
	return nil, fmt.Errorf("packet flags %#x name no method of %s", flag, strings.Join(ms.Names(), ", "))
}

// closeReceivers closes the method's receiving ends, those of channels
// that never connected too. Nothing may use them any more.
func (t *transfer) closeReceivers() {
	for i, m := range t.recvs {
		if m != nil {
			m.Close()
			t.recvs[i] = nil
		}
	}
}

// readControl follows the sender's control messages until the end.
func (t *transfer) readControl() error {
	var buf []byte
	for {
		var in io.Reader = t.ctl
		if t.cfg.Timeout > 0 {
			// The control channel is idle between sync points: wait for
			// a message's first bytes as long as the transfer progresses.
			var h [5]byte
			n, err := t.readStart(t.ctl, h[:])
			in = io.MultiReader(bytes.NewReader(h[:n]), t.ctl)
			if err != nil {
				in = io.MultiReader(bytes.NewReader(h[:n]), errReader{err})
			}
		}
		typ, body, err := wire.ReadMessage(in, buf)
		t.progressed()
		switch {
		case err != nil && t.ctx.Err() != nil:
			return nil
		case err == io.EOF:
			return &ChannelError{Channel: -1, Err: fmt.Errorf("%w: sender closed the control channel before the end of the transfer", ErrPeerGone)}
		case errors.Is(err, ErrBadControl) && !errors.Is(err, io.ErrUnexpectedEOF):
			return &ChannelError{Channel: -1, Err: err}
		case errors.Is(err, os.ErrDeadlineExceeded):
			return &ChannelError{Channel: -1, Err: fmt.Errorf("stalled: %w", err)}
		case err != nil:
			return &ChannelError{Channel: -1, Err: fmt.Errorf("%w: %w", ErrPeerGone, err)}
		}
		buf = body
		t.r.ctlBytes.Add(uint64(5 + len(body)))
		switch typ {
		case wire.MsgSync:
			if len(body) != 8 || be.Uint64(body) != t.ctlSync+1 {
				return &ChannelError{Channel: -1, Err: fmt.Errorf("%w: sync marker %x, want %d", ErrBadControl, body, t.ctlSync+1)}
			}
			t.ctlSync++
			if t.hello.ZeroOnControl {
				if err := t.bar.wait(t.ctx); err != nil {
					if t.ctx.Err() != nil {
						return nil
					}
					return &ChannelError{Channel: -1, Err: fmt.Errorf("%w: %w", ErrBadControl, err)}
				}
			}
		case wire.MsgZero:
			if err := t.zeroPages(body); err != nil {
				return &ChannelError{Channel: -1, Err: err}
			}
		case wire.MsgDevice:
			idstr, instance, err := wire.ParseDevice(body)
			if err != nil {
				return &ChannelError{Channel: -1, Err: err}
			}
			t.r.ctlDevs.Add(1)
			if t.cfg.OnDeviceState != nil {
				if err := t.cfg.OnDeviceState(idstr, instance, nil); err != nil {
					return &ChannelError{Channel: -1, Err: fmt.Errorf("device state %q instance %d: %w", idstr, instance, err)}
				}
			}
		case wire.MsgEnd:
			if err := t.end.UnmarshalBinary(body); err != nil {
				return &ChannelError{Channel: -1, Err: err}
			}
			t.gotEnd = true
			return nil
		case wire.MsgError:
			return remoteError("sender", body)
		default:
			return &ChannelError{Channel: -1, Err: fmt.Errorf("%w: unexpected message %#x from the sender", ErrBadControl, typ)}
		}
	}
}

// syncPoint runs when every member has reached a sync point and waits
// there: the OnSync hook, then a new interval.
func (t *transfer) syncPoint() {
	if t.onSync != nil {
		p := &SyncPoint{N: t.bar.passed.Load() + 1, t: t}
		if t.mainChunk != nil {
			p.main = t.mainChunk()
		}
		t.enterHook()
		err := t.onSync(p)
		t.leaveHook()
		if err != nil {
			t.fail(fmt.Errorf("sync point %d: %w", p.N, err))
		}
	}
	t.resetClaims()
}

// resetClaims starts a new sync interval: every page may be written again.
func (t *transfer) resetClaims() {
	for _, b := range t.blocks {
		b.reset()
	}
}

// zeroPages applies a zero-pages message (QEMU 7.2 dialect).
func (t *transfer) zeroPages(body []byte) error {
	if !t.hello.ZeroOnControl {
		return fmt.Errorf("%w: zero pages on the control channel in the QEMU 10.0 dialect", ErrBadControl)
	}
	name, offs, err := wire.ParseZero(body)
	if err != nil {
		return err
	}
	blk, ok := t.blocks[string(name)]
	if !ok {
		return fmt.Errorf("%w: zero pages of unknown block %q", ErrBadControl, name)
	}
	ps := uint64(t.hello.PageSize)
	n := len(offs) / 8
	for i := range n {
		off := wire.ZeroOffset(offs, i)
		if off%ps != 0 || off >= uint64(len(blk.data)) {
			return fmt.Errorf("%w: zero page at %#x of block %q (%d bytes): not page aligned or beyond the block", ErrBadControl, off, name, len(blk.data))
		}
		claimed := blk.claimZero(off)
		blk.mark(off)
		if claimed && t.onPages != nil {
			t.ctlLanded = append(t.ctlLanded, off)
		}
	}
	t.r.ctlZero.Add(uint64(n))
	if len(t.ctlLanded) > 0 {
		t.enterHook()
		t.onPages(blk.name, t.ctlLanded)
		t.leaveHook()
		t.ctlLanded = t.ctlLanded[:0]
	}
	return nil
}

// checkEnd compares what the sender says it sent with what arrived.
func (t *transfer) checkEnd() error {
	var packets uint64
	for _, c := range t.chans {
		packets += c.ctr.packets.Load()
		if s := c.ctr.syncs.Load(); s != t.end.Syncs {
			return &ChannelError{Channel: c.id, Packet: c.seq, Err: fmt.Errorf("%w: %d SYNCs on this channel, sender sent %d", ErrBadPacket, s, t.end.Syncs)}
		}
	}
	switch {
	case t.ctlSync != t.end.Syncs:
		return &ChannelError{Channel: -1, Err: fmt.Errorf("%w: %d sync markers, sender sent %d", ErrBadControl, t.ctlSync, t.end.Syncs)}
	case packets != t.end.Packets:
		return &ChannelError{Channel: -1, Err: fmt.Errorf("%w: %d packets arrived, sender sent %d", ErrBadPacket, packets, t.end.Packets)}
	}
	return nil
}

func (c *recvChan) errf(format string, args ...any) error {
	return &ChannelError{Channel: c.id, Packet: c.seq, Err: fmt.Errorf(format, args...)}
}

// loop reads packets until the sender closes the channel at a packet
// boundary.
func (c *recvChan) loop() error {
	t := c.t
	for {
		if t.ctx.Err() != nil {
			// The transfer failed: a SYNC no longer holds this channel
			// back, so applying more packets could race with an older copy.
			return nil
		}
		c.seq++
		_, err := t.readStart(c.conn, c.hdr[:wire.PrefixSize])
		if err == io.EOF {
			if err := t.bar.leave(); err != nil {
				// The sender closed this channel without its SYNC: it is
				// gone (a crash closes channels in any order).
				return c.errf("%w: %v", ErrPeerGone, err)
			}
			c.seq--
			return nil
		}
		if err != nil {
			return c.readErr(err)
		}
		var p wire.Prefix
		if err := p.UnmarshalBinary(c.hdr[:wire.PrefixSize]); err != nil {
			return c.errf("%w", err)
		}
		if p.DeviceState() {
			err = c.deviceState()
		} else {
			err = c.ram()
		}
		if err != nil {
			return err
		}
		t.progressed()
	}
}

func (c *recvChan) readErr(err error) error {
	if c.t.ctx.Err() != nil {
		return nil // the transfer is already failing; the first error wins
	}
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return c.errf("%w: stream ends inside a packet", ErrPeerGone)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return c.errf("stalled: %w", err) // not a hang-up: the peer is there
	}
	return c.errf("%w: %w", ErrPeerGone, err)
}

func (c *recvChan) ram() error {
	t := c.t
	pp, ps := t.hello.PacketPages, t.hello.PageSize
	hsize := wire.RAMHeaderSize(pp)
	if _, err := io.ReadFull(c.conn, c.hdr[wire.PrefixSize:hsize]); err != nil {
		return c.readErr(err)
	}
	rh := &c.rh
	if err := rh.UnmarshalBinary(c.hdr[:hsize], pp); err != nil {
		return c.errf("%w", err)
	}
	normal, n := int(rh.NormalPages), int(rh.NormalPages+rh.ZeroPages)
	if rh.ZeroPages > 0 && t.hello.ZeroOnControl {
		return c.errf("%w: %d zero pages in a packet of a QEMU 7.2 dialect transfer", ErrBadPacket, rh.ZeroPages)
	}
	if n == 0 {
		// QEMU 7.2 leaves a stale next_packet_size in packets without
		// pages and reads no payload for them.
		if rh.NextPacketSize != 0 && !t.fmt.staleSize {
			return c.errf("%w: %d payload bytes in a packet without pages", ErrBadPacket, rh.NextPacketSize)
		}
	} else {
		if !c.decided {
			if err := c.decide(rh.Flags & wire.FlagMethodMask); err != nil {
				return err
			}
		}
		if f := rh.Flags & wire.FlagMethodMask; f != t.info.Flag {
			return c.errf("%w: packet flags %#x, method %s has %#x", ErrMethodMismatch, f, t.info.Name, t.info.Flag)
		}
		blk, ok := t.blocks[string(rh.Block)]
		if !ok {
			return c.errf("%w: unknown block %q", ErrBadPacket, rh.Block)
		}
		data := blk.data
		for _, off := range rh.Offsets {
			if off%uint64(ps) != 0 {
				return c.errf("%w: offset %#x in block %q is not page aligned", ErrBadPacket, off, rh.Block)
			}
			if off >= uint64(len(data)) {
				return c.errf("%w: offset %#x beyond block %q of %d bytes", ErrBadPacket, off, rh.Block, len(data))
			}
		}
		c.landed = c.landed[:0]
		for _, off := range rh.Offsets[normal:] {
			if !blk.claimZero(off) {
				continue // another channel wrote it in this interval
			}
			if t.onPages != nil {
				c.landed = append(c.landed, off)
			}
		}
		if blk.fwd != nil {
			for _, off := range rh.Offsets {
				blk.mark(off)
			}
		}
		isDelta := rh.Flags&wire.FlagDelta != 0
		switch {
		case isDelta && !t.hello.Delta:
			return c.errf("%w: a delta packet in a transfer that did not offer delta pages", ErrBadPacket)
		case isDelta && (normal == 0 || rh.ZeroPages != 0):
			return c.errf("%w: a delta packet of %d normal and %d zero pages", ErrBadPacket, normal, rh.ZeroPages)
		case isDelta:
			if err := c.deltaInto(blk, rh.Offsets); err != nil {
				return err
			}
			c.ctr.delta.Add(uint64(normal))
		default:
			if err := c.payloadInto(blk, rh.Offsets[:normal]); err != nil {
				return err
			}
		}
		if t.onPages != nil {
			// Only the pages this channel wrote: a page another channel
			// claimed may still be being written there.
			for i, off := range rh.Offsets[:normal] {
				if c.mine[i] {
					c.landed = append(c.landed, off)
				}
			}
			t.enterHook()
			t.onPages(blk.name, c.landed)
			t.leaveHook()
		}
		c.ctr.packets.Add(1)
		c.ctr.normal.Add(uint64(normal))
		c.ctr.zero.Add(uint64(n - normal))
	}
	if n > 0 || !t.fmt.staleSize {
		c.ctr.wire.Add(uint64(rh.NextPacketSize))
	}
	c.ctr.wire.Add(uint64(hsize))
	if rh.Flags&wire.FlagSync != 0 {
		c.ctr.syncs.Add(1)
		if err := t.bar.wait(t.ctx); err != nil {
			if t.ctx.Err() != nil {
				return nil
			}
			return c.errf("%w: %v", ErrBadPacket, err)
		}
	}
	return nil
}

// rawChunk bounds the buffer a channel reads raw pages into on their way
// to a file (dstBlock.file), whatever packet size the sender chose.
const rawChunk = 1 << 20

// runEnd returns the end (exclusive) of the run of pages starting at
// offs[i] that this channel claimed and that are adjacent in the block.
func (c *recvChan) runEnd(offs []uint64, i int, ps uint64) int {
	j := i + 1
	for j < len(offs) && offs[j] == offs[j-1]+ps && c.mine[j] {
		j++
	}
	return j
}

// payloadInto reads the packet's payload and has the method put the
// normal pages at offs into the block: into data, or through the block's
// file (dstBlock.file).
func (c *recvChan) payloadInto(blk *dstBlock, offs []uint64) error {
	t := c.t
	ps := uint64(t.hello.PageSize)
	size := c.rh.NextPacketSize
	data := blk.data
	if len(offs) == 0 {
		if size != 0 {
			return c.errf("%w: %d payload bytes for a packet of zero pages only", ErrBadPacket, size)
		}
		return nil
	}
	// Claim the pages; a page another channel already wrote since the
	// last SYNC goes to scratch (see dstBlock).
	c.mine = c.mine[:0]
	for _, off := range offs {
		c.mine = append(c.mine, blk.claimWrite(off))
	}
	if c.scratch == nil {
		c.scratch = make([]byte, ps)
	}
	if t.info.Raw {
		if uint64(size) != uint64(len(offs))*ps {
			return c.errf("%w: payload of %d bytes for %d pages of %d bytes", ErrBadPacket, size, len(offs), ps)
		}
		// Straight into destination memory, one read per run of pages.
		for i := 0; i < len(offs); {
			if !c.mine[i] {
				if _, err := io.ReadFull(c.conn, c.scratch); err != nil {
					return c.readErr(err)
				}
				i++
				continue
			}
			j := c.runEnd(offs, i, ps)
			if blk.file != nil {
				// Through the file (dstBlock.file): read the run into
				// this channel's buffer, at most rawChunk at a time, and
				// pwrite it.
				for at, end := offs[i], offs[j-1]+ps; at < end; {
					n := min(end-at, rawChunk)
					if uint64(cap(c.wbuf)) < n {
						c.wbuf = make([]byte, min(uint64(t.hello.PacketPages)*ps, rawChunk))
					}
					buf := c.wbuf[:n]
					if _, err := io.ReadFull(c.conn, buf); err != nil {
						return c.readErr(err)
					}
					if err := blk.writeAt(buf, at); err != nil {
						return c.errf("%w", err)
					}
					at += n
				}
				i = j
				continue
			}
			if _, err := io.ReadFull(c.conn, data[offs[i]:offs[j-1]+ps]); err != nil {
				return c.readErr(err)
			}
			i = j
		}
		return nil
	}
	if max := t.fmt.maxPayload; int(size) > max {
		return c.errf("%w: payload of %d bytes, at most %d", ErrBadPacket, size, max)
	}
	if size == 0 {
		return c.errf("%w: empty payload for %d pages", ErrBadPacket, len(offs))
	}
	var payload []byte
	if c.inPlace != nil {
		if b := c.inPlace.RecvBuffer(int(size)); len(b) == int(size) {
			payload = b
		}
	}
	if payload == nil {
		if cap(c.payload) < int(size) {
			c.payload = make([]byte, t.fmt.maxPayload)
		}
		payload = c.payload[:size]
	}
	if _, err := io.ReadFull(c.conn, payload); err != nil {
		return c.readErr(err)
	}
	// Into a file-backed block, the method decodes into this channel's
	// buffer and the pages go to the file with pwrite (dstBlock.file).
	viaFile := blk.file != nil
	if viaFile && cap(c.wbuf) < len(offs)*int(ps) {
		c.wbuf = make([]byte, uint64(t.hello.PacketPages)*ps)
	}
	c.sp.Pages = c.sp.Pages[:0]
	for i, off := range offs {
		switch {
		case !c.mine[i]:
			c.sp.Pages = append(c.sp.Pages, c.scratch)
		case viaFile:
			at := uint64(i) * ps
			c.sp.Pages = append(c.sp.Pages, c.wbuf[at:at+ps:at+ps])
		default:
			c.sp.Pages = append(c.sp.Pages, data[off:off+ps:off+ps])
		}
	}
	c.sp.Seq = c.seq
	if err := c.m.Recv(&c.sp, payload); err != nil {
		return c.errf("%w: %s: %w", ErrMethod, t.info.Name, err)
	}
	if !viaFile {
		return nil
	}
	// Runs of claimed pages, consecutive on the wire and in the block,
	// are consecutive in the buffer too: one pwrite each.
	for i := 0; i < len(offs); {
		if !c.mine[i] {
			i++
			continue
		}
		j := c.runEnd(offs, i, ps)
		if err := blk.writeAt(c.wbuf[uint64(i)*ps:uint64(j)*ps], offs[i]); err != nil {
			return c.errf("%w", err)
		}
		i = j
	}
	return nil
}

// deltaInto reads a delta packet's payload (the sender's appendDeltaPacket)
// and rebuilds each page at offs that this channel claims from the
// version it holds. A page that does not come out as the sender's crc32c
// says (its base is not the version this end holds) fails the transfer:
// never a silently wrong page. A page another channel wrote in this
// interval is skipped, as a second copy of a whole page is.
func (c *recvChan) deltaInto(blk *dstBlock, offs []uint64) error {
	t := c.t
	ps := t.hello.PageSize
	n, size := len(offs), int(c.rh.NextPacketSize)
	if size < 6*n || size > n*(6+deltaLimit(ps)) {
		return c.errf("%w: delta payload of %d bytes for %d pages", ErrBadPacket, size, n)
	}
	if cap(c.payload) < size {
		c.payload = make([]byte, t.fmt.maxPayload)
	}
	payload := c.payload[:size]
	if _, err := io.ReadFull(c.conn, payload); err != nil {
		return c.readErr(err)
	}
	meta, enc, err := splitDeltaPayload(payload, n, ps)
	if err != nil {
		return c.errf("%w: %v", ErrBadPacket, err)
	}
	if len(c.dpage) != ps {
		c.dpage = make([]byte, ps)
	}
	c.mine = c.mine[:0]
	data := blk.data
	for i, off := range offs {
		l := int(binary.BigEndian.Uint16(meta[6*i:]))
		e := enc[:l]
		enc = enc[l:]
		mine := blk.claimWrite(off)
		c.mine = append(c.mine, mine)
		if !mine {
			continue
		}
		pg := c.dpage
		copy(pg, data[off:off+uint64(ps)])
		if err := delta.Apply(pg, e); err != nil {
			return c.errf("%w: delta for page %#x of block %q: %w", ErrBadPacket, off, blk.name, err)
		}
		if want := binary.BigEndian.Uint32(meta[6*i+2:]); crc32.Checksum(pg, castagnoli) != want {
			return c.errf("%w: delta for page %#x of block %q does not rebuild the sender's page: this end does not hold the version it was made against", ErrBadPacket, off, blk.name)
		}
		if blk.file != nil {
			if err := blk.writeAt(pg, off); err != nil {
				return c.errf("%w", err)
			}
			continue
		}
		copy(data[off:off+uint64(ps)], pg)
	}
	return nil
}

// splitDeltaPayload checks a delta packet's payload for n pages of ps
// bytes (appendDeltaPacket) and returns its per-page lengths and crcs
// (6 bytes a page) and the encodings: every length within the delta
// limit, the lengths adding up to exactly the encodings' bytes.
func splitDeltaPayload(payload []byte, n, ps int) (meta, enc []byte, err error) {
	if len(payload) < 6*n {
		return nil, nil, fmt.Errorf("delta payload of %d bytes for %d pages", len(payload), n)
	}
	meta, enc = payload[:6*n], payload[6*n:]
	total := 0
	for i := range n {
		l := int(binary.BigEndian.Uint16(meta[6*i:]))
		if l > deltaLimit(ps) {
			return nil, nil, fmt.Errorf("delta of %d bytes for page %d of the packet, at most %d", l, i, deltaLimit(ps))
		}
		total += l
	}
	if total != len(enc) {
		return nil, nil, fmt.Errorf("delta lengths add up to %d bytes, the payload has %d", total, len(enc))
	}
	return meta, enc, nil
}

func (c *recvChan) deviceState() error {
	t := c.t
	if _, err := io.ReadFull(c.conn, c.hdr[wire.PrefixSize:wire.DeviceStateSize]); err != nil {
		return c.readErr(err)
	}
	var h wire.DeviceState
	if err := h.UnmarshalBinary(c.hdr[:wire.DeviceStateSize]); err != nil {
		return c.errf("%w", err)
	}
	size := int(h.NextPacketSize)
	if size > t.cfg.MaxDeviceState {
		return c.errf("%w: device-state blob of %d bytes, at most %d", ErrBadPacket, size, t.cfg.MaxDeviceState)
	}
	// Grow as the bytes arrive, so a lying size costs no memory.
	blob := c.blob[:0]
	for len(blob) < size {
		n := min(size-len(blob), 1<<20)
		if cap(blob)-len(blob) < n {
			nb := make([]byte, len(blob), max(2*cap(blob), len(blob)+n))
			copy(nb, blob)
			blob = nb
		}
		if _, err := io.ReadFull(c.conn, blob[len(blob):len(blob)+n]); err != nil {
			return c.readErr(err)
		}
		blob = blob[:len(blob)+n]
	}
	c.ctr.wire.Add(uint64(wire.DeviceStateSize + size))
	c.ctr.devs.Add(1)
	if t.cfg.OnDeviceState != nil {
		if err := t.cfg.OnDeviceState(string(h.IDStr), h.InstanceID, blob); err != nil {
			return c.errf("device state %q instance %d: %w", h.IDStr, h.InstanceID, err)
		}
	}
	if cap(blob) <= 1<<20 {
		c.blob = blob[:0]
	}
	return nil
}

// barrier parks the channels at each SYNC until all of them reached it.
type barrier struct {
	mu      sync.Mutex
	n       int
	arrived int
	left    int
	gen     chan struct{}
	passed  atomic.Uint64
	// onRelease runs in the last arrival, before anyone is released.
	onRelease func()
}

func (b *barrier) init(n int, onRelease func()) {
	b.n = n
	b.gen = make(chan struct{})
	b.onRelease = onRelease
}

func (b *barrier) wait(ctx context.Context) error {
	b.mu.Lock()
	if b.left > 0 {
		b.mu.Unlock()
		return fmt.Errorf("SYNC %d after another channel ended", b.passed.Load()+1)
	}
	b.arrived++
	if b.arrived == b.n {
		b.arrived = 0
		if b.onRelease != nil {
			b.onRelease() // everyone else is parked
		}
		close(b.gen)
		b.gen = make(chan struct{})
		b.passed.Add(1)
		b.mu.Unlock()
		return nil
	}
	g := b.gen
	b.mu.Unlock()
	select {
	case <-g:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// leave records a channel's clean end; channels waiting at a SYNC it never
// sent would wait forever, so that is an error.
func (b *barrier) leave() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.left++
	if b.arrived > 0 {
		return fmt.Errorf("channel ended while %d channels wait at SYNC %d", b.arrived, b.passed.Load()+1)
	}
	return nil
}
