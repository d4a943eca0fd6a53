package engine

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pagewire/pagewire/core/wire"
	"github.com/pagewire/pagewire/sdk"
)

// QEMUConfig configures a [QEMUReceiver]. Like QEMU's own destination,
// it must be told what the source uses: nothing on the wire negotiates
// the channel count or the method.
type QEMUConfig struct {
	Channels int // the source's multifd-channels (QEMU's default is 2)
	// Dialect, when set, is the dialect the source must speak; otherwise
	// the stream tells (see [Dialect72], [Dialect10]).
	Dialect Dialect
	Method  sdk.Method // the source's multifd-compression; nil is nocomp
	UUID    [16]byte   // the source's -uuid; all zero without one
	// Alloc makes the destination from the block list of the stream's
	// MEM_SIZE record; nil is [Alloc].
	Alloc func([]BlockInfo) (Memory, error)
	// OnDeviceState receives the blobs of device-state packets (QEMU 10,
	// VFIO); see [ReceiverConfig].OnDeviceState. Nil discards them.
	OnDeviceState func(idstr string, instance uint32, blob []byte) error
	// Main, when not nil, receives every byte of the main channel.
	Main io.Writer
	// OnSync, when not nil, runs at every sync point while the main
	// stream and all channels wait there; its SyncPoint's Main holds the
	// main stream up to the marker (see [SyncPoint]). After Receive the
	// rest of the stream is [QEMUReceiver.MainTail].
	OnSync func(*SyncPoint) error
	// OnPages, when not nil, sees the pages of every multifd packet once
	// they are in memory (see [ReceiverConfig].OnPages).
	OnPages func(block string, offs []uint64)
	// HandshakeTimeout bounds the wait for the main channel and every
	// multifd channel; 0 is 30s.
	HandshakeTimeout time.Duration
	// Timeout bounds every single read on a multifd channel; 0: none.
	Timeout time.Duration
	// DrainTimeout bounds the wait for the multifd channels to close after
	// the main stream ended; 0 is 10s. QEMU closes them right after.
	DrainTimeout time.Duration
}

// QEMUStats describes a migration from a QEMU source.
type QEMUStats struct {
	Stats
	Machine       string `json:"machine"`
	MainBytes     int64  `json:"main_bytes"`
	MainZeroPages uint64 `json:"main_zero_pages"` // zero pages sent on the main channel
	MainPages     uint64 `json:"main_pages"`      // pages sent on the main channel
	SyncPoints    uint64 `json:"sync_points"`     // EOS (7.2) or MULTIFD_FLUSH (10.0) markers
	DeviceBytes   int64  `json:"device_bytes"`    // device state and trailer, kept
	VMDesc        bool   `json:"vmdesc"`
}

// QEMUReceiver receives a live migration from a QEMU 7.2 source with the
// multifd capability: the main channel and N multifd channels, told apart
// by their first four bytes. It reads the main stream's RAM sections
// (block list, zero pages, pages, the end-of-section markers that order
// the multifd SYNCs), applies the multifd packets, and keeps the device
// state that follows the RAM unparsed (see QEMUConfig.Main).
type QEMUReceiver struct {
	cfg  QEMUConfig
	r    *Receiver // channel statistics
	main atomic.Int64
	mu   sync.Mutex
	qf   *qemuFile
	done bool // the parser has returned; its plain fields may be read

	pend     bytes.Buffer // main stream bytes since the last sync point (OnSync)
	consumed int          // of pend, once Receive has returned
}

// MainTail is, with an OnSync hook, the main stream after the last sync
// point (the device state and the end of the stream), once Receive has
// returned without error.
func (q *QEMUReceiver) MainTail() []byte {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.done {
		return nil
	}
	return q.pend.Bytes()[:max(q.consumed, 0)]
}

// NewQEMUReceiver returns a receiver for one QEMU migration.
func NewQEMUReceiver(cfg QEMUConfig) *QEMUReceiver {
	if cfg.Method == nil {
		cfg.Method = Nocomp()
	}
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = 10 * time.Second
	}
	rc := ReceiverConfig{
		Channels: cfg.Channels, Method: cfg.Method, UUID: cfg.UUID, Alloc: cfg.Alloc,
		Timeout: cfg.Timeout, HandshakeTimeout: cfg.HandshakeTimeout, OnDeviceState: cfg.OnDeviceState,
	}
	return &QEMUReceiver{cfg: cfg, r: NewReceiver(rc)}
}

// Stats returns the migration's statistics so far; any goroutine may call.
func (q *QEMUReceiver) Stats() QEMUStats {
	st := QEMUStats{Stats: q.r.Stats(), MainBytes: q.main.Load()}
	q.mu.Lock()
	if qf := q.qf; qf != nil {
		st.MainZeroPages, st.MainPages, st.SyncPoints = qf.ZeroPages.Load(), qf.Pages.Load(), qf.SyncPoints.Load()
		st.Dialect = string(qf.Dialect())
		if q.done {
			st.Machine, st.DeviceBytes, st.VMDesc = qf.Machine, qf.TailBytes, qf.VMDesc
		}
	}
	q.mu.Unlock()
	st.ZeroPages += st.MainZeroPages
	st.NormalPages += st.MainPages
	return st
}

// Receive runs the migration: it accepts the main channel and the
// multifd channels from ln, and returns the destination once the source
// has closed the main channel after the last RAM section and every
// multifd channel has delivered its last SYNC. Like [Receiver.Receive],
// it closes ln and leaves no goroutine behind.
func (q *QEMUReceiver) Receive(ctx context.Context, ln net.Listener) (Memory, error) {
	if q.cfg.Channels < 1 || q.cfg.Channels > wire.MaxChannels {
		return nil, fmt.Errorf("qemu: %d multifd channels, want 1..%d", q.cfg.Channels, wire.MaxChannels)
	}
	t := &transfer{r: q.r, cfg: &q.r.cfg, failPath: failPath{side: "receiver", ln: ln}, lead: qemuLead{}, onSync: q.cfg.OnSync, onPages: q.cfg.OnPages}
	var wg sync.WaitGroup
	defer t.closeReceivers() // after every goroutine has stopped
	defer t.begin(ctx, &wg)()

	if err := q.handshake(t, &wg); err != nil {
		t.fail(err)
		return nil, t.failure()
	}
	var chans sync.WaitGroup
	sink := &qemuSink{t: t, wg: &wg, chans: &chans, q: q}
	var in io.Reader = io.MultiReader(bytes.NewReader([]byte("QEVM")), t.main)
	in = countingReader{in, &q.main}
	if q.cfg.Main != nil {
		in = io.TeeReader(in, q.cfg.Main)
	}
	if q.cfg.OnSync != nil {
		in = io.TeeReader(in, &q.pend)
	}
	qf := &qemuFile{r: bufio.NewReaderSize(in, 64<<10), sink: sink}
	var last int // bytes of pend the hook saw last
	if q.cfg.OnSync != nil {
		// The parser is parked at a marker: what it consumed since the
		// last one is what was read minus what bufio holds ahead.
		t.mainChunk = func() []byte {
			q.pend.Next(last)
			last = q.pend.Len() - qf.r.Buffered()
			return q.pend.Bytes()[:last]
		}
	}
	if q.cfg.Dialect != "" {
		qf.dialect.Store(q.cfg.Dialect)
	}
	q.mu.Lock()
	q.qf = qf
	q.mu.Unlock()
	err := qf.run()
	if err == nil && t.mem == nil {
		err = fmt.Errorf("%w: no RAM in the stream", ErrBadStream)
	}
	q.mu.Lock()
	if err == nil && q.cfg.OnSync != nil {
		// The main stream has ended: no sync point can follow.
		q.pend.Next(last)
		q.consumed = q.pend.Len() - qf.r.Buffered()
	}
	q.done = true
	q.mu.Unlock()
	if err != nil {
		if t.ctx.Err() != nil {
			return nil, t.failure()
		}
		t.fail(fmt.Errorf("main channel: %w", err))
		return nil, t.failure()
	}
	// QEMU closes the multifd channels right after the main stream.
	drained := make(chan struct{})
	go func() {
		chans.Wait()
		close(drained)
	}()
	timer := time.NewTimer(q.cfg.DrainTimeout)
	defer timer.Stop()
	select {
	case <-drained:
	case <-timer.C:
		t.cancel(errFinished) // every SYNC was met; stop waiting for EOFs
		t.closeConns()
		<-drained
	}
	if err := t.failure(); err != nil {
		return nil, err
	}
	for _, c := range t.chans {
		if s := c.ctr.syncs.Load(); s != qf.SyncPoints.Load() {
			return nil, &ChannelError{Channel: c.id, Packet: c.seq, Err: fmt.Errorf("%w: %d SYNC packets for %d sync points on the main channel", ErrBadPacket, s, qf.SyncPoints.Load())}
		}
	}
	q.r.mu.Lock()
	q.r.elapsed = time.Since(q.r.start)
	q.r.mu.Unlock()
	return t.mem, nil
}

// handshake sets the transfer up as the receiver was told (nothing on
// the wire negotiates it) and accepts the main channel and every
// multifd channel.
func (q *QEMUReceiver) handshake(t *transfer, wg *sync.WaitGroup) error {
	info := q.cfg.Method.Info()
	t.hello = wire.Hello{
		UUID: q.cfg.UUID, Channels: q.cfg.Channels, PageSize: DefaultPageSize,
		PacketPages: DefaultPacketPages, MethodFlag: info.Flag, Method: info.Name,
	}
	t.method, t.info = q.cfg.Method, info
	// QEMU's receive buffer is 2 x MULTIFD_PACKET_SIZE (QEMU 10 rejects
	// more), and QEMU 7.2 leaves a stale size in packets without pages.
	t.fmt = packetFormat{staleSize: true, maxPayload: 2 * DefaultPacketPages * DefaultPageSize}
	if err := t.newReceivers(); err != nil {
		return err
	}
	t.chans = make([]*recvChan, q.cfg.Channels)
	t.bar.init(q.cfg.Channels+1, t.syncPoint) // the main channel's EOS is the last arrival
	if err := t.handshake(wg); err != nil {
		return err
	}
	q.r.mu.Lock()
	q.r.chans, q.r.method, q.r.ps, q.r.start, q.r.elapsed = t.chans, info.Name, DefaultPageSize, time.Now(), 0
	q.r.mu.Unlock()
	return nil
}

// qemuLead is a QEMU source's main channel.
type qemuLead struct{}

func (qemuLead) magic() uint32 { return wire.QEMUFileMagic }
func (qemuLead) name() string  { return "main channel" }

func (qemuLead) accept(t *transfer, conn net.Conn) error {
	t.main = conn // a connection of t.conns already; the source is not told
	return nil
}

func (qemuLead) missing(t *transfer, got int) error {
	main := "the main channel"
	if t.main == nil {
		main = "no main channel"
	}
	n := len(t.chans)
	return &ChannelError{Channel: -1, Err: fmt.Errorf("%w: %s and %d of %d multifd channels connected within %v (is multifd-channels %d on the source?)",
		ErrBadHandshake, main, got, n, t.cfg.HandshakeTimeout, n)}
}

// qemuSink applies the main stream's RAM records to the destination.
type qemuSink struct {
	t     *transfer
	q     *QEMUReceiver
	wg    *sync.WaitGroup
	chans *sync.WaitGroup
}

// blocks sizes the destination and starts the multifd channels: their
// packets name blocks, so they run only once the block list is known
// (QEMU's first packet on every channel is a SYNC that waits for the
// EOS after this list anyway).
func (s *qemuSink) blocks(infos []BlockInfo) error {
	t := s.t
	mem, err := t.cfg.Alloc(infos)
	if err != nil {
		return fmt.Errorf("destination: %w", err)
	}
	t.mem = mem
	t.blocks = make(map[string]*dstBlock, len(infos))
	have := make(map[string][]byte)
	for _, b := range mem.Blocks() {
		have[b.Name] = b.Data
	}
	for _, in := range infos {
		data, ok := have[in.Name]
		if !ok || uint64(len(data)) != in.Size {
			return fmt.Errorf("destination block %q: %d bytes, want %d", in.Name, len(data), in.Size)
		}
		t.blocks[in.Name] = newDstBlock(in.Name, data, DefaultPageSize, zeroed(mem))
		if t.onSync != nil && t.onPages == nil {
			t.blocks[in.Name].track()
		}
	}
	for _, c := range t.chans {
		s.wg.Add(1)
		s.chans.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.chans.Done()
			if err := c.loop(); err != nil {
				t.fail(err)
			}
		}()
	}
	return nil
}

// page4k returns the destination page, or nil when a multifd channel
// already wrote it since the last sync point (see dstBlock).
func (s *qemuSink) page4k(block string, off uint64) []byte {
	b := s.t.blocks[block]
	if !b.claimWrite(off) {
		return nil
	}
	return b.data[off : off+DefaultPageSize]
}

func (s *qemuSink) zero(block string, off uint64, fill byte) error {
	if fill == 0 {
		s.t.blocks[block].claimZero(off)
		return nil
	}
	pg := s.page4k(block, off)
	if pg == nil {
		return nil
	}
	for i := range pg {
		pg[i] = fill
	}
	return nil
}

func (s *qemuSink) page(block string, off uint64, r io.Reader) error {
	pg := s.page4k(block, off)
	if pg == nil {
		pg = make([]byte, DefaultPageSize) // rare: read and drop
	}
	if _, err := io.ReadFull(r, pg); err != nil {
		return fmt.Errorf("%w: page record: stream ends early", ErrBadStream)
	}
	return nil
}

func (s *qemuSink) eos() error {
	if err := s.t.bar.wait(s.t.ctx); err != nil {
		if s.t.ctx.Err() != nil {
			return s.t.failure()
		}
		return err
	}
	return nil
}

type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}
