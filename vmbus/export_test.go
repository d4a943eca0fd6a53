package vmbus

import (
	"sync/atomic"
	"time"
)

// Test hooks.

// WriterIndex is the writer's private write index (DPDK's
// writer_private_write_index in the vectors).
func (r *Ring) WriterIndex() uint32 { return r.wr.priv }

// ReaderIndex is the reader's private read index (priv_read_index).
func (r *Ring) ReaderIndex() uint32 { return r.rd.priv }

// Resync takes the read_index now in the header as both ends' starting
// point, as after a test stored read_index directly: the reader continues
// there (DPDK's reader keeps no private index, so a vector's poke of
// read_index moves it) and the writer checks later moves from there.
func (r *Ring) Resync() {
	i := atomic.LoadUint32(r.rindex)
	r.rd.priv, r.rd.committed = i, i
	r.wr.lastR = i
}

// WriterNeedsSignal is the reader's pending_send_sz decision for bytesRead
// freed bytes with the current header (rte_vmbus_chan_signal_read).
func (r *Ring) WriterNeedsSignal(bytesRead uint32) (bool, error) {
	return r.writerNeedsSignal(bytesRead)
}

// ReaderMasked is rte_vmbus_chan_signal_tx's test: interrupt_mask != 0.
func (r *Ring) ReaderMasked() bool { return atomic.LoadUint32(r.imask) != 0 }

// Counters of the blocking paths.
type Counters struct {
	WriterBlocks  uint64 // Write stored pending_send_sz
	ReaderUnmasks uint64 // interrupt_mask cleared (WaitReadable, EndRead)
	ReaderSleeps  uint64 // WaitReadable blocked
}

// Counters must be called when neither end is running.
func (r *Ring) Counters() Counters {
	return Counters{r.wr.blocks, r.rd.unmasks, r.rd.sleeps}
}

// PostRetry is the post retry policy with an injected sleep.
var PostRetry = postRetry

// NewChannelOver is a Channel over the given rings with no signals and no
// spinning, for fuzzing the stream framing over arbitrary ring memory.
func NewChannelOver(out, in []byte) (*Channel, error) {
	w := wiring{dataReady: make(chan struct{}, 1), spaceReady: make(chan struct{}, 1)}
	return newChannel(1, 0, out, in, DefaultFrameSize, w, time.Millisecond, -1)
}

// Failure is why the channel's peer is gone, nil while it is there.
func (c *Channel) Failure() error { return c.failure() }

// OnEmpty sets a hook that runs when the channel's Read has found the
// inbound ring empty, before it decides what that means. Set it before
// the first Read.
func (c *Channel) OnEmpty(f func()) { c.testEmpty = f }

// OnWrote sets a hook that runs when a Write has written its last frame,
// before it returns (the write lock held). stopping is closed once Close
// has asked the running Write to stop. Set it before the first Write.
func (c *Channel) OnWrote(f func(stopping <-chan struct{})) {
	c.testWrote = func() { f(c.wdl.base.Done()) }
}
