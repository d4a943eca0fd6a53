package core

import (
	"context"
	"net"

	"github.com/pagewire/pagewire/internal/engine"
)

// Receiver is the receiving end of transfers. Create it with
// [NewReceiver] and run one transfer per [Receiver.Receive] call.
type Receiver struct {
	r *engine.Receiver
}

// NewReceiver returns a receiver with the given configuration.
func NewReceiver(cfg ReceiverConfig) *Receiver {
	return &Receiver{engine.NewReceiver(cfg)}
}

// Receive runs one transfer: it accepts the control channel and the
// multifd channels from ln (in any order), checks every handshake, applies
// pages to the destination until the sender ends the transfer, and
// confirms to the sender that every page landed. It returns the
// destination memory. Receive closes ln once every channel is connected
// or the transfer failed; it returns only after every goroutine it
// started has returned and every connection is closed.
func (r *Receiver) Receive(ctx context.Context, ln net.Listener) (Memory, error) {
	return r.r.Receive(ctx, ln)
}

// Stats returns the statistics of the running or last transfer. It may be
// called from any goroutine.
func (r *Receiver) Stats() Stats { return r.r.Stats() }
