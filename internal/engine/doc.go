// Package engine is the multifd engine under both of pagewire's
// protocols: package core (pagewire's own, between two pagewire ends)
// and package qemu (a real QEMU as source or destination). It owns the
// channel goroutines and their send and receive loops, packet cutting
// and zero-page detection, the SYNC barrier, page claims on the
// destination, the statistics counters and the one failure path; the
// two protocols differ in their lead channel (pagewire's control
// channel, QEMU's main stream) and in how zero pages and syncs travel
// (Dialect).
//
// The types both protocols share (Memory, Stats, the errors, the
// configurations) are declared here and named by core and qemu; users
// never import this package. See docs/architecture.md.
package engine
