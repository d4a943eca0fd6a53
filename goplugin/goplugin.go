// Package goplugin loads compression methods shipped as native
// hashicorp/go-plugin binaries (built with sdk/goplugin) and serves them
// as [sdk.Method]s: the engine cannot tell them from built-in methods.
//
// [Load] starts the binary, checks its handshake cookie and protocol
// version over a connection with mutual TLS (go-plugin's AutoMTLS), and
// optionally its sha256 first ([Config.SHA256]). The plugin process
// lives until [Method.Close], which kills it (on Linux with the
// processes it started: its process group); every NewSender and
// NewReceiver opens one channel's Sender or Receiver inside that process.
// On Linux each packet then travels on the data plane: the pages or
// payload through a memory region shared with the plugin (a sealed
// memfd, which the engine writes payloads out of and reads them into
// directly: core.InPlaceSender, core.InPlaceReceiver), the call as one
// request and one response on a socket of the channel's own; elsewhere, or with [Config.NoDataPlane], each packet is
// one gRPC call carrying the bytes. Either way the plugin's answers are
// checked before use. A failure fails only that channel's Sender
// or Receiver, with an error naming the plugin and the channel; if the
// plugin process dies, every call fails at once with [ErrPlugin], and the
// engine stops the transfer on both ends. The Senders and Receivers must
// be closed before the Method.
//
// A plugin process also exits on its own when the host process is gone,
// however the host ended (sdk/goplugin watches its parent).
package goplugin

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pagewire/pagewire/internal/gpproto"
	"github.com/pagewire/pagewire/sdk"
)

// ProtocolVersion is the plugin protocol this host speaks.
const ProtocolVersion = gpproto.ProtocolVersion

// Defaults of a [Config].
const (
	DefaultStartTimeout = 10 * time.Second
	DefaultCallTimeout  = 10 * time.Second
)

// ErrPlugin reports a plugin that failed, died, or is not a plugin.
var ErrPlugin = fmt.Errorf("go-%w", sdk.ErrPlugin)

// ErrChecksum reports a plugin binary whose sha256 is not the pinned one.
var ErrChecksum = errors.New("plugin checksum mismatch")

// Config configures loading. The zero value is usable.
type Config struct {
	// SHA256, if set, pins the binary: Load refuses a file whose sha256
	// differs. On Linux the file that runs is the open file Load hashed,
	// whatever is at the path by then.
	SHA256 []byte
	// Log receives the plugin's log lines and go-plugin's; nil is
	// slog.Default().
	Log *slog.Logger
	// StartTimeout bounds starting the process and the handshake; 0 is 10s.
	StartTimeout time.Duration
	// CallTimeout bounds every call into the plugin; 0 is 10s.
	CallTimeout time.Duration
	// NoDataPlane sends every packet inside its gRPC message instead of
	// through the data plane: a memory region shared with the plugin
	// process and a socket per channel (Linux only; see the package doc).
	NoDataPlane bool
	// NoSharedMemory keeps the plugin from mapping the sender's memory
	// (see [Method.ShareMemory]): every page is copied to it instead, and
	// it sees only the pages it compresses.
	NoSharedMemory bool
}

// Method is a running plugin; it implements [sdk.Method].
type Method struct {
	name      string
	path      string
	cfg       Config
	client    *plugin.Client
	conn      *gpproto.Conn
	plane     *plane // nil: packets in the messages
	shares    shares
	info      sdk.Info
	version   int
	size      int64
	sum       [32]byte
	start     time.Duration
	pid       int // the plugin process, leader of its process group
	closeOnce sync.Once

	// byOffset counts the packets whose pages went by offset in shared
	// memory, copied those whose pages were copied to the plugin.
	byOffset, copied atomic.Uint64
}

// testHookAfterHash, if set, runs right after Load hashed the file.
var testHookAfterHash func()

// Load starts the plugin binary at path and checks it.
func Load(path string, cfg Config) (*Method, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = DefaultStartTimeout
	}
	if cfg.CallTimeout == 0 {
		cfg.CallTimeout = DefaultCallTimeout
	}
	name := filepath.Base(path)
	m := &Method{name: name, path: path, cfg: cfg}
	// The file is opened once: what is hashed (and checked against the
	// pin) is what runs (see runFile).
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close() // once the process has started, or failed to
	if st, err := f.Stat(); err == nil && (st.IsDir() || st.Mode().Perm()&0o111 == 0) {
		return nil, fmt.Errorf("%w: %s is not an executable (a go-plugin binary); Wasm modules are loaded by package wasm", ErrPlugin, name)
	}
	h := sha256.New()
	if m.size, err = io.Copy(h, f); err != nil {
		return nil, err
	}
	h.Sum(m.sum[:0])
	if testHookAfterHash != nil {
		testHookAfterHash()
	}
	if cfg.SHA256 != nil {
		if len(cfg.SHA256) != sha256.Size {
			return nil, fmt.Errorf("%s: pinned sha256 of %d bytes, want %d", name, len(cfg.SHA256), sha256.Size)
		}
		// Checked here, not by go-plugin's SecureConfig, which would
		// hash the file at the path again.
		if !bytes.Equal(m.sum[:], cfg.SHA256) {
			return nil, fmt.Errorf("%w: %s: sha256 %x, pinned %x: refusing to run it", ErrChecksum, name, m.sum, cfg.SHA256)
		}
	}
	log := newLogger(cfg.Log, name)
	out := &lineWriter{log: func(line string) { cfg.Log.Info("plugin output", "plugin", name, "text", line) }}
	cmd := &exec.Cmd{Path: path, Args: []string{path}}
	ownGroup(cmd)
	if !cfg.NoDataPlane {
		if p, err := newPlane(); err != nil {
			cfg.Log.Debug("no data plane: packets travel in the messages", "plugin", name, "err", err)
		} else {
			m.plane = p
			cmd.ExtraFiles = []*os.File{p.child} // descriptor 3
			cmd.Env = append(os.Environ(), gpproto.PlaneEnv+"=3")
		}
	}
	// After the plane's descriptor: that one is 3 in the plugin.
	if err := runFile(cmd, f, cfg.SHA256 != nil); err != nil {
		if m.plane != nil {
			m.plane.close()
		}
		return nil, fmt.Errorf("%w: %s: %w", ErrPlugin, name, err)
	}
	start := time.Now()
	m.client = plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  gpproto.Handshake,
		VersionedPlugins: map[int]plugin.PluginSet{ProtocolVersion: {gpproto.PluginName: &gpproto.Plugin{}}},
		Cmd:              cmd,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         true,
		StartTimeout:     cfg.StartTimeout,
		Logger:           log,
		Stderr:           io.Discard, // its lines reach Logger parsed
		SyncStdout:       out,
		SyncStderr:       out,
		GRPCDialOptions: []grpc.DialOption{
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(gpproto.MaxMessage), grpc.MaxCallSendMsgSize(gpproto.MaxMessage)),
			grpc.WithInitialWindowSize(gpproto.Window), grpc.WithInitialConnWindowSize(gpproto.Window),
			grpc.WithWriteBufferSize(256 << 10), grpc.WithReadBufferSize(256 << 10),
		},
	})
	ok := false
	defer func() {
		if !ok {
			m.Close()
		}
	}()
	rpc, err := m.client.Client()
	if cmd.Process != nil {
		m.pid = cmd.Process.Pid
	}
	if m.plane != nil {
		m.plane.started()
	}
	if err != nil {
		if strings.Contains(err.Error(), "ncompatible API version") {
			return nil, fmt.Errorf("%w: %s speaks another protocol version: %w", ErrPlugin, name, err)
		}
		return nil, fmt.Errorf("%w: %s: not a pagewire go-plugin of protocol v%d, or it failed to start: %w", ErrPlugin, name, ProtocolVersion, err)
	}
	raw, err := rpc.Dispense(gpproto.PluginName)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrPlugin, name, err)
	}
	conn, ok2 := raw.(*gpproto.Conn)
	if !ok2 {
		return nil, fmt.Errorf("%w: %s: dispensed %T", ErrPlugin, name, raw)
	}
	m.conn = conn
	ctx, cancel := m.callContext()
	m.version, m.info, err = conn.Info(ctx)
	cancel()
	if err != nil {
		return nil, m.rpcError(-1, "info", err)
	}
	if m.version != ProtocolVersion || m.client.NegotiatedVersion() != ProtocolVersion {
		return nil, fmt.Errorf("%w: %s speaks protocol v%d; this host knows v%d", ErrPlugin, name, m.version, ProtocolVersion)
	}
	if err := m.info.Check(); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrPlugin, name, err)
	}
	m.start = time.Since(start)
	ok = true
	return m, nil
}

// Info implements [sdk.Method].
func (m *Method) Info() sdk.Info { return m.info }

// Close kills the plugin process and waits for it to exit. It can be
// called more than once.
//
// On Linux the plugin runs in a process group of its own, and Close
// ends the processes the plugin started too: once go-plugin's shutdown
// has ended the plugin process, the rest of its group is SIGKILLed.
func (m *Method) Close() error {
	m.closeOnce.Do(func() {
		killed := make(chan struct{})
		go func() {
			defer close(killed)
			m.client.Kill()
		}()
		endGroup(m.pid, killed)
		<-killed
		if m.plane != nil {
			m.plane.close()
		}
	})
	return nil
}

// SharedPackets reports how many packets the plugin's senders took by
// offset in shared memory (see [Method.ShareMemory]) and how many as a
// copy of their pages.
func (m *Method) SharedPackets() (shared, copied uint64) {
	return m.byOffset.Load(), m.copied.Load()
}

// Pid is the plugin process's id (0 once it is killed).
func (m *Method) Pid() int {
	if rc := m.client.ReattachConfig(); rc != nil {
		return rc.Pid
	}
	return 0
}

// Inspection describes a plugin binary.
type Inspection struct {
	File     string        `json:"file"`
	Kind     string        `json:"kind"`
	Size     int64         `json:"size"`
	SHA256   string        `json:"sha256"`
	Protocol int           `json:"protocol"`
	Method   string        `json:"method"`
	Flag     uint32        `json:"flag"`
	Raw      bool          `json:"raw"`
	StartDur time.Duration `json:"start_ns"`
}

// Inspect describes the plugin.
func (m *Method) Inspect() Inspection {
	return Inspection{File: m.name, Kind: "go-plugin", Size: m.size, SHA256: hex.EncodeToString(m.sum[:]),
		Protocol: m.version, Method: m.info.Name, Flag: m.info.Flag, Raw: m.info.Raw, StartDur: m.start}
}

func (m *Method) callContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(m.conn.Context(), m.cfg.CallTimeout)
}

// rpcError maps an RPC's error: codes.DataLoss is a corrupt payload, a
// transport failure a dead plugin; ch < 0 is the method itself.
func (m *Method) rpcError(ch int, op string, err error) error {
	where := m.name
	if ch >= 0 {
		where = fmt.Sprintf("%s, channel %d", m.name, ch)
	}
	st, _ := status.FromError(err)
	switch {
	case m.client.Exited():
		return fmt.Errorf("%w: %s: %s: the plugin process exited", ErrPlugin, where, op)
	case st.Code() == codes.DataLoss:
		return fmt.Errorf("%w: %s: %s", sdk.ErrCorrupt, where, st.Message())
	case st.Code() == codes.DeadlineExceeded:
		return fmt.Errorf("%w: %s: %s: no answer within %v: %w", ErrPlugin, where, op, m.cfg.CallTimeout, sdk.ErrDeadline)
	case st.Code() == codes.Unavailable || st.Code() == codes.Canceled:
		return fmt.Errorf("%w: %s: %s: connection to the plugin lost: %s", ErrPlugin, where, op, st.Message())
	}
	return fmt.Errorf("%w: %s: %s: %s", ErrPlugin, where, op, st.Message())
}

// channel is one Sender or Receiver in the plugin process.
type channel struct {
	m    *Method
	ch   int
	h    uint64
	max  int        // largest payload
	dp   *dataPlane // nil: packets in the messages
	dead error
	buf  []byte // payloads without the data plane (PrepareInPlace)
	// mapped lists the shared memory (by id) the plugin mapped for this
	// channel; ^id: it could not.
	mapped []uint64
}

func (m *Method) open(role, ch int, o sdk.Options) (*channel, error) {
	if o.PageSize == 0 {
		o.PageSize = 4096
	}
	if o.PacketPages == 0 {
		o.PacketPages = 128
	}
	c := &channel{m: m, ch: ch, max: sdk.MaxPayload(o.PacketPages, o.PageSize)}
	var token uint64
	if m.plane != nil {
		m.plane.mu.Lock() // the plugin takes the offers in order
		defer m.plane.mu.Unlock()
		dp, tok, err := m.plane.open(gpproto.PlaneHalf(o.PacketPages, o.PageSize), role == gpproto.RoleSend)
		if err != nil {
			m.cfg.Log.Debug("no data plane: packets travel in the messages", "plugin", m.name, "channel", ch, "err", err)
		} else {
			c.dp, token = dp, tok
		}
	}
	ctx, cancel := m.callContext()
	defer cancel()
	h, onPlane, err := m.conn.Open(ctx, role, ch, o, token)
	if c.dp != nil && (err != nil || !onPlane) {
		c.dp.close()
		c.dp = nil
	}
	if err != nil {
		return nil, m.rpcError(ch, "open", err)
	}
	c.h = h
	return c, nil
}

// OnDataPlane reports whether the packets of s, a Sender or Receiver of
// a Method, bypass gRPC (see [Config.NoDataPlane]).
func OnDataPlane(s any) bool {
	switch c := s.(type) {
	case *sender:
		return c.dp != nil
	case *receiver:
		return c.dp != nil
	}
	return false
}

// NewSender implements [sdk.Method]: channel ch's sender in the plugin.
func (m *Method) NewSender(ch int, o sdk.Options) (sdk.Sender, error) {
	c, err := m.open(gpproto.RoleSend, ch, o)
	if err != nil {
		return nil, err
	}
	return (*sender)(c), nil
}

// NewReceiver implements [sdk.Method]: channel ch's receiver in the plugin.
func (m *Method) NewReceiver(ch int, o sdk.Options) (sdk.Receiver, error) {
	c, err := m.open(gpproto.RoleRecv, ch, o)
	if err != nil {
		return nil, err
	}
	return (*receiver)(c), nil
}

// fail maps err; a transport failure kills the channel for good.
func (c *channel) fail(op string, err error) error {
	e := c.m.rpcError(c.ch, op, err)
	if !errors.Is(e, sdk.ErrCorrupt) {
		if st, _ := status.FromError(err); c.m.client.Exited() || st.Code() == codes.Unavailable ||
			st.Code() == codes.Canceled || st.Code() == codes.DeadlineExceeded {
			c.dead = e
		}
	}
	return e
}

func (c *channel) close() error {
	if c.dp != nil {
		defer func() { c.dp.close(); c.dp = nil }()
	}
	if c.dead != nil {
		return nil // closed already, or its error was reported
	}
	ctx, cancel := c.m.callContext()
	defer cancel()
	err := c.m.conn.Close(ctx, c.h)
	c.dead = fmt.Errorf("%w: %s, channel %d: closed", ErrPlugin, c.m.name, c.ch)
	if err != nil {
		return c.m.rpcError(c.ch, "close", err)
	}
	return nil
}

type sender channel

// Prepare implements [sdk.Sender]: one RPC with the pages.
func (s *sender) Prepare(p *sdk.Packet, dst []byte) ([]byte, error) {
	c := (*channel)(s)
	if c.dead != nil {
		return dst, c.dead
	}
	if c.dp != nil {
		out, err := c.prepareOnPlane(p)
		return append(dst, out...), err
	}
	c.m.copied.Add(1)
	ctx, cancel := c.m.callContext()
	out, err := c.m.conn.Prepare(ctx, c.h, p.Seq, p.Pages, dst)
	cancel()
	if err != nil {
		return dst, c.fail("prepare", err)
	}
	if len(out)-len(dst) > c.max {
		return dst, fmt.Errorf("%w: %s, channel %d: payload of %d bytes, at most %d", ErrPlugin, c.m.name, c.ch, len(out)-len(dst), c.max)
	}
	return out, nil
}

// PrepareInPlace implements core.InPlaceSender: on the data plane the
// payload stays in the region, where the plugin wrote it, until the
// engine has written it out.
func (s *sender) PrepareInPlace(p *sdk.Packet) ([]byte, error) {
	c := (*channel)(s)
	if c.dead != nil || c.dp == nil {
		out, err := s.Prepare(p, c.buf[:0])
		c.buf = out
		return out, err
	}
	return c.prepareOnPlane(p)
}

// Close implements [sdk.Sender].
func (s *sender) Close() error { return (*channel)(s).close() }

type receiver channel

// Recv implements [sdk.Receiver]: one RPC with the payload; the plugin's
// pages are copied into p.Pages.
func (r *receiver) Recv(p *sdk.Packet, payload []byte) error {
	c := (*channel)(r)
	if c.dead != nil {
		return c.dead
	}
	if len(payload) > c.max {
		return fmt.Errorf("%w: %s, channel %d: payload of %d bytes, at most %d", sdk.ErrCorrupt, c.m.name, c.ch, len(payload), c.max)
	}
	if c.dp != nil {
		return c.recvOnPlane(p, payload)
	}
	ctx, cancel := c.m.callContext()
	err := c.m.conn.Recv(ctx, c.h, p.Seq, payload, p.Pages)
	cancel()
	if err != nil {
		return c.fail("recv", err)
	}
	return nil
}

// RecvBuffer implements core.InPlaceReceiver: on the data plane the
// engine reads the payload straight into the region.
func (r *receiver) RecvBuffer(n int) []byte {
	c := (*channel)(r)
	if c.dead != nil || c.dp == nil || n <= 0 || n > c.max {
		return nil
	}
	return c.recvBuffer(n)
}

// Close implements [sdk.Receiver].
func (r *receiver) Close() error { return (*channel)(r).close() }
