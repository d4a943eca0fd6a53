// Package wire encodes and decodes the bytes pagewire puts on a channel:
// QEMU's multifd packets (the 64-byte MultiFDInit_t handshake, RAM packets
// with normal and zero page offsets, SYNC packets and device-state
// packets, all big-endian, magic 0x11223344, version 1) and pagewire's own
// control-channel messages (docs/protocol.md).
//
// Decoders take bytes from a peer and treat them as hostile: every count,
// length and offset is checked before use, and every failure wraps one of
// the sentinel errors below. Decoders never allocate in proportion to a
// value read off the wire. Nothing here does I/O or starts goroutines.
package wire
