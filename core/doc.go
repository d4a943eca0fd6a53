// Package core is pagewire's own protocol between two pagewire ends: a
// [Sender] and a [Receiver] that move pages of named RAM blocks over N
// parallel channels in QEMU's multifd wire format, with one compression
// method ([sdk.Method]) per transfer, zero pages as offsets only, SYNC
// barriers and device-state blobs, and a control channel of pagewire's
// own (parameters, sync markers, the end, and errors with codes; see
// docs/protocol.md).
//
// Package core links no codec and no transport. A [Registry] starts
// empty; the engine always has nocomp ([Nocomp]), and package
// plugins/builtin is the registry of pagewire's built-in methods (zlib,
// zstd, lz4). A Sender dials through any [Dialer]: package channels has
// tcp:, unix: and (with package channels/vmbus) vmbus: ones, with TLS.
// Package plugin opens a method from a Wasm module or a go-plugin
// executable. Package qemu is the QEMU peer (a real QEMU as source or
// destination), and package qemu/gateway carries a migration between two
// QEMUs over a link of this protocol; both run on the same engine as
// this package (internal/engine; docs/architecture.md).
//
// Each channel has one goroutine on each side, started and joined by the
// engine. The first error on any channel, or the cancellation of the
// caller's context, stops every channel on both sides: the failing side
// tells the other over the control channel, then closes every
// connection. No goroutine of a transfer outlives it: a
// [Receiver.Receive] call and a [Sender]'s Close return only after all of
// them have.
//
// A Sender is driven by one goroutine: its methods must not be called
// concurrently. Pages are never copied on the way out: the sender reads
// them from source memory when a channel writes them, so a page must not
// change between being queued and the next [Sender.Sync] or
// [Sender.Close], which return only once every queued page is on the
// wire. A Receiver writes into destination memory from all its channel
// goroutines; a page sent again after a Sync is never overtaken by its
// older copy. A page may be queued at most once between two Syncs: two
// copies in flight at once could land in either order.
//
// Errors come from the side that failed first: when one end hangs up
// because of an error, the other reports that end's reason (a
// [*RemoteError]) rather than the broken connection it noticed, and the
// reason matches the same sentinels (errors.Is(err, [ErrMethodMismatch])
// holds on both ends).
package core
