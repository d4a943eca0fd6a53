// Package gateway carries a QEMU live migration between two hosts over
// pagewire's own link, so that a VMM can put its own transport,
// compression and encryption between a source and a destination QEMU
// that speak nothing but QEMU's multifd wire:
//
//	source QEMU --(QEMU multifd)--> In --(link: core)--> Out --(QEMU multifd)--> destination QEMU
//
// An [In] is what the source QEMU migrates to: it accepts the main
// channel and the multifd channels like a QEMU destination
// ([qemu.Receiver]), keeps a copy of guest RAM, and forwards the
// migration to an [Out] on a [core.Sender] (the link: its own channel
// count and method, any transport a [Dialer] opens). The Out receives the
// link with a [core.Receiver] into its own copy of RAM and re-emits the
// migration to the destination QEMU as a QEMU source would
// ([qemu.NewSender]): the main stream byte for byte, the pages on the
// destination's channel count and method. Pages stream through as they
// land; neither gateway waits for a whole pass.
//
// # The link protocol
//
// Besides the pages, the In sends the Out four kinds of device-state
// blobs on the link:
//
//   - "pagewire/gateway/hello", once, at the source's first sync point
//     when the link opens: JSON {"dialect": "7.2"|"10.0", "uuid": [16
//     bytes]}, the source's multifd dialect and uuid, which the Out needs
//     to open the destination leg.
//   - "pagewire/gateway/main", instance N, at the source's N-th sync
//     point: the main stream since the previous one, up to and with its
//     sync marker, sent after the interval's pages and followed by a Sync
//     of the link. The Out writes it to the destination and, at the
//     link's sync point, puts a SYNC on every destination channel, so
//     the destination sees every page of the interval before the marker
//     that orders it.
//   - "pagewire/gateway/stopped", once the source's stream has ended,
//     when [In.Stopped] knows: JSON {"unix_nano": N}, when the source
//     QEMU stopped its guest ([Out.SourceStopped]).
//   - "pagewire/gateway/main-tail", once the source's stream has ended:
//     the main stream after the last sync point (device state, the end of
//     the stream), sent just before the link closes.
//
// # Goroutines and lifetimes
//
// [In.Run] and [Out.Run] each run one migration and return only after
// every goroutine they started has stopped and every connection they
// opened is closed, on success and on failure alike; they close their
// listener. The first failure of any leg fails the others: the source
// and the destination QEMU see their connections close (a QEMU 7.2
// destination waiting at a sync marker is first sent a SYNC on every
// channel so that it reads on, finds the stream cut short and fails
// rather than waiting forever), and the error names the leg that failed
// first ([LegError]). Cancelling Run's context fails the migration.
//
// [In.Stats], [Out.Stats], [In.RAMBytes] and [Out.RAMBytes] may be called
// from any goroutine while Run runs, for a progress line.
//
// The engine, its wire and its errors are package core's; the link's
// transports are package channels'.
package gateway
