package vmbus

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"time"
)

// loadWrite loads the writer's write_index and checks it: inside the data
// area, 8-aligned, and not behind what this end has already read (seen from
// the committed read_index, which the writer cannot pass). Taking back
// packets not yet read is tolerated: it only makes them unavailable.
func (r *Ring) loadWrite() (uint32, error) {
	if p := r.rd.priv; !r.validIndex(p) { // as found when attaching
		return 0, &ProtocolError{Field: "read_index", Offset: p, Value: uint64(p), Err: ErrBadIndex}
	}
	w := atomic.LoadUint32(r.windex) // acquire: packet bytes below are not stale
	if !r.validIndex(w) {
		return 0, &ProtocolError{Field: "write_index", Offset: r.rd.priv, Value: uint64(w), Err: ErrBadIndex}
	}
	if c, p := r.rd.committed, r.rd.priv; r.dist(c, w) < r.dist(c, p) {
		return 0, &ProtocolError{Field: "write_index", Offset: p, Value: uint64(w),
			Err: fmt.Errorf("%w: behind the %d bytes already read from %d", ErrBadIndex, r.dist(c, p), c)}
	}
	return w, nil
}

// Readable returns the bytes published and not yet read by this end
// (hv_pkt_iter_avail); 0 means the ring is empty.
func (r *Ring) Readable() (int, error) {
	if r.closed.Load() {
		return 0, ErrClosed
	}
	w, err := r.loadWrite()
	if err != nil {
		return 0, err
	}
	return int(r.dist(r.rd.priv, w)), nil
}

// Peek returns the descriptor of the next packet without consuming it. It
// returns ErrWouldBlock if there is none and a [*ProtocolError] if the
// packet breaks the rules of spec section 4: write_index valid, a whole
// descriptor available, 2 <= offset8 <= len8, len8*8 plus the trailer
// published, len8*8 <= MaxPacketSize. The type is not checked.
func (r *Ring) Peek() (Descriptor, error) {
	if r.closed.Load() {
		return Descriptor{}, ErrClosed
	}
	w, err := r.loadWrite()
	if err != nil {
		return Descriptor{}, err
	}
	p := r.rd.priv
	avail := r.dist(p, w)
	if avail == 0 {
		return Descriptor{}, ErrWouldBlock
	}
	if avail < DescriptorSize {
		return Descriptor{}, &ProtocolError{Field: "write_index", Offset: p, Value: uint64(w), Err: ErrTruncated}
	}
	var b [DescriptorSize]byte
	r.copyFrom(b[:], p) // read once; only the copy is used
	d := Descriptor{
		Type:    PacketType(binary.LittleEndian.Uint16(b[0:])),
		Offset8: binary.LittleEndian.Uint16(b[2:]),
		Len8:    binary.LittleEndian.Uint16(b[4:]),
		Flags:   binary.LittleEndian.Uint16(b[6:]),
		TransID: binary.LittleEndian.Uint64(b[8:]),
	}
	switch n := uint32(d.Len8) * 8; {
	case d.Len8 < 2:
		return Descriptor{}, &ProtocolError{Field: "len8", Offset: p, Value: uint64(d.Len8), Err: ErrBadDescriptor}
	case d.Offset8 < 2 || d.Offset8 > d.Len8:
		return Descriptor{}, &ProtocolError{Field: "offset8", Offset: p, Value: uint64(d.Offset8), Err: ErrBadDescriptor}
	case n+TrailerSize > avail:
		return Descriptor{}, &ProtocolError{Field: "len8", Offset: p, Value: uint64(d.Len8), Err: ErrTruncated}
	case n > r.maxPkt:
		return Descriptor{}, &ProtocolError{Field: "len8", Offset: p, Value: uint64(d.Len8), Err: ErrTooLarge}
	}
	return d, nil
}

// Next copies the next packet's payload (what follows offset8, the sender's
// padding included) into buf and moves past the packet without committing:
// the space is given back to the writer by Commit (hv_pkt_iter_next). It
// returns the descriptor and the payload length. If buf is too small it
// returns the descriptor, the length needed and ErrShortBuffer, and consumes
// nothing. Other errors are those of Peek.
func (r *Ring) Next(buf []byte) (Descriptor, int, error) {
	return r.next(buf, false)
}

func (r *Ring) next(buf []byte, raw bool) (Descriptor, int, error) {
	d, err := r.Peek()
	if err != nil {
		return Descriptor{}, 0, err
	}
	p := r.rd.priv
	start, n := r.add(p, uint32(d.Offset8)*8), d.PayloadLen()
	if raw {
		start, n = p, d.Len()
	}
	if len(buf) < n {
		return d, n, ErrShortBuffer
	}
	r.copyFrom(buf[:n], start)
	r.rd.priv = r.add(p, uint32(d.Len8)*8+TrailerSize)
	return d, n, nil
}

// NextView is Next without the copy: the payload is returned as one or, if
// it wraps around the end of the data area, two slices of the ring memory.
// They are valid until Commit (after which the writer reuses the space), and
// the peer can change their bytes at any time: copy before validating.
func (r *Ring) NextView() (d Descriptor, first, second []byte, err error) {
	d, err = r.Peek()
	if err != nil {
		return Descriptor{}, nil, nil, err
	}
	p := r.rd.priv
	start := r.add(p, uint32(d.Offset8)*8)
	end := start + uint32(d.PayloadLen())
	if end <= r.size {
		first = r.data[start:end:end]
	} else {
		first = r.data[start:r.size:r.size]
		second = r.data[: end-r.size : end-r.size]
	}
	r.rd.priv = r.add(p, uint32(d.Len8)*8+TrailerSize)
	return d, first, second, nil
}

// Commit gives the space of the packets read since the last commit back to
// the writer: it stores read_index and, if that lets a blocked writer go on
// (the pending_send_sz rule of docs/vmbus.md, evaluated over the whole batch),
// signals Config.NotifyWriter (hv_pkt_iter_close). Errors: a
// [*ProtocolError] for a bad pending_send_sz or write_index (read_index was
// stored all the same), or a failed signal.
func (r *Ring) Commit() error {
	if r.closed.Load() {
		return ErrClosed
	}
	return r.commit()
}

func (r *Ring) commit() error {
	p, old := r.rd.priv, r.rd.committed
	if p == old {
		return nil
	}
	atomic.StoreUint32(r.rindex, p) // after every read of the packets
	r.rd.committed = p
	sig, err := r.writerNeedsSignal(r.dist(old, p))
	if err != nil {
		return err
	}
	if s := r.cfg.NotifyWriter; sig && s != nil {
		if err := s.Signal(); err != nil {
			return fmt.Errorf("vmbus: packets consumed, but signaling the writer failed: %w", err)
		}
	}
	return nil
}

// writerNeedsSignal is the reader's decision of docs/vmbus.md after bytesRead
// bytes were freed, in uint32 arithmetic like Linux and DPDK.
func (r *Ring) writerNeedsSignal(bytesRead uint32) (bool, error) {
	if atomic.LoadUint32(r.features)&FeaturePendingSendSize == 0 {
		return false, nil
	}
	pending := atomic.LoadUint32(r.pending)
	if pending == 0 {
		return false, nil
	}
	if pending > r.size {
		return false, &ProtocolError{Field: "pending_send_sz", Offset: r.rd.committed, Value: uint64(pending), Err: ErrBadPending}
	}
	w, err := r.loadWrite()
	if err != nil {
		return false, err
	}
	free := r.size - r.dist(r.rd.committed, w)
	if free-bytesRead > pending { // there was room before: the writer was not blocked
		return false, nil
	}
	if free <= pending { // still not enough (exactly full is not enough)
		return false, nil
	}
	return true, nil
}

// TryRead reads one packet without blocking, as Linux's hv_ringbuffer_read
// and DPDK's rte_vmbus_chan_recv: Next, then Commit. Results and errors are
// those of Next; if only Commit fails, the packet was read and the returned
// values are valid.
func (r *Ring) TryRead(buf []byte) (Descriptor, int, error) {
	d, n, err := r.next(buf, false)
	if err != nil {
		return d, n, err
	}
	return d, n, r.commit()
}

// TryReadRaw is TryRead returning the whole packet, descriptor and header
// extension included (len8*8 bytes), as rte_vmbus_chan_recv_raw.
func (r *Ring) TryReadRaw(buf []byte) (Descriptor, int, error) {
	d, n, err := r.next(buf, true)
	if err != nil {
		return d, n, err
	}
	return d, n, r.commit()
}

// Read reads one packet like TryRead, waiting with WaitReadable while the
// ring is empty. It returns ctx.Err() when ctx is done and ErrClosed when
// the Ring is closed.
func (r *Ring) Read(ctx context.Context, buf []byte) (Descriptor, int, error) {
	for {
		d, n, err := r.TryRead(buf)
		if err != ErrWouldBlock {
			return d, n, err
		}
		if err := r.WaitReadable(ctx); err != nil {
			return Descriptor{}, 0, err
		}
	}
}

// BeginRead sets interrupt_mask: the writer will not signal while this end
// drains the ring (hv_begin_read).
func (r *Ring) BeginRead() {
	atomic.StoreUint32(r.imask, 1)
	r.rd.masked = true
}

// EndRead clears interrupt_mask and returns the bytes that arrived
// meanwhile (hv_end_read): if it is not 0, no signal was sent for them and
// the caller must drain again.
func (r *Ring) EndRead() (int, error) {
	r.unmask()
	return r.Readable()
}

func (r *Ring) unmask() {
	atomic.StoreUint32(r.imask, 0)
	r.rd.masked = false
	r.rd.unmasks++
}

// WaitReadable commits what was read, then waits until a packet is
// available, ctx is done (ctx.Err(), also when it was done on entry) or the
// Ring is closed (ErrClosed). It
// is the batched loop of docs/vmbus.md: it clears interrupt_mask and looks at the
// ring again before sleeping (data that arrived while the mask was set was
// not signaled), and sets interrupt_mask when it returns nil, so the writer
// does not signal while the caller drains; the next WaitReadable or EndRead
// clears it.
func (r *Ring) WaitReadable(ctx context.Context) error {
	if r.closed.Load() {
		return ErrClosed
	}
	if err := r.commit(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil { // bounds Read against a peer that flickers write_index
		return err
	}
	var delay time.Duration
	spun := r.cfg.Spin <= 0
	for {
		if r.rd.masked {
			r.unmask()
		}
		n, err := r.Readable()
		if err != nil {
			return err
		}
		if n > 0 {
			r.BeginRead()
			return nil
		}
		if !spun {
			// Still "draining" for the writer: masked, it does not signal.
			spun = true
			r.BeginRead()
			ok, err := r.spin(ctx, &r.rd.spin, func() (bool, error) { n, err := r.Readable(); return n > 0, err })
			if ok || err != nil {
				return err // nil: data, and interrupt_mask is set as promised
			}
			continue // unmask, look again, then sleep
		}
		ready, d := r.cfg.DataReady, r.poll
		if ready == nil {
			delay = r.backoff(delay)
			d = delay
		}
		r.rd.sleeps++
		if err := r.wait(ctx, ready, &r.rd.timer, d); err != nil {
			return err
		}
	}
}

// NextViewExt is NextView that also copies the packet's header extension
// (the bytes between the descriptor and offset8) into ext and returns its
// length; bytes beyond len(ext) are not copied. The stream framing of a
// Channel carries its frame header there.
func (r *Ring) NextViewExt(ext []byte) (d Descriptor, extLen int, first, second []byte, err error) {
	d, err = r.Peek()
	if err != nil {
		return Descriptor{}, 0, nil, nil, err
	}
	extLen = int(d.Offset8)*8 - DescriptorSize
	if n := min(extLen, len(ext)); n > 0 {
		r.copyFrom(ext[:n], r.add(r.rd.priv, DescriptorSize))
	}
	d, first, second, err = r.NextView()
	return d, extLen, first, second, err
}
