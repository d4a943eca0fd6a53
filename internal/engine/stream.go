package engine

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/pagewire/pagewire/core/wire"
	"github.com/pagewire/pagewire/sdk"
)

// StreamConfig sets up a [Stream]: a QEMU destination is told what the
// source uses, since nothing on the wire negotiates it.
type StreamConfig struct {
	Channels int        // the source's multifd-channels
	Method   sdk.Method // the source's multifd-compression
	// Detect, when Method is nil, are the methods the first packet with
	// pages may name (QEMU's); nil with a nil Method is nocomp.
	Detect Methods
	UUID   [16]byte
	// OnSync and OnPages are as [ReceiverConfig]'s; Chunk, with OnSync,
	// gives the hook's SyncPoint.Main.
	OnSync  func(*SyncPoint) error
	OnPages func(block string, offs []uint64)
	Chunk   func() []byte
}

// Stream is a receiving transfer whose lead is a QEMU source's main
// stream, which the caller (package qemu) reads and parses: the engine
// accepts the connections, runs the multifd channels, and applies what
// the caller finds in the stream through Blocks, Page, Zero and Sync.
// The caller must call Close, after which no goroutine of the stream
// runs and every connection is closed.
type Stream struct {
	t     *transfer
	wg    sync.WaitGroup // every goroutine of the transfer
	chans sync.WaitGroup // the channel loops
	end   func()
}

// OpenStream accepts the main channel and cfg.Channels multifd channels
// from ln (r's configuration bounds the wait) and returns the stream;
// ln is closed. On error everything is released.
func (r *Receiver) OpenStream(ctx context.Context, ln net.Listener, cfg StreamConfig) (*Stream, error) {
	if cfg.Channels < 1 || cfg.Channels > wire.MaxChannels {
		return nil, fmt.Errorf("%d multifd channels, want 1..%d", cfg.Channels, wire.MaxChannels)
	}
	if cfg.Method != nil {
		cfg.Detect = nil
	} else {
		cfg.Method = Nocomp() // until the first packet with pages, when detecting
	}
	st := &Stream{t: &transfer{r: r, cfg: &r.cfg, failPath: failPath{side: "receiver", ln: ln},
		lead: qemuLead{}, onSync: cfg.OnSync, onPages: cfg.OnPages, mainChunk: cfg.Chunk, detect: cfg.Detect}}
	t := st.t
	end := t.begin(ctx, &st.wg)
	st.end = func() {
		end()
		t.closeReceivers() // after every goroutine has stopped
	}
	info := cfg.Method.Info()
	t.hello = wire.Hello{
		UUID: cfg.UUID, Channels: cfg.Channels, PageSize: DefaultPageSize,
		PacketPages: DefaultPacketPages, MethodFlag: info.Flag, Method: info.Name,
	}
	t.method, t.info = cfg.Method, info
	// QEMU's receive buffer is 2 x MULTIFD_PACKET_SIZE (QEMU 10 rejects
	// more), and QEMU 7.2 leaves a stale size in packets without pages.
	t.fmt = packetFormat{staleSize: true, maxPayload: 2 * DefaultPacketPages * DefaultPageSize}
	err := t.newReceivers()
	if err == nil {
		t.chans = make([]*recvChan, cfg.Channels)
		t.bar.init(cfg.Channels+1, t.syncPoint) // the main stream's marker is the last arrival
		err = t.handshake(&st.wg)
	}
	if err != nil {
		t.fail(err)
		err = t.failure()
		st.Close()
		return nil, err
	}
	r.mu.Lock()
	r.chans, r.method, r.ps, r.start, r.elapsed = t.chans, info.Name, DefaultPageSize, time.Now(), 0
	r.mu.Unlock()
	t.progressed()
	t.running.Store(true)
	return st, nil
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

// Main is the main channel, after its four bytes of magic.
func (st *Stream) Main() net.Conn { return st.t.main }

// Blocks sizes the destination from the stream's block list (r's Alloc)
// and starts the multifd channels: their packets name blocks, so they run
// only once the list is known (QEMU's first packet on every channel is a
// SYNC that waits for the marker after this list anyway).
func (st *Stream) Blocks(infos []BlockInfo) error {
	t := st.t
	mem, err := t.cfg.Alloc(infos)
	if err != nil {
		return fmt.Errorf("destination: %w", err)
	}
	t.mem = mem
	t.blocks = make(map[string]*dstBlock, len(infos))
	have := make(map[string]Block)
	for _, b := range mem.Blocks() {
		have[b.Name] = b
	}
	for _, in := range infos {
		dst, ok := have[in.Name]
		if !ok || uint64(len(dst.Data)) != in.Size {
			return fmt.Errorf("destination block %q: %d bytes, want %d", in.Name, len(dst.Data), in.Size)
		}
		t.blocks[in.Name] = blockOf(dst, DefaultPageSize, zeroed(mem))
		if t.onSync != nil && t.onPages == nil {
			t.blocks[in.Name].track()
		}
	}
	for _, c := range t.chans {
		st.wg.Add(1)
		st.chans.Add(1)
		go func() {
			defer st.wg.Done()
			defer st.chans.Done()
			if err := c.loop(); err != nil {
				t.fail(err)
			}
		}()
	}
	return nil
}

// page4k returns the destination page, or nil when a multifd channel
// already wrote it since the last sync point (see dstBlock).
func (st *Stream) page4k(block string, off uint64) []byte {
	b := st.t.blocks[block]
	if !b.claimWrite(off) {
		return nil
	}
	return b.data[off : off+DefaultPageSize]
}

// Zero applies a zero-page record of a block Blocks listed: the page
// becomes all fill bytes, unless a multifd packet wrote it since the
// last sync point.
func (st *Stream) Zero(block string, off uint64, fill byte) error {
	if fill == 0 {
		st.t.blocks[block].claimZero(off)
		return nil
	}
	pg := st.page4k(block, off)
	if pg == nil {
		return nil
	}
	for i := range pg {
		pg[i] = fill
	}
	return nil
}

// Page applies a page record: it reads the page from r into the
// destination, or drops it when a multifd packet wrote the page since
// the last sync point.
func (st *Stream) Page(block string, off uint64, r io.Reader) error {
	pg := st.page4k(block, off)
	if pg == nil {
		pg = make([]byte, DefaultPageSize) // rare: read and drop
	}
	if _, err := io.ReadFull(r, pg); err != nil {
		return fmt.Errorf("%w: page record: stream ends early", ErrBadStream)
	}
	return nil
}

// Sync is a sync marker of the main stream: it returns once every
// channel has reached its SYNC (and the OnSync hook has run).
func (st *Stream) Sync() error {
	t := st.t
	if err := t.bar.wait(t.ctx); err != nil {
		if t.ctx.Err() != nil {
			return t.failure()
		}
		return err
	}
	return nil
}

// Fail fails the transfer with err, unless it failed already, and
// returns the transfer's error.
func (st *Stream) Fail(err error) error {
	if st.t.ctx.Err() == nil {
		st.t.fail(err)
	}
	return st.t.failure()
}

// Finish ends a stream whose main channel has ended well after syncs
// sync points: it waits, at most drain, for QEMU to close the multifd
// channels, and checks that each delivered a SYNC for every sync point.
func (st *Stream) Finish(syncs uint64, drain time.Duration) (Memory, error) {
	t := st.t
	if t.mem == nil {
		return nil, st.Fail(fmt.Errorf("main channel: %w: no RAM in the stream", ErrBadStream))
	}
	drained := make(chan struct{})
	go func() {
		st.chans.Wait()
		close(drained)
	}()
	timer := time.NewTimer(drain)
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
		if s := c.ctr.syncs.Load(); s != syncs {
			return nil, &ChannelError{Channel: c.id, Packet: c.seq, Err: fmt.Errorf("%w: %d SYNC packets for %d sync points on the main channel", ErrBadPacket, s, syncs)}
		}
	}
	r := t.r
	r.mu.Lock()
	r.elapsed = time.Since(r.start)
	r.mu.Unlock()
	return t.mem, nil
}

// Close releases everything: it closes every connection, stops the
// transfer's goroutines and waits for them, then closes the method's
// receiving ends.
func (st *Stream) Close() { st.end() }
