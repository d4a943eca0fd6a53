// Package goplugin serves an [sdk.Method] out of process as a
// hashicorp/go-plugin plugin over gRPC, from the same method source that
// builds into a Wasm module with sdk/wasmguest:
//
//	//go:build !wasip1
//
//	package main
//
//	func main() { goplugin.Serve(zstd.New()) }
//
// (The design calls this sdk.Serve; it lives here so that package sdk
// stays standard-library only and a wasip1 build never pulls in gRPC.)
//
// The host (package github.com/pagewire/pagewire/goplugin) starts the
// binary, checks the handshake cookie and negotiates [ProtocolVersion],
// sets up mTLS (go-plugin's AutoMTLS). Every Open creates one Sender or
// Receiver inside the plugin process, so a channel's stream state lives
// there for the whole transfer; calls on one channel are sequential.
// On Linux a packet's bytes then bypass gRPC: the host shares a memory
// region with each channel (a sealed memfd) and makes each call one
// request and one response on a socket of the channel's own, both passed
// to the plugin over a socket it inherits (the data plane, see msg in
// protocol.go and plane.go). A sender whose memory is a memfd sealed
// against writing and shrinking (as a VMM's guest RAM can be) goes
// further: the host passes the plugin a read-only descriptor of it, the
// plugin maps it once per channel, and a packet's pages then travel as
// their offsets, not copied (PlaneMap, PlanePrepareShared). Without the data plane, one
// RPC per packet carries the bytes. The messages are hand-written (no
// protobuf): see msg in protocol.go. Errors cross as gRPC status codes,
// [sdk.ErrCorrupt] as codes.DataLoss.
//
// The plugin's log/slog output reaches the host's log. The process exits
// when the host kills it, and on its own when the host process is gone.
// This package also holds the pieces both sides share: [Handshake],
// [Plugin] and the host's client stub [Conn].
package goplugin
