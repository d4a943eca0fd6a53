package core

import (
	"context"
	"net"

	"github.com/pagewire/pagewire/internal/engine"
)

// Dialer opens a connection to the receiver: a [Sender] dials its
// control channel and every multifd channel with it. Package channels has
// dialers for tcp:, unix: and vmbus: addresses, with and without TLS.
type Dialer interface {
	Dial(ctx context.Context) (net.Conn, error)
}

// Sender is the sending end of a transfer. Create it with [NewSender],
// queue pages with SendPages, SendRange or SendBlock, order them with
// Sync, and finish with Close, which must always be called. One
// goroutine drives a Sender: its methods must not be called concurrently,
// except Stats, Err, Fail and Done.
//
// Queuing blocks while every channel is busy: memory stays bounded by
// channels x packet size. Pages are read from source memory when a
// channel writes them, so a queued page must not change until the next
// Sync or Close returns; the offsets passed in are copied and may be
// reused at once.
type Sender struct {
	s *engine.Sender
}

// NewSender opens a transfer of mem's blocks: it connects the control
// channel, has the receiver accept the parameters, then connects the
// multifd channels. Cancelling ctx fails the transfer at any time.
func NewSender(ctx context.Context, d Dialer, mem Memory, cfg SenderConfig) (*Sender, error) {
	s, err := engine.NewSender(ctx, d, mem, cfg)
	if err != nil {
		return nil, err
	}
	return &Sender{s}, nil
}

// SendBlock queues every page of the named block. Once the transfer
// has failed it returns the failure: the receiver's reason (a
// [*RemoteError]) when the receiver failed.
func (s *Sender) SendBlock(block string) error { return s.s.SendBlock(block) }

// SendRange queues the pages of block in [off, off+n); both must be page
// aligned.
func (s *Sender) SendRange(block string, off, n uint64) error { return s.s.SendRange(block, off, n) }

// SendPages queues the pages of block at the given byte offsets, in that
// order (a dirty list). A page may be queued at most once between two
// Syncs.
func (s *Sender) SendPages(block string, offsets []uint64) error {
	return s.s.SendPages(block, offsets)
}

// Sync is a barrier: it sends a SYNC on every channel after everything
// queued so far, and returns once all of it is written. On the receiver,
// nothing queued after a Sync lands before everything queued before it.
// After Sync returns, queued pages may change again.
func (s *Sender) Sync() error { return s.s.Sync() }

// SendDeviceState queues a device-state blob (QEMU 10's
// MULTIFD_FLAG_DEVICE_STATE packet) on the next idle channel. idstr is at
// most 255 bytes; blob must not change until the next Sync or Close.
func (s *Sender) SendDeviceState(idstr string, instance uint32, blob []byte) error {
	return s.s.SendDeviceState(idstr, instance, blob)
}

// Close sends everything still queued, a final SYNC and the end of the
// transfer, waits until the receiver confirms that every page landed,
// and releases all channels. It returns the transfer's statistics and
// its error, if any: when the receiver failed, its reason (a
// [*RemoteError]) rather than the broken connection noticed first.
// After a failure Close only releases.
func (s *Sender) Close() (Stats, error) { return s.s.Close() }

// Abort fails the transfer with err, which the receiver reports as the
// sender's reason, and releases everything as Close does.
func (s *Sender) Abort(err error) (Stats, error) { return s.s.Abort(err) }

// Fail fails the transfer with err, which the receiver reports as the
// sender's reason; any goroutine may call it. Close must still be called.
func (s *Sender) Fail(err error) { s.s.Fail(err) }

// Done is closed when the transfer has failed or been closed.
func (s *Sender) Done() <-chan struct{} { return s.s.Done() }

// Err returns the transfer's failure, or nil while it is healthy.
func (s *Sender) Err() error { return s.s.Err() }

// Stats returns the transfer's statistics so far. It may be called from
// any goroutine.
func (s *Sender) Stats() Stats { return s.s.Stats() }
