package vmbus

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Channel errors.
var (
	// ErrRescinded reports a channel the host withdrew (RESCIND_CHANNELOFFER)
	// or closed.
	ErrRescinded = errors.New("vmbus: channel rescinded")
	// ErrPeerGone reports a channel whose connection ended: the peer
	// process closed the control socket or died.
	ErrPeerGone = errors.New("vmbus: peer gone")
	// ErrBadFrame reports a stream frame that breaks the framing of
	// [Channel.Read]: wrong header extension, byte count beyond the payload.
	ErrBadFrame = errors.New("vmbus: bad stream frame")
)

// Default channel sizes.
const (
	// DefaultRingSize is the size of each of a channel's two rings, header
	// page included.
	DefaultRingSize = 1<<20 + PageSize
	// DefaultFrameSize is the largest stream frame's data.
	DefaultFrameSize = 64 << 10
)

// frameExt is the stream frame header in the packet's header extension:
// u32 byte count, u32 flags.
const (
	frameExt = 8
	frameFIN = 1
)

// Channel is one open channel: an outbound ring this end writes and an
// inbound ring it reads, in one shared region, plus the signals between the
// ends. It is a [net.Conn]: Write splits the byte stream into in-band ring
// packets (type VM_PKT_DATA_INBAND, trans_id a frame counter, the frame's
// byte count in an 8-byte header extension), Read returns their bytes, and
// Close sends an end-of-stream frame the peer reads as [io.EOF]. One
// goroutine may Read while another Writes; Close and the deadline setters may
// be called from any goroutine. Close unblocks Read and Write and waits for
// them before it releases the shared memory.
type Channel struct {
	relid uint32
	sub   uint16
	out   *Ring
	in    *Ring

	dataReady  chan struct{} // the peer wrote to in
	spaceReady chan struct{} // the peer freed space in out

	rmu    sync.Mutex // held by Read for its whole call
	rframe []byte     // rest of the frame being read (one piece)
	rnext  []byte     // second piece of a wrapped frame
	rfin   bool       // the peer's FIN was read
	rerr   error      // sticky read error

	wmu   sync.Mutex // held by Write for its whole call
	wseq  uint64
	wext  [frameExt]byte
	wfin  bool
	wcut  bool               // Close stopped a Write: the stream is cut short, no end of stream
	wstop context.CancelFunc // cancels the write contexts: Close stops a running Write

	rdl, wdl deadline

	failMu  sync.Mutex
	failErr error // ErrRescinded or ErrPeerGone (wrapped): why the peer is gone
	done    chan struct{}

	closeOnce sync.Once
	closeErr  error
	onClose   func(*Channel) // the connection's part of Close
	release   func()         // unmaps and closes fds once nothing runs
	poll      time.Duration
	frameMax  int

	// Test hooks: the reader found the ring empty; a Write wrote its
	// last frame (wmu held).
	testEmpty, testWrote func()
}

// ChannelConfig sizes a channel's rings and frames. Zero values mean the
// defaults.
type ChannelConfig struct {
	// SendSize and RecvSize are the outbound (guest->host) and inbound
	// ring sizes, header pages included: multiples of PageSize, at least
	// MinRingSize. Default DefaultRingSize.
	SendSize, RecvSize int
	// FrameSize is the largest stream frame's data. Default
	// DefaultFrameSize, and at most what the smaller ring holds.
	FrameSize int
	// Spin is the rings' [Config].Spin: how long a blocked read or write
	// keeps looking before it waits for a signal. Default DefaultSpin;
	// negative: never.
	Spin time.Duration
}

// DefaultSpin is the default [ChannelConfig].Spin.
var DefaultSpin = 50 * time.Microsecond

func (c ChannelConfig) withDefaults() (ChannelConfig, error) {
	if c.SendSize == 0 {
		c.SendSize = DefaultRingSize
	}
	if c.RecvSize == 0 {
		c.RecvSize = DefaultRingSize
	}
	for _, s := range []int{c.SendSize, c.RecvSize} {
		if s%PageSize != 0 || s < MinRingSize || s > MaxRingSize {
			return c, fmt.Errorf("%w: ring size %d (want a multiple of %d from %d to %d)", ErrInvalid, s, PageSize, MinRingSize, MaxRingSize)
		}
	}
	if c.FrameSize == 0 {
		c.FrameSize = DefaultFrameSize
	}
	if c.Spin == 0 {
		c.Spin = DefaultSpin
	}
	limit := frameLimit(min(c.SendSize, c.RecvSize))
	c.FrameSize = min(c.FrameSize, limit)
	if c.FrameSize <= 0 {
		return c, fmt.Errorf("%w: frame size %d", ErrInvalid, c.FrameSize)
	}
	return c, nil
}

// frameLimit is the largest frame data a ring of ringSize bytes carries:
// the packet (descriptor, frame header, data) at most D-16 and MaxPacketLen.
func frameLimit(ringSize int) int {
	pkt := min(ringSize-HeaderSize-DescriptorSize, MaxPacketLen)
	return (pkt - DescriptorSize - frameExt) &^ 7
}

// wiring is how a channel's end signals its peer and is woken.
type wiring struct {
	signal     Signaler // the peer's doorbell (eventfd or in-process)
	dataReady  chan struct{}
	spaceReady chan struct{}
}

// newChannel attaches to outMem (written here) and inMem (read here).
func newChannel(relid uint32, sub uint16, outMem, inMem []byte, frame int, w wiring, poll, spin time.Duration) (*Channel, error) {
	maxPkt := min(DescriptorSize+frameExt+frame, MaxPacketLen)
	c := &Channel{relid: relid, sub: sub, dataReady: w.dataReady, spaceReady: w.spaceReady,
		done: make(chan struct{}), poll: poll, frameMax: frame}
	if c.poll == 0 {
		c.poll = defaultPoll
	}
	var err error
	c.out, err = NewRing(outMem, Config{MaxPacketSize: maxPkt, NotifyReader: w.signal, SpaceReady: w.spaceReady, PollInterval: poll, Spin: spin})
	if err != nil {
		return nil, fmt.Errorf("outbound ring: %w", err)
	}
	// The peer's frames may be as large as any packet: its frame size is
	// its business, the ring checks bound it.
	c.in, err = NewRing(inMem, Config{MaxPacketSize: MaxPacketLen, NotifyWriter: w.signal, DataReady: w.dataReady, PollInterval: poll, Spin: spin})
	if err != nil {
		return nil, fmt.Errorf("inbound ring: %w", err)
	}
	if _, err := c.out.Writable(); err != nil {
		return nil, fmt.Errorf("outbound ring: %w", err)
	}
	if _, err := c.in.Readable(); err != nil {
		return nil, fmt.Errorf("inbound ring: %w", err)
	}
	c.rdl.init(context.Background())
	wctx, stop := context.WithCancel(context.Background())
	c.wdl.init(wctx)
	c.wstop = stop
	return c, nil
}

// Relid is the channel's child_relid.
func (c *Channel) Relid() uint32 { return c.relid }

// SubChannel is the offer's sub_channel_index: 0 for a primary channel.
func (c *Channel) SubChannel() uint16 { return c.sub }

// Out is the ring this end writes; In the ring it reads. For benchmarks
// and tests that move raw packets; do not mix with Read and Write.
func (c *Channel) Out() *Ring { return c.out }

// In is the ring this end reads.
func (c *Channel) In() *Ring { return c.in }

// FrameSize is the largest frame Write puts in one packet.
func (c *Channel) FrameSize() int { return c.frameMax }

// fail records why the peer is gone and unblocks Write (Read drains what
// is in the ring first).
func (c *Channel) fail(err error) {
	c.failMu.Lock()
	if c.failErr == nil {
		c.failErr = err
	}
	c.failMu.Unlock()
	c.out.Close()
	select {
	case c.dataReady <- struct{}{}:
	default:
	}
}

func (c *Channel) failure() error {
	c.failMu.Lock()
	defer c.failMu.Unlock()
	return c.failErr
}

// Read implements [io.Reader] over the peer's frames. It returns io.EOF
// after the peer's Close, the reason (matching ErrRescinded or ErrPeerGone)
// when the peer went away without one, an error matching ErrProtocol or
// ErrBadFrame when the peer broke the ring or the framing, and an error
// matching os.ErrDeadlineExceeded after the read deadline.
func (c *Channel) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.rerr != nil {
		return 0, c.rerr
	}
	if len(p) == 0 {
		return 0, nil
	}
	for len(c.rframe) == 0 && len(c.rnext) == 0 {
		if c.rfin {
			return 0, io.EOF
		}
		if err := c.nextFrame(); err != nil {
			if err != io.EOF && !isTimeout(err) {
				c.rerr = err
			}
			return 0, err
		}
	}
	n := copy(p, c.rframe)
	c.rframe = c.rframe[n:]
	if len(c.rframe) == 0 && len(c.rnext) > 0 {
		c.rframe, c.rnext = c.rnext, nil
		m := copy(p[n:], c.rframe)
		c.rframe = c.rframe[m:]
		n += m
	}
	return n, nil
}

// nextFrame commits the frame just consumed and makes the next one
// current, waiting for it as docs/vmbus.md describes: interrupt_mask set while
// draining, cleared and re-checked before sleeping.
func (c *Channel) nextFrame() error {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	spun := c.in.cfg.Spin <= 0
	// The frame just consumed was a view into the ring: give its space
	// back now (per frame, as hv_ringbuffer_read commits per packet).
	if err := c.in.Commit(); err != nil {
		if errors.Is(err, ErrClosed) {
			return net.ErrClosed
		}
		return c.errf("%w", err)
	}
	for {
		select {
		case <-c.done:
			return net.ErrClosed
		default:
		}
		var ext [frameExt]byte
		d, extLen, first, second, err := c.in.NextViewExt(ext[:])
		if err == nil {
			return c.takeFrame(d, extLen, ext, first, second)
		}
		if err != ErrWouldBlock {
			if errors.Is(err, ErrClosed) {
				return net.ErrClosed
			}
			return c.errf("%w", err)
		}
		if err := c.in.Commit(); err != nil && !errors.Is(err, ErrClosed) {
			return c.errf("%w", err)
		}
		// Whether the peer is gone, loaded before the ring is looked at:
		// it wrote its last frames (its end of stream) before it closed
		// the channel, so an empty ring seen after the failure means
		// nothing is left; seen before, the frames may still be coming.
		gone := c.failure()
		n, err := c.in.EndRead()
		if err != nil {
			return c.errf("%w", err)
		}
		if n > 0 {
			c.in.BeginRead()
			continue
		}
		if c.testEmpty != nil {
			c.testEmpty()
		}
		if gone != nil {
			return gone // nothing left from a peer that is gone
		}
		ctx := c.rdl.context()
		if !spun {
			// Look for a while, masked, before paying for a signal.
			spun = true
			c.in.BeginRead()
			_, err := c.in.spin(ctx, &c.in.rd.spin, func() (bool, error) {
				if c.failure() != nil {
					return true, nil
				}
				n, err := c.in.Readable()
				return n > 0, err
			})
			switch {
			case err == nil:
				continue // data, a gone peer, or time to sleep: look again unmasked
			case errors.Is(err, ErrClosed):
				return net.ErrClosed
			case ctx.Err() != nil:
				return deadlineErr(ctx)
			default:
				return c.errf("%w", err)
			}
		}
		if timer == nil {
			timer = time.NewTimer(c.poll)
		} else {
			timer.Reset(c.poll)
		}
		select {
		case <-c.dataReady:
		case <-timer.C:
		case <-ctx.Done():
			return deadlineErr(ctx)
		case <-c.done:
			return net.ErrClosed
		}
		c.in.BeginRead()
	}
}

func (c *Channel) takeFrame(d Descriptor, extLen int, ext [frameExt]byte, first, second []byte) error {
	if d.Type != PacketDataInband || extLen != frameExt {
		return c.errf("%w: packet type %d with a %d-byte header extension, want in-band with %d", ErrBadFrame, d.Type, extLen, frameExt)
	}
	n := int(binary.LittleEndian.Uint32(ext[0:]))
	flags := binary.LittleEndian.Uint32(ext[4:])
	size := d.PayloadLen()
	if n > size || size-n >= 8 || flags&^frameFIN != 0 {
		return c.errf("%w: frame %d says %d bytes, flags %#x, in a %d-byte payload", ErrBadFrame, d.TransID, n, flags, size)
	}
	if flags&frameFIN != 0 {
		c.rfin = true
	}
	if n <= len(first) {
		c.rframe, c.rnext = first[:n], nil
	} else {
		c.rframe, c.rnext = first, second[:n-len(first)]
	}
	if c.rfin && n == 0 {
		return io.EOF
	}
	return nil
}

func (c *Channel) errf(format string, args ...any) error {
	return fmt.Errorf("vmbus: channel %d: "+format, append([]any{c.relid}, args...)...)
}

// Write implements [io.Writer]: it writes p in frames of at most FrameSize
// bytes, waiting for space while the ring is full. A Close meanwhile stops
// it after the frame being written, and it returns net.ErrClosed.
func (c *Channel) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.wfin {
		return 0, net.ErrClosed
	}
	total := 0
	for len(p) > 0 {
		if c.wdl.base.Err() != nil { // Close waits for us
			c.wcut = true
			return total, net.ErrClosed
		}
		n := min(len(p), c.frameMax)
		if err := c.writeFrame(c.wdl.context(), p[:n], 0); err != nil {
			return total, err
		}
		total += n
		p = p[n:]
	}
	if c.testWrote != nil {
		c.testWrote()
	}
	return total, nil
}

func (c *Channel) writeFrame(ctx context.Context, p []byte, flags uint32) error {
	binary.LittleEndian.PutUint32(c.wext[0:], uint32(len(p)))
	binary.LittleEndian.PutUint32(c.wext[4:], flags)
	h := Header{Type: PacketDataInband, TransID: c.wseq, Ext: c.wext[:]}
	if err := c.out.Write(ctx, h, p); err != nil {
		stopped := errors.Is(err, context.Canceled) // by Close
		if errors.Is(err, ErrClosed) || stopped {
			if f := c.failure(); f != nil {
				return f
			}
			c.wcut = c.wcut || stopped
			return net.ErrClosed
		}
		if ctx.Err() != nil {
			return deadlineErr(ctx)
		}
		return c.errf("%w", err)
	}
	c.wseq++
	return nil
}

// CloseWrite sends the end-of-stream frame: the peer's Read returns io.EOF
// once it has read everything before it. Later Writes fail.
func (c *Channel) CloseWrite() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.closeWrite(c.wdl.base) // a Close meanwhile stops it
}

// closeWrite writes the end-of-stream frame once, within ctx and the
// write deadline or, without one, 5 seconds: a peer that stopped reading
// must not hold Close forever.
func (c *Channel) closeWrite(ctx context.Context) error {
	if c.wfin {
		return nil
	}
	c.wfin = true
	if c.failure() != nil {
		return nil
	}
	end := time.Now().Add(5 * time.Second)
	if t, ok := c.wdl.context().Deadline(); ok && t.After(time.Now()) {
		end = t
	}
	ctx, cancel := context.WithDeadline(ctx, end)
	defer cancel()
	return c.writeFrame(ctx, nil, frameFIN)
}

// Close ends the stream and the channel. It stops a Write in progress
// after the frame being written (at once if it waits for ring space); that
// Write returns net.ErrClosed and, the stream being cut short, Close sends
// no end-of-stream frame. Otherwise, a Write that wrote all its bytes
// included, Close sends one (if the peer is still there), which the peer
// reads as io.EOF after everything before it. Then Close tells the
// connection (the guest posts CLOSECHANNEL and tears the GPADL down; the
// host rescinds a channel the guest did not close), unblocks Read, waits
// for it and releases the shared memory and file descriptors. Later calls
// return net.ErrClosed. Close is idempotent.
func (c *Channel) Close() error {
	c.closeOnce.Do(func() {
		if !c.wmu.TryLock() {
			// A Write holds the lock, maybe only until it returns: stop
			// it, then wait for it.
			c.wstop()
			c.wmu.Lock()
		}
		if !c.wcut {
			c.closeErr = c.closeWrite(context.Background())
		}
		c.wmu.Unlock()
		close(c.done)
		c.out.Close()
		c.in.Close()
		c.rdl.set(time.Time{})
		c.wdl.set(time.Time{})
		// Nothing runs on the rings after these.
		c.rmu.Lock()
		c.wmu.Lock()
		if c.onClose != nil {
			c.onClose(c)
		}
		if c.release != nil {
			c.release()
		}
		c.rerr = net.ErrClosed
		c.wfin = true
		c.wmu.Unlock()
		c.rmu.Unlock()
		c.rdl.stop()
		c.wdl.stop()
		c.wstop()
	})
	return c.closeErr
}

// LocalAddr implements net.Conn.
func (c *Channel) LocalAddr() net.Addr { return Addr{Relid: c.relid} }

// RemoteAddr implements net.Conn.
func (c *Channel) RemoteAddr() net.Addr { return Addr{Relid: c.relid} }

// SetDeadline implements net.Conn.
func (c *Channel) SetDeadline(t time.Time) error {
	c.rdl.set(t)
	c.wdl.set(t)
	return nil
}

// SetReadDeadline implements net.Conn.
func (c *Channel) SetReadDeadline(t time.Time) error { c.rdl.set(t); return nil }

// SetWriteDeadline implements net.Conn.
func (c *Channel) SetWriteDeadline(t time.Time) error { c.wdl.set(t); return nil }

// Addr is a channel's address: its relid.
type Addr struct{ Relid uint32 }

// Network implements net.Addr.
func (Addr) Network() string { return "vmbus" }

func (a Addr) String() string { return fmt.Sprintf("relid %d", a.Relid) }

// deadline is a read or write deadline as a context derived from base,
// replaced by set.
type deadline struct {
	base   context.Context // set by init only
	mu     sync.Mutex
	ctx    context.Context
	cancel context.CancelFunc
}

func (d *deadline) init(base context.Context) { d.base, d.ctx = base, base }

func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cancel != nil {
		d.cancel()
		d.cancel = nil
	}
	if t.IsZero() {
		d.ctx = d.base
		return
	}
	d.ctx, d.cancel = context.WithDeadline(d.base, t)
}

func (d *deadline) stop() { d.set(time.Time{}) }

func (d *deadline) context() context.Context {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ctx
}

type timeoutError struct{}

func (timeoutError) Error() string   { return "vmbus: i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }
func (timeoutError) Is(err error) bool {
	return err == os.ErrDeadlineExceeded || err == context.DeadlineExceeded
}

func deadlineErr(ctx context.Context) error {
	if ctx.Err() == context.DeadlineExceeded {
		return timeoutError{}
	}
	return ctx.Err()
}

func isTimeout(err error) bool { _, ok := err.(timeoutError); return ok }

// NewPipe returns the two ends of a channel in one process, over plain
// memory and Doorbells: for tests and in-process benchmarks. a plays the
// guest (it writes the first ring), b the host.
func NewPipe(cfg ChannelConfig) (a, b *Channel, err error) {
	cfg, err = cfg.withDefaults()
	if err != nil {
		return nil, nil, err
	}
	mem := make([]byte, cfg.SendSize+cfg.RecvSize)
	send, recv := mem[:cfg.SendSize], mem[cfg.SendSize:]
	InitRing(send)
	InitRing(recv)
	aw := wiring{dataReady: make(chan struct{}, 1), spaceReady: make(chan struct{}, 1)}
	bw := wiring{dataReady: make(chan struct{}, 1), spaceReady: make(chan struct{}, 1)}
	aw.signal = fanout(bw)
	bw.signal = fanout(aw)
	if a, err = newChannel(1, 0, send, recv, cfg.FrameSize, aw, 0, cfg.Spin); err != nil {
		return nil, nil, err
	}
	if b, err = newChannel(1, 0, recv, send, cfg.FrameSize, bw, 0, cfg.Spin); err != nil {
		return nil, nil, err
	}
	return a, b, nil
}

// fanout is the in-process doorbell of an end: one signal wakes both its
// reader and its writer, as one eventfd does.
func fanout(w wiring) Signaler {
	return &countingSignaler{fn: func() { w.wake() }}
}

func (w wiring) wake() {
	select {
	case w.dataReady <- struct{}{}:
	default:
	}
	select {
	case w.spaceReady <- struct{}{}:
	default:
	}
}

// countingSignaler counts the signals it sends.
type countingSignaler struct {
	n  atomic.Uint64
	fn func()
}

func (s *countingSignaler) Signal() error {
	s.n.Add(1)
	s.fn()
	return nil
}

// Signals is the number of signals this end sent its peer.
func (c *Channel) Signals() uint64 {
	if s, ok := c.out.cfg.NotifyReader.(interface{ count() uint64 }); ok {
		return s.count()
	}
	return 0
}

func (s *countingSignaler) count() uint64 { return s.n.Load() }

// eventfdSignaler writes to the peer's eventfd. The fd stays valid until
// closeFd, which waits for a Signal in progress.
type eventfdSignaler struct {
	mu sync.RWMutex
	fd int
	n  atomic.Uint64
}

var one = [8]byte{1}

func (s *eventfdSignaler) Signal() error {
	s.n.Add(1)
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.fd < 0 {
		return net.ErrClosed
	}
	for {
		_, err := unix.Write(s.fd, one[:])
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN { // the counter is saturated: the peer will wake
			return nil
		}
		return err
	}
}

func (s *eventfdSignaler) count() uint64 { return s.n.Load() }

func (s *eventfdSignaler) closeFd() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fd >= 0 {
		unix.Close(s.fd)
		s.fd = -1
	}
}

// eventfdPump reads this end's eventfd and wakes the channel's reader and
// writer. stop closes the eventfd and waits for the goroutine.
type eventfdPump struct {
	f  *os.File
	wg sync.WaitGroup
}

func startPump(fd int, w wiring) *eventfdPump {
	p := &eventfdPump{f: os.NewFile(uintptr(fd), "vmbus-eventfd")}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		var b [8]byte
		for {
			if _, err := p.f.Read(b[:]); err != nil {
				return
			}
			w.wake()
		}
	}()
	return p
}

func (p *eventfdPump) stop() {
	p.f.Close()
	p.wg.Wait()
}
