// Package qemu is pagewire's QEMU peer: a [Receiver] that takes a live
// migration from a real QEMU 7.2 or 10.0 source with the multifd
// capability, and a [Sender] that feeds one to a real QEMU destination,
// byte for byte on QEMU's wire (docs/wire-multifd.md): the main stream
// and N multifd channels, zero pages as offsets (10.0) or main-stream
// records (7.2), SYNCs ordered by the main stream's markers. The main
// stream's parser (header, configuration, the RAM sections, the device
// state it keeps verbatim) is this package's; [Methods] are QEMU's
// multifd-compression methods: none, zlib and zstd.
//
// The engine under both (channel goroutines, packets, the SYNC barrier,
// page claims, one failure path) is the one package core's Sender and
// Receiver run on: see package core for pagewire's own protocol between
// two pagewire ends, and package qemu/gateway for the gateways that
// carry a migration between two unmodified QEMUs over such a link.
//
// A Receiver runs one migration per [Receiver.Receive] call, which
// returns only after every goroutine it started has returned and every
// connection is closed. A Sender is driven by one goroutine (Stats, Err,
// Fail and Done excepted) and must be closed.
package qemu
