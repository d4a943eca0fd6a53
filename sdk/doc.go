// Package sdk is the contract between the pagewire engine and a compression
// method: the six hooks of QEMU's multifd_ops table (send setup, prepare and
// cleanup; receive setup, receive and cleanup) as Go interfaces.
//
// A [Method] is a factory. The engine calls [Method.NewSender] once per
// sending channel (send_setup) and [Method.NewReceiver] once per receiving
// channel (recv_setup). The returned [Sender] and [Receiver] hold that
// channel's state (for zlib and zstd: one compression stream that lives for
// the whole transfer) and are only ever called from that channel's
// goroutine, one packet at a time, so they need no locking. Close
// (send_cleanup, recv_cleanup) is called exactly once, after the last
// packet or when the transfer fails.
//
// A method never sees sockets, goroutines or how it was loaded: the engine
// hands it a [Packet] of pages and a payload buffer. sdk imports nothing
// but the standard library, so a WebAssembly guest or an out-of-process
// plugin can implement it without pulling in the engine.
package sdk
