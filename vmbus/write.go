package vmbus

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"time"
)

// Writable returns the free bytes of the ring as its writer sees them
// (hv_get_bytes_to_write). A packet that occupies n bytes with its trailer
// fits iff n < Writable(): the ring is never filled completely.
func (r *Ring) Writable() (int, error) {
	if r.closed.Load() {
		return 0, ErrClosed
	}
	rd, err := r.loadRead()
	if err != nil {
		return 0, err
	}
	return int(r.size - r.dist(rd, r.wr.priv)), nil
}

// loadRead loads the reader's read_index and checks it: inside the data
// area, 8-aligned, and moved forward by at most what was written since the
// last look.
func (r *Ring) loadRead() (uint32, error) {
	if w := r.wr.priv; !r.validIndex(w) { // as found when attaching
		return 0, &ProtocolError{Field: "write_index", Offset: w, Value: uint64(w), Err: ErrBadIndex}
	}
	rd := atomic.LoadUint32(r.rindex)
	if !r.validIndex(rd) {
		return 0, &ProtocolError{Field: "read_index", Offset: r.wr.priv, Value: uint64(rd), Err: ErrBadIndex}
	}
	last := r.wr.lastR
	if r.validIndex(last) && r.dist(last, rd) > r.dist(last, r.wr.priv) {
		return 0, &ProtocolError{Field: "read_index", Offset: r.wr.priv, Value: uint64(rd),
			Err: fmt.Errorf("%w: moved from %d to outside [%d, %d]", ErrBadIndex, last, last, r.wr.priv)}
	}
	r.wr.lastR = rd
	return rd, nil
}

// TryWrite writes one packet without blocking, as Linux's
// hv_ringbuffer_write: the descriptor {h.Type, offset8, len8, h.Flags,
// h.TransID}, h.Ext, payload, zero padding to a multiple of 8, and the
// 8-byte trailer (the packet's start offset << 32); then it publishes
// write_index and, if the reader needs it (interrupt_mask clear and the ring
// empty before this packet), signals Config.NotifyReader.
//
// It returns ErrWouldBlock if the packet does not fit now (nothing is
// written), an error matching ErrTooLarge if it can never be written, a
// [*ProtocolError] for a bad read_index. If only the signal fails, the
// packet was written and the error says so.
func (r *Ring) TryWrite(h Header, payload []byte) error {
	_, err := r.tryWrite(h, payload)
	return err
}

// tryWrite is TryWrite; it also returns the bytes the packet needs with its
// trailer (0 if the packet is refused outright).
func (r *Ring) tryWrite(h Header, payload []byte) (uint32, error) {
	if r.closed.Load() {
		return 0, ErrClosed
	}
	ext := len(h.Ext)
	if ext%8 != 0 {
		return 0, fmt.Errorf("%w: header extension of %d bytes is not a multiple of 8", ErrInvalid, ext)
	}
	raw := DescriptorSize + ext + len(payload)
	pktLen := (raw + 7) &^ 7
	if pktLen > int(r.maxPkt) {
		return 0, fmt.Errorf("%w: %d bytes, the limit is %d", ErrTooLarge, pktLen, r.maxPkt)
	}
	total := uint32(pktLen + TrailerSize)
	if total >= r.size {
		return 0, &tooLargeForRing{need: pktLen, max: int(r.size) - DescriptorSize}
	}
	rd, err := r.loadRead()
	if err != nil {
		return total, err
	}
	old := r.wr.priv
	if free := r.size - r.dist(rd, old); free <= total {
		return total, ErrWouldBlock
	}

	var d [DescriptorSize]byte
	binary.LittleEndian.PutUint16(d[0:], uint16(h.Type))
	binary.LittleEndian.PutUint16(d[2:], uint16((DescriptorSize+ext)/8))
	binary.LittleEndian.PutUint16(d[4:], uint16(pktLen/8))
	binary.LittleEndian.PutUint16(d[6:], h.Flags)
	binary.LittleEndian.PutUint64(d[8:], h.TransID)
	off := r.copyTo(old, d[:])
	if ext > 0 {
		off = r.copyTo(off, h.Ext)
	}
	off = r.copyTo(off, payload)
	if pad := pktLen - raw; pad > 0 {
		off = r.zeroAt(off, uint32(pad))
	}
	var t [TrailerSize]byte
	binary.LittleEndian.PutUint64(t[:], uint64(old)<<32)
	off = r.copyTo(off, t[:])
	r.wr.priv = off
	atomic.StoreUint32(r.windex, off) // release: the packet is visible first

	// hv_signal_on_write: only on empty -> non-empty, and not while the
	// reader has masked interrupts. Any non-zero mask means masked.
	if atomic.LoadUint32(r.imask) != 0 || atomic.LoadUint32(r.rindex) != old {
		return total, nil
	}
	if s := r.cfg.NotifyReader; s != nil {
		if err := s.Signal(); err != nil {
			return total, fmt.Errorf("vmbus: packet written, but signaling the reader failed: %w", err)
		}
	}
	return total, nil
}

// Write writes one packet like TryWrite, waiting for space while the ring is
// full: it stores pending_send_sz (the packet's size with its trailer, spec
// 2.2), checks the space once more, then waits for Config.SpaceReady (or
// polls) until the packet fits, ctx is done (ctx.Err()) or the Ring is
// closed (ErrClosed). pending_send_sz is cleared before it returns.
func (r *Ring) Write(ctx context.Context, h Header, payload []byte) error {
	var delay time.Duration
	spun := r.cfg.Spin <= 0
	for {
		total, err := r.tryWrite(h, payload)
		if err != ErrWouldBlock {
			r.clearPending()
			return err
		}
		if !r.wr.pendingSet && !spun {
			// Look for a while before announcing the need: a reader that
			// frees the space meanwhile has no reason to signal.
			spun = true
			ok, err := r.spin(ctx, &r.wr.spin, func() (bool, error) {
				f, err := r.Writable()
				return err == nil && f > int(total), err
			})
			if ok || err == nil {
				continue
			}
			return err
		}
		if !r.wr.pendingSet {
			// Announce the need, then look again: a reader that freed the
			// space before it could see pending_send_sz will not signal.
			atomic.StoreUint32(r.pending, total)
			r.wr.pendingSet = true
			r.wr.blocks++
			continue
		}
		ready, d := r.cfg.SpaceReady, r.poll
		if ready == nil || atomic.LoadUint32(r.features)&FeaturePendingSendSize == 0 {
			// Nobody will signal: poll.
			delay = r.backoff(delay)
			d = delay
		}
		if err := r.wait(ctx, ready, &r.wr.timer, d); err != nil {
			r.clearPending()
			return err
		}
	}
}

func (r *Ring) clearPending() {
	if r.wr.pendingSet {
		atomic.StoreUint32(r.pending, 0)
		r.wr.pendingSet = false
	}
}
