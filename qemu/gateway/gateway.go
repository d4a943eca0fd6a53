package gateway

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"

	"github.com/pagewire/pagewire/core"
)

// Dialer opens one connection to the far end of a leg per call: every
// channel of a transfer is one Dial. It is [core.Dialer]'s method set, so
// package channels' dialers (TCP, unix, TLS, rate-limited) serve.
type Dialer interface {
	Dial(ctx context.Context) (net.Conn, error)
}

// Leg names one of the three connections of a gateway pair.
type Leg string

// The legs, in the migration's direction.
const (
	LegSource      Leg = "source"      // the source QEMU to In
	LegLink        Leg = "link"        // In to Out
	LegDestination Leg = "destination" // Out to the destination QEMU
)

// LegError is how [In.Run] and [Out.Run] fail: Leg is the connection
// that failed first, Err why. Use [errors.As] to tell the legs apart.
type LegError struct {
	Leg Leg
	Err error
}

// Error is "<leg>: <err>".
func (e *LegError) Error() string { return string(e.Leg) + ": " + e.Err.Error() }

// Unwrap returns Err.
func (e *LegError) Unwrap() error { return e.Err }

// legError returns err's own LegError if it has one, or err as a failure
// of leg.
func legError(leg Leg, err error) *LegError {
	var le *LegError
	if errors.As(err, &le) {
		return le
	}
	return &LegError{Leg: leg, Err: err}
}

// The link protocol: what In sends Out besides the pages, as
// device-state blobs (see the package documentation).
const (
	blobHello    = "pagewire/gateway/hello"
	blobMain     = "pagewire/gateway/main"
	blobMainTail = "pagewire/gateway/main-tail"
	blobStopped  = "pagewire/gateway/stopped"
)

// stopped is the blobStopped body: when the source QEMU stopped its
// guest, by its host's clock.
type stopped struct {
	UnixNano int64 `json:"unix_nano"`
}

// hello is the first blob on the link: what Out needs to open the
// destination leg.
type hello struct {
	Dialect core.Dialect `json:"dialect"`
	UUID    [16]byte     `json:"uuid"`
}

// qemuChannels is QEMU's default multifd-channels.
const qemuChannels = 2

// ramCopy is a gateway's copy of guest RAM, made from the block list.
type ramCopy struct {
	mem   core.Memory
	total *atomic.Int64 // bytes, for RAMBytes
}

func (r *ramCopy) alloc(blocks []core.BlockInfo) (core.Memory, error) {
	mem, err := core.Alloc(blocks)
	r.mem = mem
	var n int64
	for _, b := range blocks {
		n += int64(b.Size)
	}
	r.total.Store(n)
	return mem, err
}

// watch cancels ctx with a LegError of leg as soon as s fails; stop
// ends the watch and returns once its goroutine has.
func watch(s sender, cancel context.CancelCauseFunc, leg Leg) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		select {
		case <-s.Done():
			if err := s.Err(); err != nil {
				cancel(&LegError{Leg: leg, Err: err})
			}
		case <-done:
		}
	})
	return sync.OnceFunc(func() {
		close(done)
		wg.Wait()
	})
}

// errRunning is Run's error while another Run of the same gateway runs.
var errRunning = errors.New("gateway: Run is already running")
