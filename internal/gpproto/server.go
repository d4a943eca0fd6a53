package gpproto

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pagewire/pagewire/sdk"
)

// NewGRPCServer is the gRPC server of a plugin (go-plugin's
// ServeConfig.GRPCServer), with the message limits raised to MaxMessage.
func NewGRPCServer(opts []grpc.ServerOption) *grpc.Server {
	return grpc.NewServer(append(opts, grpc.MaxRecvMsgSize(MaxMessage), grpc.MaxSendMsgSize(MaxMessage),
		// Whole packets in flight: no flow-control stalls at 64 KiB.
		grpc.InitialWindowSize(Window), grpc.InitialConnWindowSize(Window),
		grpc.WriteBufferSize(256<<10), grpc.ReadBufferSize(256<<10),
		// Handlers on long-lived goroutines: a goroutine per call starts
		// with a small stack and grows it for every packet.
		grpc.NumStreamWorkers(4))...)
}

// channel is one Sender or Receiver in the plugin, with its buffers.
type channel struct {
	mu     sync.Mutex // calls on one channel are sequential; this makes sure
	ch     int
	opts   sdk.Options
	snd    sdk.Sender
	rcv    sdk.Receiver
	out    []byte // payload (sender) or pages (receiver) of the last call
	packet sdk.Packet

	// The data plane, if the host set one up (see msg): the region
	// (in, then out, half bytes each) and the channel's socket.
	shm  []byte
	half int
	conn io.Closer
	maps map[uint64][]byte // the host's memory mapped read-only, by id (PlaneMap)
}

type methodServer struct {
	m     sdk.Method
	mu    sync.Mutex
	next  uint64
	chans map[uint64]*channel
	bufs  sync.Pool // *[]byte request data
}

func newServer(m sdk.Method) *methodServer {
	return &methodServer{m: m, chans: make(map[uint64]*channel)}
}

func (s *methodServer) request(method string) *msg {
	in := &msg{}
	if method == "Prepare" || method == "Recv" {
		if b, ok := s.bufs.Get().(*[]byte); ok {
			in.dst = (*b)[:0]
		}
	}
	return in
}

func (s *methodServer) done(method string, in *msg) {
	if in.dst != nil {
		b := in.dst[:0]
		s.bufs.Put(&b)
	}
}

// guard turns a panic in the method into an error.
func guard(err *error) {
	if r := recover(); r != nil {
		*err = status.Errorf(codes.Internal, "panic: %v", r)
	}
}

// rpcError is err as a status: DataLoss for sdk.ErrCorrupt.
func rpcError(err error) error {
	if errors.Is(err, sdk.ErrCorrupt) {
		return status.Error(codes.DataLoss, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

func (s *methodServer) info() (out *msg, err error) {
	defer guard(&err)
	in := s.m.Info()
	raw := uint64(0)
	if in.Raw {
		raw = 1
	}
	return &msg{a: ProtocolVersion, b: uint64(in.Flag), c: raw, s: in.Name}, nil
}

func (s *methodServer) open(_ context.Context, in *msg) (out *msg, err error) {
	defer guard(&err)
	ch, level, ps, pp := int(in.b), int(int64(in.c)), int(in.d), int(in.e)
	if ch < 0 || ch > 1<<16 || ps <= 0 || ps > 1<<20 || pp <= 0 || pp > 1<<16 || ps*pp > MaxMessage/2 {
		return nil, status.Errorf(codes.InvalidArgument, "open: channel %d, page size %d, %d pages per packet", ch, ps, pp)
	}
	c := &channel{ch: ch, opts: sdk.Options{Level: level, PageSize: ps, PacketPages: pp}}
	c.packet.Pages = make([][]byte, 0, pp)
	c.mu.Lock() // the data plane's requests wait until the channel is set up
	defer c.mu.Unlock()
	onPlane := uint64(0)
	if p := getPlane(); in.f != 0 && p != nil {
		if err := c.attach(p, in.f, PlaneHalf(pp, ps), in.a == RoleSend); err != nil {
			slog.Debug("packets travel in the messages", "channel", ch, "err", err)
		} else {
			onPlane = 1
		}
	}
	switch in.a {
	case RoleSend:
		c.snd, err = s.m.NewSender(ch, c.opts)
	case RoleRecv:
		c.rcv, err = s.m.NewReceiver(ch, c.opts)
		if onPlane == 0 {
			c.out = make([]byte, ps*pp)
		}
	default:
		err = fmt.Errorf("open: role %d", in.a)
	}
	if err != nil {
		c.detach()
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	s.mu.Lock()
	s.next++
	h := s.next
	s.chans[h] = c
	s.mu.Unlock()
	return &msg{a: h, b: onPlane}, nil
}

// PlaneHalf is the size of each half of a channel's data-plane region:
// room for a packet's pages and for its largest payload, in whole pages.
func PlaneHalf(pp, ps int) int {
	n := max(sdk.MaxPayload(pp, ps), pp*ps)
	return (n + 4095) &^ 4095
}

func (s *methodServer) channel(h uint64) (*channel, error) {
	s.mu.Lock()
	c := s.chans[h]
	s.mu.Unlock()
	if c == nil {
		return nil, status.Errorf(codes.NotFound, "no open channel with handle %d", h)
	}
	return c, nil
}

// pages sets c.packet's pages to views of b, which holds n pages.
func (c *channel) pages(b []byte, n int) error {
	if n <= 0 || n > c.opts.PacketPages || len(b) != n*c.opts.PageSize {
		return status.Errorf(codes.InvalidArgument, "%d bytes for %d pages of %d bytes (at most %d)", len(b), n, c.opts.PageSize, c.opts.PacketPages)
	}
	c.packet.Pages = c.packet.Pages[:0]
	ps := c.opts.PageSize
	for i := range n {
		c.packet.Pages = append(c.packet.Pages, b[i*ps:(i+1)*ps:(i+1)*ps])
	}
	return nil
}

func (s *methodServer) prepare(_ context.Context, in *msg) (out *msg, err error) {
	defer guard(&err)
	c, err := s.channel(in.a)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.snd == nil {
		return nil, status.Error(codes.InvalidArgument, "prepare on a channel not set up to send")
	}
	if c.opts.PageSize > 0 && len(in.dst)%c.opts.PageSize != 0 {
		return nil, status.Errorf(codes.InvalidArgument, "prepare: %d bytes is no whole number of pages", len(in.dst))
	}
	if err := c.pages(in.dst, len(in.dst)/c.opts.PageSize); err != nil {
		return nil, err
	}
	c.packet.Seq = in.b
	// c.out is this channel's: its previous response has been read by the
	// host before this call was made.
	payload, err := c.snd.Prepare(&c.packet, c.out[:0])
	clear(c.packet.Pages[:cap(c.packet.Pages)])
	if err != nil {
		return nil, rpcError(err)
	}
	if max := sdk.MaxPayload(c.opts.PacketPages, c.opts.PageSize); len(payload) > max {
		return nil, status.Errorf(codes.Internal, "payload of %d bytes, at most %d", len(payload), max)
	}
	c.out = payload
	return &msg{data: [][]byte{payload}}, nil
}

func (s *methodServer) recv(_ context.Context, in *msg) (out *msg, err error) {
	defer guard(&err)
	c, err := s.channel(in.a)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rcv == nil {
		return nil, status.Error(codes.InvalidArgument, "recv on a channel not set up to receive")
	}
	n := int(min(in.c, 1<<20))
	if n <= 0 || n > c.opts.PacketPages {
		return nil, status.Errorf(codes.InvalidArgument, "recv: %d pages (at most %d)", in.c, c.opts.PacketPages)
	}
	if err := c.pages(c.out[:n*c.opts.PageSize], n); err != nil {
		return nil, err
	}
	c.packet.Seq = in.b
	if err := c.rcv.Recv(&c.packet, in.dst); err != nil {
		return nil, rpcError(err)
	}
	return &msg{data: [][]byte{c.out[:n*c.opts.PageSize]}}, nil
}

func (s *methodServer) close(_ context.Context, in *msg) (out *msg, err error) {
	defer guard(&err)
	s.mu.Lock()
	c := s.chans[in.a]
	delete(s.chans, in.a)
	s.mu.Unlock()
	if c == nil {
		return nil, status.Errorf(codes.NotFound, "no open channel with handle %d", in.a)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.detach()
	if c.snd != nil {
		err = c.snd.Close()
	} else {
		err = c.rcv.Close()
	}
	if err != nil {
		return nil, rpcError(err)
	}
	return &msg{}, nil
}
