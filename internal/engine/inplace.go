package engine

import (
	"time"

	"github.com/pagewire/pagewire/sdk"
)

// InPlaceSender is an optional interface of a method's [sdk.Sender] whose
// payload is produced in memory of its own, such as a Wasm instance's
// linear memory or the region it shares with a plugin process. The
// engine calls PrepareInPlace instead of Prepare and writes the returned
// bytes to the channel before it calls the Sender again, which saves
// copying every payload out of that memory. The engine only writes the
// bytes out: it never interprets them.
type InPlaceSender interface {
	PrepareInPlace(p *sdk.Packet) ([]byte, error)
}

// WriteObserver is an optional interface of a method's [sdk.Sender] that
// adapts to the channel it feeds: after each packet (or SYNC or device
// state) the channel writes, the engine calls Wrote with the bytes
// written and the time the write took, on the channel's goroutine,
// before it calls Prepare again. A write that blocks for long means the
// link, not the method, is what limits the transfer.
type WriteObserver interface {
	Wrote(n int, d time.Duration)
}

// RawSender is an optional interface of a method's [sdk.Sender] that
// sends some packets as their pages: if RawPrefix returns true, the
// engine writes prefix, then the packet's pages straight from memory as
// a raw method's are (no copy), and does not call Prepare for the
// packet; otherwise it calls Prepare as usual. The payload on the wire
// is the prefix followed by the pages.
type RawSender interface {
	RawPrefix(p *sdk.Packet) (prefix []byte, ok bool)
}

// InPlaceReceiver is an optional interface of a method's [sdk.Receiver]
// that decodes payloads from memory of its own. For a payload of n bytes
// the engine asks RecvBuffer(n) where to read it; if that returns n bytes
// it reads the payload into them and passes them to Recv, which saves
// copying every payload into that memory. Otherwise (nil) it reads the
// payload into a buffer of its own as for any Receiver.
type InPlaceReceiver interface {
	RecvBuffer(n int) []byte
}

// Stopper is an optional interface of a method's [sdk.Sender] or
// [sdk.Receiver] whose running call can be stopped from another
// goroutine (a Wasm instance). The engine calls Stop once the transfer
// fails, is cancelled or ends, so that a call that loops or waits cannot
// outlive it; Close is still called after it.
type Stopper interface {
	Stop()
}
