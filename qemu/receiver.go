package qemu

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

	"github.com/pagewire/pagewire/core"
	"github.com/pagewire/pagewire/internal/engine"
	"github.com/pagewire/pagewire/sdk"
)

// Config configures a [Receiver]. Like QEMU's own destination, it must
// be told what the source uses: nothing on the wire negotiates the
// channel count or the method.
type Config struct {
	Channels int // the source's multifd-channels (QEMU's default is 2)
	// Dialect, when set, is the dialect the source must speak; otherwise
	// the stream tells (see [Dialect72], [Dialect10]).
	Dialect Dialect
	// Method is the source's multifd-compression; nil detects it: the
	// first packet with pages names it among [Methods] (none, zlib,
	// zstd), and a later packet of another method is an error.
	Method sdk.Method
	UUID   [16]byte // the source's -uuid; all zero without one
	// Alloc makes the destination from the block list of the stream's
	// MEM_SIZE record; nil is [core.Alloc].
	Alloc func([]core.BlockInfo) (core.Memory, error)
	// OnDeviceState receives the blobs of device-state packets (QEMU 10,
	// VFIO), from the channel goroutines, possibly concurrently; it must
	// not keep blob. Nil discards them.
	OnDeviceState func(idstr string, instance uint32, blob []byte) error
	// Main, when not nil, receives every byte of the main channel.
	Main io.Writer
	// OnSync, when not nil, runs at every sync point while the main
	// stream and all channels wait there; its SyncPoint's Main holds the
	// main stream up to the marker. After Receive the rest of the stream
	// is [Receiver.MainTail].
	OnSync func(*SyncPoint) error
	// OnPages, when not nil, sees the pages of every multifd packet once
	// they are in memory (see [core.ReceiverConfig].OnPages).
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

// Stats describes a migration from a QEMU source.
type Stats struct {
	core.Stats
	Machine       string `json:"machine"`
	MainBytes     int64  `json:"main_bytes"`
	MainZeroPages uint64 `json:"main_zero_pages"` // zero pages sent on the main channel
	MainPages     uint64 `json:"main_pages"`      // pages sent on the main channel
	SyncPoints    uint64 `json:"sync_points"`     // EOS (7.2) or MULTIFD_FLUSH (10.0) markers
	DeviceBytes   int64  `json:"device_bytes"`    // device state and trailer, kept
	VMDesc        bool   `json:"vmdesc"`
}

// SyncPoint is a sync point as an OnSync hook sees it (see
// [core.SyncPoint]); Main is the main stream's bytes since the last one,
// through this one's marker.
type SyncPoint = core.SyncPoint

// Receiver receives a live migration from a QEMU 7.2 or 10.0 source with
// the multifd capability: the main channel and N multifd channels, told
// apart by their first four bytes. It reads the main stream's RAM
// sections (block list, zero pages, pages, the markers that order the
// multifd SYNCs), applies the multifd packets, and keeps the device state
// that follows the RAM unparsed (see Config.Main).
type Receiver struct {
	cfg  Config
	r    *engine.Receiver // the multifd channels and their statistics
	main atomic.Int64
	mu   sync.Mutex
	qf   *qemuFile
	done bool // the parser has returned; its plain fields may be read

	pend     bytes.Buffer // main stream bytes since the last sync point (OnSync)
	consumed int          // of pend, once Receive has returned
}

// NewReceiver returns a receiver for one QEMU migration.
func NewReceiver(cfg Config) *Receiver {
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = 10 * time.Second
	}
	rc := core.ReceiverConfig{
		Channels: cfg.Channels, Method: cfg.Method, UUID: cfg.UUID, Alloc: cfg.Alloc,
		Timeout: cfg.Timeout, HandshakeTimeout: cfg.HandshakeTimeout, OnDeviceState: cfg.OnDeviceState,
	}
	return &Receiver{cfg: cfg, r: engine.NewReceiver(rc)}
}

// MainTail is, with an OnSync hook, the main stream after the last sync
// point (the device state and the end of the stream), once Receive has
// returned without error.
func (q *Receiver) MainTail() []byte {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.done {
		return nil
	}
	return q.pend.Bytes()[:max(q.consumed, 0)]
}

// Stats returns the migration's statistics so far; any goroutine may call.
func (q *Receiver) Stats() Stats {
	st := Stats{Stats: q.r.Stats(), MainBytes: q.main.Load()}
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
// multifd channel has delivered its last SYNC. It closes ln and leaves
// no goroutine behind.
func (q *Receiver) Receive(ctx context.Context, ln net.Listener) (core.Memory, error) {
	var qf *qemuFile
	var last int // bytes of pend the hook saw last
	var chunk func() []byte
	if q.cfg.OnSync != nil {
		// The parser is parked at a marker: what it consumed since the
		// last one is what was read minus what bufio holds ahead.
		chunk = func() []byte {
			q.pend.Next(last)
			last = q.pend.Len() - qf.r.Buffered()
			return q.pend.Bytes()[:last]
		}
	}
	st, err := q.r.OpenStream(ctx, ln, engine.StreamConfig{
		Channels: q.cfg.Channels, Method: q.cfg.Method, Detect: Methods(), UUID: q.cfg.UUID,
		OnSync: q.cfg.OnSync, OnPages: q.cfg.OnPages, Chunk: chunk,
	})
	if err != nil {
		return nil, err
	}
	defer st.Close()
	var in io.Reader = io.MultiReader(bytes.NewReader([]byte("QEVM")), st.Main())
	in = countingReader{in, &q.main}
	if q.cfg.Main != nil {
		in = io.TeeReader(in, q.cfg.Main)
	}
	if q.cfg.OnSync != nil {
		in = io.TeeReader(in, &q.pend)
	}
	qf = &qemuFile{r: bufio.NewReaderSize(in, 64<<10), sink: st}
	if q.cfg.Dialect != "" {
		qf.dialect.Store(q.cfg.Dialect)
	}
	q.mu.Lock()
	q.qf = qf
	q.mu.Unlock()
	err = qf.run()
	q.mu.Lock()
	if err == nil && q.cfg.OnSync != nil {
		// The main stream has ended: no sync point can follow.
		q.pend.Next(last)
		q.consumed = q.pend.Len() - qf.r.Buffered()
	}
	q.done = true
	q.mu.Unlock()
	if err != nil {
		return nil, st.Fail(fmt.Errorf("main channel: %w", err))
	}
	return st.Finish(qf.SyncPoints.Load(), q.cfg.DrainTimeout)
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
