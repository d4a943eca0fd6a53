// Package plugintest is the conformance kit for compression methods: the
// checks every [sdk.Method] must pass, whether it is built into pagewire
// or loaded as a plugin (Wasm or out of process). Method authors call it
// from a test; pagewire's own tests run it against the built-in methods;
// the CLI's "pagewire plugin test FILE" runs it against a loaded plugin
// and prints a line per check.
//
// A plugin author's whole conformance test is:
//
//	func TestConformance(t *testing.T) {
//		plugintest.Run(t, mymethod.New())
//	}
//
// Run it with -race: the concurrent check is only as good as the race
// detector. [Run] makes each check a subtest named after it, so one can
// be run alone (go test -run 'TestConformance/corrupt'); [RunAll] returns
// a [Result] per check for callers that are not tests; [Checks] lists them.
//
// The kit imports only the standard library and sdk. It makes its own
// deterministic pages (zero, 0xff, one repeated byte, random, text,
// structured binary, sparse) instead of reading pagewire's corpus, so a
// failure names a packet and page that fail the same way on every run.
//
// # Checks
//
// In order:
//
//   - info: Info has a name users can type, a flag inside [sdk.FlagMask]
//     that is even, and returns the same value on every call.
//   - roundtrip: one channel, 40 packets of mixed pages, full ones (128
//     pages of 4 KiB) and smaller ones; every page comes back byte for
//     byte; Prepare appends to what dst already holds, leaves the source
//     pages alone, and stays within [sdk.MaxPayload].
//   - stream-state: three channels, each with its own sender, receiver and
//     content, their packets prepared in one order and received in
//     another. Packets of a channel are always received in order, as the
//     engine does; state shared between channels shows up here.
//   - concurrent: four channels at once, each in its own goroutine, as the
//     engine runs them. Global state shows up here or as a data race.
//   - packet-sizes: packets of 1, 2, 127 and 128 pages of 4 KiB, and of 1
//     to 16 pages of 64 KiB. Packets are never empty: the engine does not
//     call Prepare or Recv for a packet without normal pages.
//   - page-kinds: full and one-page packets of each kind of page, all-zero
//     and incompressible ones included (a payload may be larger than the
//     pages, but not larger than [sdk.MaxPayload]).
//   - corrupt: after a good packet (and as the first packet of a channel),
//     payloads cut in half, empty, extended by 256 bytes, or replaced by
//     random bytes. Recv must return an error wrapping [sdk.ErrCorrupt],
//     except that a method whose [sdk.Info].Raw is set (nocomp) may accept
//     random bytes of the right length: it cannot tell them from pages.
//   - bounds: Recv writes exactly the pages it is given (the kit checks
//     guard bytes around every page in every check), and a payload that
//     holds one page more or one page fewer than the packet is an error
//     wrapping [sdk.ErrCorrupt], not a page kept for the next packet.
//   - cleanup: Close of every sender and receiver returns nil; channel 0
//     set up again after Close starts a fresh stream; after sixteen
//     channels are closed, no more goroutines run than before (a small
//     tolerance, and a short wait for goroutines to exit).
//   - options: the zero [sdk.Options] and level 0 (the method's default)
//     work; any other level either works or makes NewSender return an
//     error.
//
// # What the kit's pages look like to a method
//
// The kit reuses its page and payload buffers from packet to packet, as
// the engine does, so a method that keeps p, its pages or the payload
// after the call returns sees them change. Destination pages are filled
// with 0xdb before Recv, so bytes Recv does not write show up. Every page
// is cut from a larger buffer with guard bytes around it, and its capacity
// runs on past its end: a method that appends to a page instead of writing
// it, or writes past it, changes a guard and fails the check. (The engine
// hands out pages whose capacity ends with the page.)
//
// # Panics, hangs and goroutines
//
// Each check runs in a goroutine of its own. A panic in a method call is
// recovered and reported as an error naming the call and where it
// panicked; a method calling runtime.Goexit is reported too. A check that
// takes longer than 30 seconds fails with a timeout error, but the method
// call that did not return cannot be stopped from outside the method: its
// goroutine is left behind, blocked or spinning, for the life of the
// process. That is unavoidable for in-process code; a plugin host can
// kill an out-of-process plugin instead. A method that panics in a
// goroutine of its own still crashes the process.
//
// The kit starts no goroutine that outlives a check, except one left
// behind by a timeout. Checks do not run in parallel, and the cleanup
// check counts all of the process's goroutines, so do not run the kit from
// a parallel test.
package plugintest
