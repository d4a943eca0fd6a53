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
// binary, checks the handshake cookie and negotiates the protocol
// version, sets up mTLS (go-plugin's AutoMTLS). Every channel of a
// transfer gets one Sender or Receiver inside the plugin process, so a
// channel's stream state lives there for the whole transfer; calls on
// one channel are sequential. On Linux a packet's bytes bypass gRPC
// through memory shared with the host. A [sdk.ErrCorrupt] from the
// method reaches the host as [sdk.ErrCorrupt]. The protocol between the
// two processes is the host's business, not the method's: it lives in
// an internal package (internal/gpproto) that both sides import.
//
// The plugin's log/slog output reaches the host's log. The process exits
// when the host kills it, and on its own when the host process is gone.
package goplugin
