package gpproto

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"

	"github.com/pagewire/pagewire/sdk"
)

// ProtocolVersion is the version of the go-plugin protocol this package
// speaks: the RPCs below and their messages. A host refuses a plugin that
// offers no version it knows (go-plugin's version negotiation).
const ProtocolVersion = 1

// Handshake is the go-plugin handshake shared by host and plugin. The
// cookie only tells a user who runs a plugin binary by hand what it is; it
// is not a security measure (see go-plugin's HandshakeConfig).
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   "PAGEWIRE_PLUGIN",
	MagicCookieValue: "5b0c1f9e-pagewire-method",
}

// PluginName is the name of the one plugin a binary serves.
const PluginName = "method"

// MaxMessage bounds every RPC message, both ways: a packet of pages or a
// payload is at most [sdk.MaxPayload] of 128 pages of 4 KiB (1 MiB + 64
// KiB); configurations with bigger packets need this raised.
const MaxMessage = 64 << 20

// Window is the HTTP/2 flow-control window of both sides, stream and
// connection: a few packets, so a call never waits for a window update.
const Window = 16 << 20

// Codec is the name of the gRPC codec of the messages (content-subtype
// "pagewire"); it is registered by this package's init.
const Codec = "pagewire"

// Roles of Open.
const (
	RoleSend = 1
	RoleRecv = 2
)

// service is the hand-written gRPC service: no protobuf, the messages are
// a fixed header of integers, a string and raw bytes (see msg).
const service = "pagewire.goplugin.v1.Method"

// msg is every request and response. Its encoding is the six integers
// little-endian, the length of s (u32) and s, then data back to back to
// the end of the message.
//
//	Info     -> {a: protocol version, b: flag, c: raw, s: name}
//	Open     {a: role, b: channel, c: level (int64), d: page size, e: pages per packet,
//	          f: plane token or 0, s: ""} -> {a: handle, b: 1 if on the data plane}
//	Prepare  {a: handle, b: seq, data: pages} -> {data: payload}
//	Recv     {a: handle, b: seq, c: npages, data: payload} -> {data: pages}
//	Close    {a: handle} -> {}
//
// The data plane (Linux): a host that started the plugin with a
// SOCK_SEQPACKET socket as descriptor $PAGEWIRE_PLUGIN_PLANE_FD sends,
// before each Open with a token, one message on it: the token (u64
// little-endian) with two descriptors, a memfd of two halves (the
// region; its size is 2*half) and one end of a new SOCK_SEQPACKET pair.
// If Open answers b = 1, that channel's packets bypass gRPC: the pages or
// payload go in the first half of the region, the answer comes back in
// the second, and each call is one request and one response on the
// channel's socket (see plane.go). Otherwise they travel in the Prepare
// and Recv messages above.
type msg struct {
	a, b, c, d, e, f uint64
	s                string
	data             [][]byte // sent back to back after the header

	// Where Unmarshal puts the data (at most one is set; neither: a new
	// slice in dst).
	pages [][]byte // must be filled exactly
	dst   []byte   // appended to
	n     int      // bytes of data received
}

const headerSize = 6*8 + 4

type codec struct{}

func init() { encoding.RegisterCodecV2(codec{}) }

func (codec) Name() string { return Codec }

// Marshal sends the header and then the data slices themselves, without
// copying them: every caller keeps them unchanged until the call has
// completed (the client blocks in the call; the server's response
// buffers belong to a channel whose next call cannot arrive before the
// client has read this response).
func (codec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(*msg)
	if !ok {
		return nil, fmt.Errorf("pagewire codec: cannot marshal %T", v)
	}
	h := make([]byte, headerSize, headerSize+len(m.s))
	for i, x := range []uint64{m.a, m.b, m.c, m.d, m.e, m.f} {
		binary.LittleEndian.PutUint64(h[i*8:], x)
	}
	binary.LittleEndian.PutUint32(h[48:], uint32(len(m.s)))
	h = append(h, m.s...)
	out := make(mem.BufferSlice, 0, 1+len(m.data))
	out = append(out, mem.SliceBuffer(h))
	for _, d := range m.data {
		if len(d) > 0 {
			out = append(out, mem.SliceBuffer(d))
		}
	}
	return out, nil
}

// views is a cursor over the buffers of a received message.
type views struct {
	bufs mem.BufferSlice
	cur  []byte
}

func (r *views) next() bool {
	for len(r.cur) == 0 {
		if len(r.bufs) == 0 {
			return false
		}
		r.cur, r.bufs = r.bufs[0].ReadOnlyData(), r.bufs[1:]
	}
	return true
}

// fill copies exactly len(p) bytes into p.
func (r *views) fill(p []byte) bool {
	for len(p) > 0 {
		if !r.next() {
			return false
		}
		n := copy(p, r.cur)
		p, r.cur = p[n:], r.cur[n:]
	}
	return true
}

var errShort = errors.New("pagewire codec: message too short")

func (codec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(*msg)
	if !ok {
		return fmt.Errorf("pagewire codec: cannot unmarshal into %T", v)
	}
	total := data.Len()
	r := views{bufs: data}
	var h [headerSize]byte
	if !r.fill(h[:]) {
		return errShort
	}
	for i, x := range []*uint64{&m.a, &m.b, &m.c, &m.d, &m.e, &m.f} {
		*x = binary.LittleEndian.Uint64(h[i*8:])
	}
	sl := int(binary.LittleEndian.Uint32(h[48:]))
	if sl > total-headerSize {
		return errShort
	}
	if sl > 0 {
		s := make([]byte, sl)
		r.fill(s)
		m.s = string(s)
	}
	n := total - headerSize - sl
	m.n = n
	if m.pages != nil {
		want := 0
		for _, p := range m.pages {
			want += len(p)
		}
		if n != want {
			return fmt.Errorf("pagewire codec: %d bytes of data for %d bytes of pages", n, want)
		}
		for _, p := range m.pages {
			r.fill(p)
		}
		return nil
	}
	if cap(m.dst)-len(m.dst) < n {
		m.dst = append(make([]byte, 0, len(m.dst)+n), m.dst...)
	}
	l := len(m.dst)
	m.dst = m.dst[:l+n]
	r.fill(m.dst[l:])
	return nil
}

// server is what the service's handlers call.
type server interface {
	info() (*msg, error)
	open(ctx context.Context, in *msg) (*msg, error)
	prepare(ctx context.Context, in *msg) (*msg, error)
	recv(ctx context.Context, in *msg) (*msg, error)
	close(ctx context.Context, in *msg) (*msg, error)
	// request returns an empty request for method, with its data
	// destination set.
	request(method string) *msg
	// done gives back what request lent.
	done(method string, in *msg)
}

func handler(name string, call func(s server, ctx context.Context, in *msg) (*msg, error)) grpc.MethodDesc {
	return grpc.MethodDesc{
		MethodName: name,
		Handler: func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			s := srv.(server)
			in := s.request(name)
			defer s.done(name, in)
			if err := dec(in); err != nil {
				return nil, err
			}
			return call(s, ctx, in)
		},
	}
}

var serviceDesc = grpc.ServiceDesc{
	ServiceName: service,
	HandlerType: (*server)(nil),
	Methods: []grpc.MethodDesc{
		handler("Info", func(s server, _ context.Context, _ *msg) (*msg, error) { return s.info() }),
		handler("Open", func(s server, ctx context.Context, in *msg) (*msg, error) { return s.open(ctx, in) }),
		handler("Prepare", func(s server, ctx context.Context, in *msg) (*msg, error) { return s.prepare(ctx, in) }),
		handler("Recv", func(s server, ctx context.Context, in *msg) (*msg, error) { return s.recv(ctx, in) }),
		handler("Close", func(s server, ctx context.Context, in *msg) (*msg, error) { return s.close(ctx, in) }),
	},
	Metadata: "internal/gpproto/protocol.go",
}

// Plugin is the go-plugin plugin of a method, for both sides: a plugin
// binary serves Method (see [Serve]); a host leaves Method nil and gets a
// [*Conn] from Dispense.
type Plugin struct {
	plugin.NetRPCUnsupportedPlugin
	Method sdk.Method
}

// GRPCServer implements plugin.GRPCPlugin.
func (p *Plugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	if p.Method == nil {
		return errors.New("goplugin: Plugin has no Method to serve")
	}
	s.RegisterService(&serviceDesc, newServer(p.Method))
	slog.Debug("pagewire plugin serving", "method", p.Method.Info().Name, "protocol", ProtocolVersion, "pid", os.Getpid())
	return nil
}

// GRPCClient implements plugin.GRPCPlugin: ctx is cancelled when the
// plugin process exits.
func (p *Plugin) GRPCClient(ctx context.Context, _ *plugin.GRPCBroker, cc *grpc.ClientConn) (any, error) {
	return &Conn{cc: cc, ctx: ctx}, nil
}

// Conn is the host's side of the RPCs, for a host package to wrap into an
// [sdk.Method]. Its errors are gRPC status errors: codes.DataLoss for a
// corrupt payload ([sdk.ErrCorrupt] in the plugin), InvalidArgument,
// NotFound and Internal for the plugin's other failures, and transport
// codes (Unavailable, Canceled, DeadlineExceeded) when the plugin process
// is gone or stuck.
type Conn struct {
	cc  *grpc.ClientConn
	ctx context.Context // cancelled when the plugin process exits
}

// Context is cancelled when the plugin process exits.
func (c *Conn) Context() context.Context { return c.ctx }

var callOpts = []grpc.CallOption{
	grpc.CallContentSubtype(Codec),
	grpc.MaxCallRecvMsgSize(MaxMessage),
	grpc.MaxCallSendMsgSize(MaxMessage),
}

func (c *Conn) invoke(ctx context.Context, method string, in, out *msg) error {
	return c.cc.Invoke(ctx, "/"+service+"/"+method, in, out, callOpts...)
}

// Info returns the plugin's protocol version and method info.
func (c *Conn) Info(ctx context.Context) (version int, info sdk.Info, err error) {
	var out msg
	if err := c.invoke(ctx, "Info", &msg{}, &out); err != nil {
		return 0, sdk.Info{}, err
	}
	return int(out.a), sdk.Info{Name: out.s, Flag: uint32(out.b), Raw: out.c == 1}, nil
}

// Open sets up channel ch's sender (role [RoleSend]) or receiver
// ([RoleRecv]) in the plugin and returns its handle.
//
// A token other than 0 names the data-plane message the host sent just
// before (see msg); onPlane reports whether the plugin took it.
func (c *Conn) Open(ctx context.Context, role, ch int, o sdk.Options, token uint64) (h uint64, onPlane bool, err error) {
	var out msg
	in := msg{a: uint64(role), b: uint64(ch), c: uint64(int64(o.Level)), d: uint64(o.PageSize), e: uint64(o.PacketPages), f: token}
	if err := c.invoke(ctx, "Open", &in, &out); err != nil {
		return 0, false, err
	}
	return out.a, out.b == 1, nil
}

// Prepare sends the pages and appends the payload to dst.
func (c *Conn) Prepare(ctx context.Context, h, seq uint64, pages [][]byte, dst []byte) ([]byte, error) {
	out := msg{dst: dst}
	if err := c.invoke(ctx, "Prepare", &msg{a: h, b: seq, data: pages}, &out); err != nil {
		return dst, err
	}
	return out.dst, nil
}

// Recv sends the payload and fills pages with the plugin's result.
func (c *Conn) Recv(ctx context.Context, h, seq uint64, payload []byte, pages [][]byte) error {
	out := msg{pages: pages}
	return c.invoke(ctx, "Recv", &msg{a: h, b: seq, c: uint64(len(pages)), data: [][]byte{payload}}, &out)
}

// Close closes the handle's Sender or Receiver in the plugin.
func (c *Conn) Close(ctx context.Context, h uint64) error {
	var out msg
	return c.invoke(ctx, "Close", &msg{a: h}, &out)
}
