// Package core is pagewire's multifd engine: a [Sender] and a [Receiver]
// that move pages of named RAM blocks over N parallel channels in QEMU's
// multifd wire format, with one compression method ([sdk.Method]) per
// transfer, zero pages as offsets only, SYNC barriers and device-state
// blobs.
//
// A transfer uses one control channel (pagewire's own: parameters, sync
// markers, end and errors; see docs/protocol.md) and N multifd channels,
// all opened by the sender. Each channel has one goroutine on each side,
// started and joined by the engine. The first error on any channel, or
// the cancellation of the caller's context, stops every channel on both
// sides: the failing side tells the other over the control channel, then
// closes every connection. No goroutine of a transfer outlives it: a
// [Receiver.Receive] call and a [Sender]'s Close return only after all of
// them have.
//
// A Sender is driven by one goroutine: its methods must not be called
// concurrently. Pages are never copied on the way out: the sender reads
// them from source memory when a channel writes them, so a page must not
// change between being queued and the next [Sender.Sync] or
// [Sender.Close], which return only once every queued page is on the wire.
// A Receiver writes into destination memory from all its channel
// goroutines; a page sent again after a Sync is never overtaken by its
// older copy. A page may be queued at most once between two Syncs: two
// copies in flight at once could land in either order.
//
// Errors that the receiver and sender report come from the side that
// failed first: when one end hangs up because of an error, the other
// reports that end's reason (a [*RemoteError]) rather than the broken
// connection it noticed.
package core
