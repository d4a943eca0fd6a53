// Package gpproto is the protocol between the pagewire host (package
// goplugin) and a method served out of process by sdk/goplugin's Serve:
// both ends of its gRPC service, and both ends' encoding of its data
// plane. Plugin authors never call it; only those two packages do.
//
// A host starts the binary, checks the [Handshake] cookie and negotiates
// [ProtocolVersion], sets up mTLS (go-plugin's AutoMTLS) and gets a
// [*Conn] from Dispense of [PluginName]. Every Open creates one Sender
// or Receiver inside the plugin process (the server behind [Plugin]), so
// a channel's stream state lives there for the whole transfer; calls on
// one channel are sequential. On Linux a packet's bytes then bypass gRPC:
// the host shares a memory region with each channel (a sealed memfd) and
// makes each call one request and one response on a socket of the
// channel's own, both passed to the plugin over a socket it inherits
// (the data plane, see msg in protocol.go and plane.go). A sender whose
// memory is a memfd sealed against writing and shrinking (as a VMM's
// guest RAM can be) goes further: the host passes the plugin a read-only
// descriptor of it, the plugin maps it once per channel, and a packet's
// pages then travel as their offsets, not copied (PlaneMap,
// PlanePrepareShared). Without the data plane, one RPC per packet
// carries the bytes. The messages are hand-written (no protobuf): see
// msg in protocol.go. Errors cross as gRPC status codes, [sdk.ErrCorrupt]
// as codes.DataLoss, and as [PlaneCorrupt] on the data plane.
//
// The plugin side's data-plane goroutines (one per channel) belong to
// the server and end when the channel is closed or the host closes its
// socket.
package gpproto
