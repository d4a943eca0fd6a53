package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pagewire/pagewire/core/wire"
	"github.com/pagewire/pagewire/sdk"
)

// Dialer opens a connection to the receiver: a [Sender] dials its
// control channel and every multifd channel with it. Package channels has
// dialers for tcp:, unix: and vmbus: addresses, with and without TLS.
type Dialer interface {
	Dial(ctx context.Context) (net.Conn, error)
}

// Sender is the sending end of a transfer. Create it with [NewSender],
// queue pages with SendPages or SendBlock, order them with Sync, and
// finish with Close, which must always be called.
type Sender struct {
	cfg    SenderConfig
	info   sdk.Info
	blocks map[string]*srcBlock
	// unshare ends each block's memory shared with the method.
	unshare []func()
	chans   []*sendChan
	ready   chan struct{} // one token per idle channel
	next    int           // where the search for an idle channel starts
	cur     *sendPacket   // the packet the caller is filling

	ctx context.Context
	// failPath holds the lead channel (ctl, its writes under ctlMu), the
	// multifd connections and the first error (under mu), and cancel.
	failPath
	wg      sync.WaitGroup
	done    chan struct{}
	ctlDone chan struct{} // closed when readControl has returned
	stop    func() bool   // stops watching the caller's context
	watch   chan struct{} // closed when the context watcher has run

	packetNum atomic.Uint64 // packet_num of the next packet, all channels
	syncs     uint64
	start     time.Time
	elapsed   atomic.Int64 // set when the transfer ends
	closed    bool

	ctlBytes atomic.Uint64 // lead channel bytes sent after hello

	// lead is the lead channel: pagewire's control channel or a QEMU
	// destination's main channel; zeros is where zero pages go.
	lead  sendLead
	zeros zeroPolicy

	cache *deltaCache // nil without SenderConfig.DeltaCache
}

// zeroPolicy is how a sender's zero pages travel, by dialect.
type zeroPolicy uint8

const (
	zerosInPackets zeroPolicy = iota // as offsets in packets (QEMU 10.0)
	zerosOnLead                      // as ZERO messages on the control channel (QEMU 7.2 dialect)
	zerosAsNormal                    // as normal pages (to a QEMU 7.2, whose packets cannot carry them)
)

// sendLead is a Sender's lead channel: pagewire's control channel
// (ctlSendLead) or a QEMU destination's main channel (mainSendLead).
type sendLead interface {
	// name names it, in errors.
	name() string
	// handshake runs on the lead connection before the multifd
	// channels connect.
	handshake(s *Sender, ctl net.Conn, hello []byte, deadline time.Time) error
	// tells reports whether the peer is told why the transfer failed.
	tells() bool
	// watch starts reading the lead, if anything comes back on it, and
	// closes s.ctlDone when it stops.
	watch(s *Sender)
	// synced runs once every channel has written SYNC s.syncs.
	synced(s *Sender) error
	// finish ends a healthy transfer.
	finish(s *Sender) error
}

// ctlSendLead is pagewire's control channel: hello and accept, a marker
// per sync, END, and the receiver's DONE or ERROR back.
type ctlSendLead struct{}

func (ctlSendLead) name() string { return "control channel" }
func (ctlSendLead) tells() bool  { return true }

func (ctlSendLead) handshake(s *Sender, ctl net.Conn, hello []byte, deadline time.Time) error {
	ctl.SetDeadline(deadline)
	var magic [4]byte
	be.PutUint32(magic[:], wire.ControlMagic)
	if _, err := ctl.Write(magic[:]); err != nil {
		return &ChannelError{Channel: -1, Err: writeErr(err)}
	}
	if err := wire.WriteMessage(ctl, wire.MsgHello, hello); err != nil {
		// The receiver may have refused before reading the hello: its
		// reason can still be read.
		ctl.SetReadDeadline(time.Now().Add(errorGrace))
		if typ, body, rerr := wire.ReadMessage(ctl, nil); rerr == nil && typ == wire.MsgError {
			return remoteError("receiver", body)
		}
		return &ChannelError{Channel: -1, Err: writeErr(err)}
	}
	// The answer's first bytes tell a peer of another kind.
	var h [5]byte
	n, err := io.ReadFull(ctl, h[:])
	if err == nil {
		if what := peerKind(h[:]); what != "" {
			return &ChannelError{Channel: -1, Err: fmt.Errorf("%w: the peer is %s, not a pagewire receiver", ErrBadControl, what)}
		}
	}
	typ, body, err := wire.ReadMessage(io.MultiReader(bytes.NewReader(h[:n]), errReader{err}, ctl), nil)
	switch {
	case err == io.EOF:
		return &ChannelError{Channel: -1, Err: fmt.Errorf("%w before accepting the transfer", ErrPeerGone)}
	case err != nil:
		return &ChannelError{Channel: -1, Err: err}
	case typ == wire.MsgError:
		return remoteError("receiver", body)
	case typ != wire.MsgAccept:
		return &ChannelError{Channel: -1, Err: fmt.Errorf("%w: message %#x instead of accept", ErrBadControl, typ)}
	}
	ctl.SetDeadline(time.Time{})
	return nil
}

func (ctlSendLead) watch(s *Sender) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(s.ctlDone)
		s.readControl()
	}()
}

func (ctlSendLead) synced(s *Sender) error {
	var b [8]byte
	be.PutUint64(b[:], s.syncs)
	return s.control(wire.MsgSync, b[:])
}

// finish sends a final SYNC and END, ends the channels, and waits for
// the receiver's confirmation that every page landed.
func (ctlSendLead) finish(s *Sender) error {
	if err := s.sync(); err != nil {
		return err
	}
	var packets uint64
	for _, c := range s.chans { // all idle: the counts are final
		packets += c.ctr.packets.Load()
	}
	end := wire.End{Syncs: s.syncs, Packets: packets}
	b, _ := end.AppendBinary(nil)
	if err := s.control(wire.MsgEnd, b); err != nil {
		return err
	}
	// Every channel is idle: end their goroutines and their streams.
	for _, c := range s.chans {
		close(c.work)
	}
	for _, c := range s.chans {
		c.conn.Close()
	}
	var timeout <-chan time.Time
	if s.cfg.Timeout > 0 {
		t := time.NewTimer(s.cfg.Timeout)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-s.done:
		s.elapsed.Store(int64(time.Since(s.start)))
		return nil
	case <-s.ctx.Done():
		return s.failure()
	case <-timeout:
		return &ChannelError{Channel: -1, Err: fmt.Errorf("no confirmation from the receiver within %v", s.cfg.Timeout)}
	}
}

// peerKind names a peer by the first bytes of its answer, "" for one
// that may be a pagewire receiver.
func peerKind(b []byte) string {
	switch {
	case string(b[:4]) == "HTTP":
		return "an HTTP server"
	case (b[0] == 0x15 || b[0] == 0x16) && b[1] == 0x03:
		return "a TLS server (this end does not use TLS)"
	case string(b[:4]) == "SSH-":
		return "an SSH server"
	case string(b[:4]) == "QEVM":
		return "a QEMU migration stream"
	}
	return ""
}

// mainSendLead is a QEMU destination's main channel, which the caller
// writes (WriteMain): its markers order the SYNCs, and nothing comes
// back on it.
type mainSendLead struct{}

func (mainSendLead) name() string                                         { return "main channel" }
func (mainSendLead) tells() bool                                          { return false }
func (mainSendLead) handshake(*Sender, net.Conn, []byte, time.Time) error { return nil }
func (mainSendLead) watch(s *Sender)                                      { close(s.ctlDone) }
func (mainSendLead) synced(*Sender) error                                 { return nil } // the caller's main stream carries the marker

// finish: once every channel has written its last packet, the channels
// close, then the main one, as QEMU's source does.
func (mainSendLead) finish(s *Sender) error {
	if err := s.written(); err != nil {
		return err
	}
	for _, c := range s.chans {
		close(c.work)
	}
	s.mu.Lock()
	for _, c := range s.conns {
		c.Close()
	}
	s.ctl.Close()
	s.mu.Unlock()
	s.elapsed.Store(int64(time.Since(s.start)))
	return nil
}

type srcBlock struct {
	name []byte
	data []byte
	idx  int             // in hello order
	sent []atomic.Uint64 // pages sent this interval, with a delta cache
}

type packetKind uint8

const (
	kindRAM packetKind = iota
	kindSync
	kindDeviceState
)

// sendPacket is a job for a channel. Its buffers move between the caller
// and channels by swapping pointers, never by copying.
type sendPacket struct {
	kind    packetKind
	block   *srcBlock
	offsets []uint64
	// device state
	idstr    []byte
	instance uint32
	blob     []byte
}

type sendChan struct {
	id      int
	s       *Sender
	conn    net.Conn
	m       sdk.Sender
	inPlace InPlaceSender // m, if it is one
	obs     WriteObserver // m, if it is one
	raw     RawSender     // m, if it is one
	busy    atomic.Bool
	work    chan struct{}
	pkt     *sendPacket
	seq     uint64 // packets written on this channel
	ctr     counters

	// scratch, owned by the channel goroutine
	hdr     []byte
	offs    []uint64
	zeros   []uint64
	vec     [][]byte
	bufs    net.Buffers
	payload []byte
	zbody   []byte // a zero-pages control message (QEMU 7.2 dialect)
	sp      sdk.Packet
	rh      wire.RAM

	// with a delta cache: the snapshots of the pages sent whole, the
	// delta packet's offsets, encodings and per-page length and crc, its
	// header; and the counts of what the last RAM send wrote
	stage              []byte
	doffs              []uint64
	denc, dmeta, dhdr  []byte
	dh                 wire.RAM
	npkts, nnorm, ndel int
}

// NewSender opens a transfer of mem's blocks: it connects the control
// channel, has the receiver accept the parameters, then connects the
// multifd channels. Cancelling ctx fails the transfer at any time.
func NewSender(ctx context.Context, d Dialer, mem Memory, cfg SenderConfig) (*Sender, error) {
	return newSender(ctx, d, mem, cfg, ctlSendLead{})
}

// NewQEMUSender opens a migration to a real QEMU destination at d (QEMU
// run with -incoming, the multifd capability, cfg.Channels
// multifd-channels and the multifd-compression of cfg.Method): it
// connects the main channel first, as QEMU 7.2 requires, then the
// multifd channels with their handshakes (uuid cfg.UUID). cfg.Dialect is
// the destination's QEMU (zero pages travel as normal pages to 7.2).
// The caller writes the main stream with WriteMain, and must place a
// Sync (a SYNC on every channel) before each sync marker of it; Close
// sends no SYNC of its own and closes every channel, the main one last.
func NewQEMUSender(ctx context.Context, d Dialer, mem Memory, cfg SenderConfig) (*Sender, error) {
	if cfg.Dialect == "" {
		return nil, fmt.Errorf("qemu sender: the destination's dialect (%s or %s) is required", Dialect72, Dialect10)
	}
	return newSender(ctx, d, mem, cfg, mainSendLead{})
}

func newSender(ctx context.Context, d Dialer, mem Memory, cfg SenderConfig, lead sendLead) (*Sender, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Sender{
		failPath: failPath{side: "sender"},
		cfg:      cfg,
		info:     cfg.Method.Info(),
		blocks:   make(map[string]*srcBlock),
		ready:    make(chan struct{}, cfg.Channels),
		done:     make(chan struct{}),
	}
	s.lead = lead
	if cfg.Dialect == Dialect72 {
		// A QEMU 7.2 destination's packets cannot carry zero pages.
		s.zeros = zerosOnLead
		if _, qemu := lead.(mainSendLead); qemu {
			s.zeros = zerosAsNormal
		}
	}
	if cfg.DeltaCache > 0 {
		_, qemu := lead.(mainSendLead)
		switch {
		case qemu:
			return nil, errors.New("a delta cache is for pagewire's protocol; a QEMU destination cannot apply delta pages")
		case s.zeros != zerosInPackets:
			return nil, errors.New("a delta cache needs the 10.0 dialect")
		}
		s.cache = newDeltaCache(cfg.DeltaCache, cfg.PageSize)
	}
	hello := wire.Hello{
		UUID: cfg.UUID, Channels: cfg.Channels, PageSize: cfg.PageSize,
		PacketPages: cfg.PacketPages, MethodFlag: s.info.Flag, Method: s.info.Name,
		ZeroOnControl: s.zeros == zerosOnLead, Delta: s.cache != nil,
	}
	if testHookDeltaHello != nil {
		testHookDeltaHello(&hello.Delta)
	}
	for i, b := range mem.Blocks() {
		if len(b.Data)%cfg.PageSize != 0 {
			return nil, fmt.Errorf("block %q: %d bytes is not a whole number of %d-byte pages", b.Name, len(b.Data), cfg.PageSize)
		}
		sb := &srcBlock{name: []byte(b.Name), data: b.Data, idx: i}
		if s.cache != nil {
			sb.sent = newSentMap(len(b.Data) / cfg.PageSize)
		}
		s.blocks[b.Name] = sb
		hello.Blocks = append(hello.Blocks, BlockInfo{Name: b.Name, Size: uint64(len(b.Data))})
	}
	body, err := hello.AppendBinary(nil)
	if err != nil {
		return nil, err
	}
	if sh, ok := cfg.Method.(MemorySharer); ok {
		for _, b := range mem.Blocks() {
			if b.File != nil && len(b.Data) > 0 {
				s.unshare = append(s.unshare, sh.ShareMemory(b.Data, b.File, b.Offset))
			}
		}
	}

	s.ctx, s.cancel = context.WithCancelCause(context.Background())
	hctx, hcancel := context.WithTimeout(ctx, cfg.HandshakeTimeout)
	defer hcancel()
	if err := s.open(hctx, d, body); err != nil {
		s.fail(err)
		s.closeConns()
		s.release()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if hctx.Err() != nil && !isRemote(err) {
			return nil, fmt.Errorf("open transfer: %w (handshake timeout %v)", err, cfg.HandshakeTimeout)
		}
		return nil, err
	}
	s.watch = make(chan struct{})
	s.stop = context.AfterFunc(ctx, func() {
		defer close(s.watch)
		s.fail(context.Cause(ctx))
	})
	s.start = time.Now()
	s.cur = &sendPacket{offsets: make([]uint64, 0, cfg.PacketPages)}
	for _, c := range s.chans {
		c.pkt = &sendPacket{offsets: make([]uint64, 0, cfg.PacketPages)}
		s.ready <- struct{}{}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := c.loop(); err != nil {
				s.fail(err)
			}
		}()
	}
	s.ctlDone = make(chan struct{})
	s.lead.watch(s)
	return s, nil
}

// open connects the control channel, exchanges hello and accept, and
// connects the multifd channels.
func (s *Sender) open(ctx context.Context, d Dialer, hello []byte) error {
	deadline, _ := ctx.Deadline()
	stop := context.AfterFunc(ctx, func() { s.closeConns() })
	defer stop()
	ctl, err := d.Dial(ctx)
	if err != nil {
		return fmt.Errorf("connect %s: %w", s.lead.name(), err)
	}
	s.setLead(ctl, s.lead.tells())
	if err := s.lead.handshake(s, ctl, hello, deadline); err != nil {
		return err
	}
	return s.openChannels(ctx, d, deadline)
}

// openChannels connects the multifd channels and sends their handshakes.
func (s *Sender) openChannels(ctx context.Context, d Dialer, deadline time.Time) error {
	opts := methodOptions(s.cfg.Level, s.cfg.PageSize, s.cfg.PacketPages)
	for i := range s.cfg.Channels {
		conn, err := d.Dial(ctx)
		if err != nil {
			return &ChannelError{Channel: i, Err: fmt.Errorf("connect: %w", err)}
		}
		c := &sendChan{id: i, s: s, conn: conn, work: make(chan struct{}, 1)}
		s.mu.Lock()
		s.chans = append(s.chans, c)
		s.conns = append(s.conns, conn)
		s.mu.Unlock()
		init := wire.Init{UUID: s.cfg.UUID, ID: uint8(i)}
		b, _ := init.AppendBinary(nil)
		conn.SetWriteDeadline(deadline)
		if _, err := conn.Write(b); err != nil {
			return &ChannelError{Channel: i, Err: writeErr(err)}
		}
		conn.SetWriteDeadline(time.Time{})
		m, err := s.cfg.Method.NewSender(i, opts)
		if err != nil {
			return &ChannelError{Channel: i, Err: fmt.Errorf("%w: %s send setup: %w", ErrMethod, s.info.Name, err)}
		}
		c.m = m
		c.inPlace, _ = m.(InPlaceSender)
		c.obs, _ = m.(WriteObserver)
		c.raw, _ = m.(RawSender)
		if st, ok := m.(Stopper); ok {
			context.AfterFunc(s.ctx, st.Stop) // s.ctx ends with the transfer
		}
		c.hdr = make([]byte, 0, wire.RAMHeaderSize(s.cfg.PacketPages))
		c.offs = make([]uint64, 0, s.cfg.PacketPages)
		c.zeros = make([]uint64, 0, s.cfg.PacketPages)
		c.vec = make([][]byte, 0, s.cfg.PacketPages+5) // header, prefix, pages, a delta packet
		c.sp.Pages = make([][]byte, 0, s.cfg.PacketPages)
	}
	return nil
}

// SendBlock queues every page of the named block.
func (s *Sender) SendBlock(block string) error {
	b, ok := s.blocks[block]
	if !ok {
		return fmt.Errorf("send: unknown block %q", block)
	}
	return s.SendRange(block, 0, uint64(len(b.data)))
}

// SendRange queues the pages of block in [off, off+n); both must be page
// aligned.
func (s *Sender) SendRange(block string, off, n uint64) error {
	b, err := s.block(block)
	if err != nil {
		return err
	}
	ps := uint64(s.cfg.PageSize)
	if off%ps != 0 || n%ps != 0 || off > uint64(len(b.data)) || n > uint64(len(b.data))-off {
		return fmt.Errorf("send: range %#x+%#x of block %q (%d bytes) is not page aligned or out of bounds", off, n, block, len(b.data))
	}
	for o := off; o < off+n; o += ps {
		if err := s.add(b, o); err != nil {
			return s.why(err)
		}
	}
	return nil
}

// SendPages queues the pages of block at the given byte offsets, in that
// order (a dirty list).
func (s *Sender) SendPages(block string, offsets []uint64) error {
	b, err := s.block(block)
	if err != nil {
		return err
	}
	ps := uint64(s.cfg.PageSize)
	for _, o := range offsets {
		if o%ps != 0 || o >= uint64(len(b.data)) {
			return fmt.Errorf("send: offset %#x of block %q (%d bytes) is not page aligned or out of bounds", o, block, len(b.data))
		}
		if err := s.add(b, o); err != nil {
			return s.why(err)
		}
	}
	return nil
}

func (s *Sender) block(name string) (*srcBlock, error) {
	if s.closed {
		return nil, ErrClosed
	}
	if err := s.failure(); err != nil {
		return nil, s.why(err)
	}
	b, ok := s.blocks[name]
	if !ok {
		return nil, fmt.Errorf("send: unknown block %q", name)
	}
	return b, nil
}

func (s *Sender) add(b *srcBlock, off uint64) error {
	p := s.cur
	if p.block != b || len(p.offsets) == cap(p.offsets) {
		if err := s.flush(); err != nil {
			return err
		}
		p = s.cur
		p.block = b
	}
	p.offsets = append(p.offsets, off)
	return nil
}

// flush hands the packet being filled to the next idle channel.
func (s *Sender) flush() error {
	if len(s.cur.offsets) == 0 {
		return nil
	}
	c, err := s.acquire()
	if err != nil {
		return err
	}
	s.cur.kind = kindRAM
	c.pkt, s.cur = s.cur, c.pkt
	s.cur.offsets = s.cur.offsets[:0]
	s.cur.block = nil
	c.work <- struct{}{}
	return nil
}

// acquire waits for an idle channel and marks it busy, searching round
// robin from the channel after the last one used, as QEMU does.
func (s *Sender) acquire() (*sendChan, error) {
	select {
	case <-s.ready:
	case <-s.ctx.Done():
		return nil, s.failure()
	}
	n := len(s.chans)
	for i := range n {
		k := (s.next + i) % n
		if c := s.chans[k]; c.busy.CompareAndSwap(false, true) {
			s.next = (k + 1) % n
			return c, nil
		}
	}
	return nil, errors.New("pagewire: internal error: no idle channel behind a ready token")
}

// waitIdle takes every channel's ready token: all channels are idle and
// everything handed to them is written.
func (s *Sender) waitIdle() error {
	for range s.chans {
		select {
		case <-s.ready:
		case <-s.ctx.Done():
			return s.failure()
		}
	}
	return nil
}

func (s *Sender) releaseIdle() {
	for range s.chans {
		s.ready <- struct{}{}
	}
}

// Sync is a barrier: it sends a SYNC on every channel after everything
// queued so far, and returns once all of it is written. On the receiver,
// nothing queued after a Sync lands before everything queued before it.
// After Sync returns, queued pages may change again.
func (s *Sender) Sync() error {
	if s.closed {
		return ErrClosed
	}
	return s.why(s.sync())
}

// sync sends a SYNC on every channel and then the sync marker on the
// control channel.
func (s *Sender) sync() error {
	if err := s.quiesce(); err != nil {
		return err
	}
	for _, c := range s.chans {
		c.busy.Store(true)
		c.pkt.kind = kindSync
		c.work <- struct{}{}
	}
	if err := s.waitIdle(); err != nil {
		return err
	}
	s.syncs++
	if s.cache != nil { // a new interval: every channel is idle
		for _, b := range s.blocks {
			b.clearSent()
		}
	}
	s.releaseIdle()
	return s.lead.synced(s)
}

// SendDeviceState queues a device-state blob (QEMU 10's
// MULTIFD_FLAG_DEVICE_STATE packet) on the next idle channel. idstr is at
// most 255 bytes and blob is not empty; blob must not change until the
// next Sync or Close.
func (s *Sender) SendDeviceState(idstr string, instance uint32, blob []byte) error {
	if s.closed {
		return ErrClosed
	}
	switch {
	case len(idstr) >= wire.NameSize:
		return fmt.Errorf("send device state: idstr of %d bytes, at most %d", len(idstr), wire.NameSize-1)
	case len(blob) == 0:
		// QEMU's wire has no empty device-state packet ("received empty
		// device state packet"): an empty blob goes on the control channel.
		if err := s.failure(); err != nil {
			return s.why(err)
		}
		return s.why(s.control(wire.MsgDevice, wire.AppendDevice(nil, idstr, instance)))
	case uint64(len(blob)) > 1<<32-1:
		return fmt.Errorf("send device state: blob of %d bytes, at most 4 GiB", len(blob))
	}
	if err := s.failure(); err != nil {
		return s.why(err)
	}
	c, err := s.acquire()
	if err != nil {
		return s.why(err)
	}
	p := c.pkt
	p.kind = kindDeviceState
	p.idstr = append(p.idstr[:0], idstr...)
	p.instance = instance
	p.blob = blob
	c.work <- struct{}{}
	return nil
}

// Close sends everything still queued, a final SYNC and the end of the
// transfer, waits until the receiver confirms that every page landed,
// and releases all channels. It returns the transfer's statistics and
// the transfer's error, if any: when the receiver failed, its reason (a
// [*RemoteError]) rather than the broken connection that was noticed
// first. After a failure Close only releases.
func (s *Sender) Close() (Stats, error) {
	if s.closed {
		return s.Stats(), ErrClosed
	}
	s.closed = true
	err := s.finish()
	if err != nil {
		s.fail(err)
	}
	s.why(s.failure())
	s.closeConns()
	if !s.stop() {
		<-s.watch // the watcher fired: let it finish
	}
	s.wg.Wait()
	s.cancel(ErrClosed) // Done
	s.elapsed.CompareAndSwap(0, int64(time.Since(s.start)))
	s.release()
	st := s.Stats()
	if err := s.failure(); err != nil {
		return st, err
	}
	return st, nil
}

func (s *Sender) finish() error {
	if err := s.failure(); err != nil {
		return err
	}
	return s.lead.finish(s)
}

// Stats returns the transfer's statistics so far. It may be called from
// any goroutine.
func (s *Sender) Stats() Stats {
	cs := make([]*counters, len(s.chans))
	for i, c := range s.chans {
		cs[i] = &c.ctr
	}
	el := time.Duration(s.elapsed.Load())
	if el == 0 {
		el = time.Since(s.start)
	}
	st := collect(s.info.Name, s.cfg.PageSize, el, cs)
	st.ControlBytes = s.ctlBytes.Load()
	st.Dialect = string(s.dialect())
	return st
}

func (s *Sender) dialect() Dialect {
	if s.cfg.Dialect == Dialect72 {
		return Dialect72
	}
	return Dialect10
}

// writeErr is a failed write's error: a stall (the write deadline of
// SenderConfig.Timeout passed; the peer is there but does not read) or
// the peer gone.
func writeErr(err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("stalled: the receiver reads nothing: %w", err)
	}
	return fmt.Errorf("%w: %w", ErrPeerGone, err)
}

// why returns err, or, when err is the receiver hanging up, the
// receiver's reason once it has come (the receiver tells it before it
// closes; readControl picks it up within 2 x errorGrace). The calls a
// user makes return the reason, not the broken connection noticed first.
func (s *Sender) why(err error) error {
	if err == nil || !errors.Is(err, ErrPeerGone) || isRemote(err) || s.ctlDone == nil {
		return err
	}
	t := time.NewTimer(2 * errorGrace)
	select {
	case <-s.ctlDone:
	case <-t.C:
	}
	t.Stop()
	if f := s.failure(); isRemote(f) {
		return f
	}
	return err
}

// Err returns the transfer's failure, or nil while it is healthy.
func (s *Sender) Err() error { return s.failure() }

func (s *Sender) control(typ byte, body []byte) error {
	s.ctlMu.Lock()
	if s.cfg.Timeout > 0 {
		s.ctl.SetWriteDeadline(time.Now().Add(s.cfg.Timeout))
	}
	err := wire.WriteMessage(s.ctl, typ, body)
	s.ctlMu.Unlock() // fail takes it to send the reason
	s.ctlBytes.Add(uint64(5 + len(body)))
	if err != nil {
		if ferr := s.failure(); ferr != nil {
			return ferr
		}
		err = &ChannelError{Channel: -1, Err: writeErr(err)}
		s.fail(err)
		return s.failure()
	}
	return nil
}

// readControl waits for the receiver's done or error.
func (s *Sender) readControl() {
	typ, body, err := wire.ReadMessage(s.ctl, nil)
	switch {
	case err != nil && s.ctx.Err() != nil:
		// We are shutting down.
	case err == io.EOF:
		s.fail(&ChannelError{Channel: -1, Err: fmt.Errorf("%w: receiver closed the control channel", ErrPeerGone)})
	case errors.Is(err, ErrBadControl) && !errors.Is(err, io.ErrUnexpectedEOF):
		s.fail(&ChannelError{Channel: -1, Err: err})
	case err != nil:
		s.fail(&ChannelError{Channel: -1, Err: writeErr(err)})
	case typ == wire.MsgError:
		s.fail(remoteError("receiver", body))
	case typ == wire.MsgDone:
		close(s.done)
	default:
		s.fail(&ChannelError{Channel: -1, Err: fmt.Errorf("%w: unexpected message %#x from the receiver", ErrBadControl, typ)})
	}
}

// release runs every method's send cleanup and ends the memory shared
// with the method.
func (s *Sender) release() {
	for _, c := range s.chans {
		if c.m != nil {
			c.m.Close()
			c.m, c.inPlace = nil, nil
		}
	}
	for _, f := range s.unshare {
		f()
	}
	s.unshare = nil
}

// errNothingToSend: every page of the packet went on the control channel.
var errNothingToSend = errors.New("nothing to send")

// testHookSent, when set by a test, sees every RAM packet's channel and
// offsets (normal, then zero) before it is written.
var testHookSent func(ch int, offsets []uint64)

func isRemote(err error) bool {
	var re *RemoteError
	return errors.As(err, &re)
}

// loop runs one channel: it writes each job handed to it, then marks
// itself idle. It returns when its work channel is closed or the transfer
// fails.
func (c *sendChan) loop() error {
	// Source memory may be a file's mapping: one that shrinks under the
	// transfer faults on access, which is then an error, not a crash.
	debug.SetPanicOnFault(true)
	for {
		select {
		case _, ok := <-c.work:
			if !ok {
				return nil
			}
		case <-c.s.ctx.Done():
			return nil
		}
		c.seq++
		if err := c.guardedSend(); err != nil {
			if c.s.ctx.Err() != nil {
				return nil // already failing; the first error wins
			}
			return &ChannelError{Channel: c.id, Packet: c.seq, Err: err}
		}
		c.busy.Store(false)
		c.s.ready <- struct{}{}
	}
}

// errMemoryFault reports source memory that could not be read: a file
// mapping whose file shrank under the transfer.
var errMemoryFault = errors.New("memory fault")

// guardedSend sends the channel's packet, turning a fault on source
// memory into an error.
func (c *sendChan) guardedSend() (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = faultError(r)
		}
	}()
	return c.send(c.pkt)
}

// faultError is the error of a recovered memory fault; any other panic
// goes on.
func faultError(r any) error {
	re, ok := r.(runtime.Error)
	if !ok {
		panic(r)
	}
	if a, ok := r.(interface{ Addr() uintptr }); ok {
		return fmt.Errorf("%w at %#x (a mapped file that shrank?): %v", errMemoryFault, a.Addr(), re)
	}
	panic(r)
}

func (c *sendChan) send(p *sendPacket) error {
	s := c.s
	c.vec = c.vec[:0]
	var err error
	switch p.kind {
	case kindSync:
		c.rh = wire.RAM{Flags: wire.FlagSync, PacketNum: s.packetNum.Add(1) - 1, Offsets: c.offs[:0]}
		if s.zeros != zerosInPackets {
			c.rh.PagesAlloc = uint32(s.cfg.PacketPages) // as QEMU 7.2's SYNC packets
		}
		c.hdr, err = c.rh.AppendBinary(c.hdr[:0], s.cfg.PacketPages)
		c.vec = append(c.vec, c.hdr)
	case kindDeviceState:
		h := wire.DeviceState{IDStr: p.idstr, InstanceID: p.instance, NextPacketSize: uint32(len(p.blob))}
		c.hdr, err = h.AppendBinary(c.hdr[:0])
		c.vec = append(c.vec, c.hdr, p.blob)
		p.blob = nil
	case kindRAM:
		err = c.prepareRAM(p)
	}
	if err == errNothingToSend {
		return nil
	}
	if err != nil {
		return err
	}
	if s.cfg.Timeout > 0 {
		c.conn.SetWriteDeadline(time.Now().Add(s.cfg.Timeout))
	}
	c.bufs = c.vec
	var t0 time.Time
	if c.obs != nil {
		t0 = time.Now()
	}
	n, err := c.bufs.WriteTo(c.conn)
	c.ctr.wire.Add(uint64(n))
	if c.obs != nil && err == nil {
		c.obs.Wrote(int(n), time.Since(t0))
	}
	if errors.Is(err, syscall.EFAULT) {
		// Not the peer's doing: this end's memory (see guardedSend).
		return fmt.Errorf("%w: the kernel could not read source memory (a mapped file that shrank?): %w", errMemoryFault, err)
	}
	if err != nil {
		return writeErr(err)
	}
	switch p.kind {
	case kindSync:
		c.ctr.syncs.Add(1)
	case kindDeviceState:
		c.ctr.devs.Add(1)
	case kindRAM:
		c.ctr.packets.Add(uint64(c.npkts))
		c.ctr.normal.Add(uint64(c.nnorm + c.ndel))
		c.ctr.delta.Add(uint64(c.ndel))
		c.ctr.zero.Add(uint64(c.rh.ZeroPages))
	}
	return nil
}

// prepareRAM detects zero pages, runs the method and lays out the header
// and payload in c.vec.
func (c *sendChan) prepareRAM(p *sendPacket) error {
	s := c.s
	ps := uint64(s.cfg.PageSize)
	data := p.block.data
	c.offs, c.zeros = c.offs[:0], c.zeros[:0]
	for _, off := range p.offsets {
		if s.zeros != zerosAsNormal && IsZero(data[off:off+ps]) {
			c.zeros = append(c.zeros, off)
		} else {
			c.offs = append(c.offs, off)
		}
	}
	if s.cache != nil {
		c.takeDeltas(p)
	}
	normal := len(c.offs)
	c.npkts, c.nnorm, c.ndel = 1, normal, len(c.doffs)
	if s.zeros == zerosOnLead && len(c.zeros) > 0 {
		// QEMU 7.2's dialect: zero pages go on the control channel, ahead
		// of the next sync marker; packets carry normal pages only.
		c.zbody = wire.AppendZero(c.zbody[:0], p.block.name, c.zeros)
		if err := s.control(wire.MsgZero, c.zbody); err != nil {
			return err
		}
		c.ctr.zero.Add(uint64(len(c.zeros)))
		c.zeros = c.zeros[:0]
		if normal == 0 {
			return errNothingToSend
		}
	}
	c.rh = wire.RAM{
		Flags:       s.info.Flag,
		PagesAlloc:  uint32(s.cfg.PacketPages),
		NormalPages: uint32(normal),
		ZeroPages:   uint32(len(c.zeros)),
		PacketNum:   s.packetNum.Add(1) - 1,
		Block:       p.block.name,
		Offsets:     append(c.offs, c.zeros...),
	}
	c.vec = append(c.vec, nil) // the header, filled in below
	switch {
	case normal == 0:
	case s.cache != nil && s.info.Raw:
		// The snapshots, back to back (takeDeltas).
		c.rh.NextPacketSize = uint32(normal) * uint32(ps)
		c.vec = append(c.vec, c.stage[:uint64(normal)*ps])
	case s.info.Raw:
		c.rh.NextPacketSize = uint32(normal) * uint32(ps)
		// One iovec per run of adjacent pages.
		for i := 0; i < normal; {
			j := i + 1
			for j < normal && c.offs[j] == c.offs[j-1]+ps {
				j++
			}
			c.vec = append(c.vec, data[c.offs[i]:c.offs[j-1]+ps])
			i = j
		}
	default:
		c.sp.Pages = c.sp.Pages[:0]
		for i, off := range c.offs {
			if s.cache != nil { // the snapshot (takeDeltas)
				at := uint64(i) * ps
				c.sp.Pages = append(c.sp.Pages, c.stage[at:at+ps:at+ps])
				continue
			}
			c.sp.Pages = append(c.sp.Pages, data[off:off+ps:off+ps])
		}
		c.sp.Seq = c.seq
		if c.raw != nil {
			if prefix, ok := c.raw.RawPrefix(&c.sp); ok {
				c.rh.NextPacketSize = uint32(len(prefix)) + uint32(normal)*uint32(ps)
				c.vec = append(c.vec, prefix)
				c.vec = append(c.vec, c.sp.Pages...)
				break
			}
		}
		var out []byte
		var err error
		if c.inPlace != nil {
			out, err = c.inPlace.PrepareInPlace(&c.sp)
		} else {
			out, err = c.m.Prepare(&c.sp, c.payload[:0])
		}
		if err != nil {
			return fmt.Errorf("%w: %s prepare: %w", ErrMethod, s.info.Name, err)
		}
		if max := sdk.MaxPayload(s.cfg.PacketPages, s.cfg.PageSize); len(out) > max {
			return fmt.Errorf("%w: %s produced %d bytes for %d pages, at most %d", ErrMethod, s.info.Name, len(out), normal, max)
		}
		if c.inPlace == nil {
			c.payload = out // its buffer, for the next packet
		}
		c.rh.NextPacketSize = uint32(len(out))
		c.vec = append(c.vec, out)
	}
	hdr, err := c.rh.AppendBinary(c.hdr[:0], s.cfg.PacketPages)
	if err != nil {
		return err
	}
	if testHookSent != nil {
		testHookSent(c.id, c.rh.Offsets)
	}
	c.hdr = hdr
	c.vec[0] = hdr
	// c.offs's storage now holds normal and zero offsets; keep it.
	c.offs = c.rh.Offsets
	if normal == 0 && len(c.zeros) == 0 {
		// Every page went as a delta: no packet of whole pages.
		c.vec, c.npkts = c.vec[:0], 0
	}
	if len(c.doffs) > 0 {
		if err := c.appendDeltaPacket(p); err != nil {
			return err
		}
	}
	return nil
}

// takeDeltas, with a delta cache, snapshots the packet's normal pages
// (what is sent must be what the cache keeps, while the source may
// change) and moves those the receiver can rebuild from a small delta
// out of c.offs into c.doffs; the rest stay, their snapshots back to
// back in c.stage. Zero pages are recorded as sent.
func (c *sendChan) takeDeltas(p *sendPacket) {
	s := c.s
	ps := uint64(s.cfg.PageSize)
	if need := uint64(s.cfg.PacketPages) * ps; uint64(cap(c.stage)) < need {
		c.stage = make([]byte, need)
	}
	for _, off := range c.zeros {
		s.cache.zero(p.block, off/ps)
	}
	c.doffs, c.denc, c.dmeta = c.doffs[:0], c.denc[:0], c.dmeta[:0]
	kept := c.offs[:0]
	for _, off := range c.offs {
		at := uint64(len(kept)) * ps
		snap := c.stage[at : at+ps : at+ps]
		copy(snap, p.block.data[off:off+ps])
		if s.cache.put(p.block, off/ps, snap, &c.denc, &c.dmeta) {
			c.doffs = append(c.doffs, off)
			continue
		}
		kept = append(kept, off)
	}
	c.offs = kept
}

// appendDeltaPacket appends to c.vec a RAM packet of the delta pages at
// c.doffs: flags FlagDelta and the method's, no zero pages, a payload of
// a u16 encoding length and a u32 crc32c (of the page as it is now) per
// page, then the encodings (package delta).
func (c *sendChan) appendDeltaPacket(p *sendPacket) error {
	s := c.s
	c.dh = wire.RAM{
		Flags:          s.info.Flag | wire.FlagDelta,
		PagesAlloc:     uint32(s.cfg.PacketPages),
		NormalPages:    uint32(len(c.doffs)),
		PacketNum:      s.packetNum.Add(1) - 1,
		Block:          p.block.name,
		Offsets:        c.doffs,
		NextPacketSize: uint32(len(c.dmeta) + len(c.denc)),
	}
	hdr, err := c.dh.AppendBinary(c.dhdr[:0], s.cfg.PacketPages)
	if err != nil {
		return err
	}
	c.dhdr = hdr
	c.vec = append(c.vec, hdr, c.dmeta, c.denc)
	c.npkts++
	return nil
}

// Flush returns once everything queued so far is written, without a
// SYNC: after it, the queued pages may change.
func (s *Sender) Flush() error {
	if s.closed {
		return ErrClosed
	}
	return s.why(s.written())
}

// written flushes the packet being filled and waits for every channel.
func (s *Sender) written() error {
	if err := s.quiesce(); err != nil {
		return err
	}
	s.releaseIdle()
	return nil
}

// quiesce flushes the packet being filled and takes every channel's
// ready token: everything queued is written and no channel is busy.
func (s *Sender) quiesce() error {
	if err := s.flush(); err != nil {
		return err
	}
	return s.waitIdle()
}

// WriteMain writes b to a QEMU destination's main channel (see
// [NewQEMUSender]).
func (s *Sender) WriteMain(b []byte) error {
	if _, ok := s.lead.(mainSendLead); !ok {
		return errors.New("WriteMain: not a sender to a QEMU destination")
	}
	if err := s.failure(); err != nil {
		return err
	}
	s.ctlMu.Lock()
	if s.cfg.Timeout > 0 {
		s.ctl.SetWriteDeadline(time.Now().Add(s.cfg.Timeout))
	}
	_, err := s.ctl.Write(b)
	s.ctlMu.Unlock()
	s.ctlBytes.Add(uint64(len(b)))
	if err != nil {
		s.fail(&ChannelError{Channel: -1, Err: fmt.Errorf("main channel: %w", writeErr(err))})
		return s.failure()
	}
	return nil
}

// Fail fails the transfer with err, which the receiver reports as the
// sender's reason; any goroutine may call it. Close must still be called.
func (s *Sender) Fail(err error) { s.fail(err) }

// Abort fails the transfer with err, which the receiver reports as the
// sender's reason, and releases everything as Close does.
func (s *Sender) Abort(err error) (Stats, error) {
	if !s.closed {
		s.fail(err)
	}
	return s.Close()
}

// Done is closed when the transfer has failed or been closed.
func (s *Sender) Done() <-chan struct{} { return s.ctx.Done() }
