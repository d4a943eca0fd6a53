package vmbus

import "sync/atomic"

// Signaler notifies the other end of a ring: the kernel's vmbus_setevent,
// in pagewire a write to the peer's eventfd.
type Signaler interface {
	Signal() error
}

// SignalerFunc adapts a function to a Signaler.
type SignalerFunc func() error

// Signal calls f.
func (f SignalerFunc) Signal() error { return f() }

// Doorbell is an in-process Signaler: Signal counts and leaves one wake-up
// pending on C (signals coalesce while one is pending, like an eventfd).
// Use C as the Config.DataReady or SpaceReady of the end being signaled.
// All methods may be called from any goroutine.
type Doorbell struct {
	c chan struct{}
	n atomic.Uint64
}

// NewDoorbell returns a Doorbell with no pending wake-up.
func NewDoorbell() *Doorbell { return &Doorbell{c: make(chan struct{}, 1)} }

// Signal records a signal and makes a wake-up pending on C. It never blocks
// and never fails.
func (d *Doorbell) Signal() error {
	d.n.Add(1)
	select {
	case d.c <- struct{}{}:
	default:
	}
	return nil
}

// C delivers pending wake-ups.
func (d *Doorbell) C() <-chan struct{} { return d.c }

// Count is the number of Signal calls so far.
func (d *Doorbell) Count() uint64 { return d.n.Load() }
