// Package wasm loads compression methods shipped as WebAssembly modules
// (sdk/ABI.md) with wazero and serves them as [sdk.Method]s: the engine
// cannot tell them from built-in methods.
//
// A [Module] is compiled once (with an on-disk compilation cache) and
// instantiated once per channel, so a channel's stream state lives in its
// own instance. Instances are sandboxed: no files, network, environment or
// arguments, a fake clock, a memory cap, and a deadline on every call. A
// trap, a deadline or a result out of bounds fails only that channel's
// Sender or Receiver, with an error naming the module and the channel; the
// instance is closed and never called again. Module.Close releases the
// runtime; the Senders and Receivers must be closed first.
package wasm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/pagewire/pagewire/sdk"
)

// ABIVersion is the plugin ABI this host speaks.
const ABIVersion = 1

// Defaults of a [Config].
const (
	DefaultMemoryLimit = 256 << 20
	DefaultCallTimeout = 10 * time.Second
)

// ErrPlugin reports a plugin that failed or broke the ABI.
var ErrPlugin = errors.New("wasm plugin failed")

// Config configures loading. The zero value is usable.
type Config struct {
	// CacheDir holds compiled modules across runs; "" is
	// $XDG_CACHE_HOME/pagewire/wasm (os.UserCacheDir), "-" disables it.
	CacheDir string
	// MemoryLimit caps each instance's linear memory in bytes; 0 is 256 MiB.
	MemoryLimit int
	// CallTimeout bounds every call into the module; 0 is 10s.
	CallTimeout time.Duration
	// Log receives what the module writes to stdout and stderr; nil is
	// slog.Default().
	Log *slog.Logger
	// Trusted drops the per-call deadline's instrumentation (wazero's
	// CloseOnContextDone, which checks for cancellation at every loop
	// header): plugins run 3-4x faster, but one that loops forever hangs
	// its channel until the transfer is cancelled. For plugins you built.
	Trusted bool
}

// Module is a loaded plugin; it implements [sdk.Method].
type Module struct {
	name     string
	cfg      Config
	rt       wazero.Runtime
	compiled wazero.CompiledModule
	info     sdk.Info
	size     int
	sum      [32]byte
	seq      atomic.Uint64 // instance names
	compile  time.Duration
}

// Load reads, compiles and checks the module at path.
func Load(ctx context.Context, path string, cfg Config) (*Module, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return LoadBytes(ctx, filepath.Base(path), b, cfg)
}

// LoadBytes compiles and checks a module; name is used in errors.
func LoadBytes(ctx context.Context, name string, b []byte, cfg Config) (*Module, error) {
	if cfg.MemoryLimit == 0 {
		cfg.MemoryLimit = DefaultMemoryLimit
	}
	if cfg.CallTimeout == 0 {
		cfg.CallTimeout = DefaultCallTimeout
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	rc := wazero.NewRuntimeConfigCompiler().
		WithMemoryLimitPages(uint32((cfg.MemoryLimit + 65535) / 65536)).
		WithCloseOnContextDone(!cfg.Trusted) // the per-call deadline can stop a module that loops
	if cfg.CacheDir != "-" {
		dir := cfg.CacheDir
		if dir == "" {
			if d, err := os.UserCacheDir(); err == nil {
				dir = filepath.Join(d, "pagewire", "wasm")
			}
		}
		if dir != "" {
			if cache, err := wazero.NewCompilationCacheWithDir(dir); err == nil {
				rc = rc.WithCompilationCache(cache)
			}
		}
	}
	m := &Module{name: name, cfg: cfg, size: len(b), sum: sha256.Sum256(b)}
	m.rt = wazero.NewRuntimeWithConfig(ctx, rc)
	ok := false
	defer func() {
		if !ok {
			m.rt.Close(ctx)
		}
	}()
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, m.rt); err != nil {
		return nil, err
	}
	start := time.Now()
	compiled, err := m.rt.CompileModule(ctx, b)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrPlugin, name, err)
	}
	m.compile = time.Since(start)
	m.compiled = compiled
	for _, f := range compiled.ImportedFunctions() {
		mod, fn, _ := f.Import()
		if mod != wasi_snapshot_preview1.ModuleName {
			return nil, fmt.Errorf("%w: %s imports %s.%s; a plugin may import only %s", ErrPlugin, name, mod, fn, wasi_snapshot_preview1.ModuleName)
		}
	}
	for _, e := range []string{"pagewire_abi_version", "pagewire_info", "pagewire_alloc", "pagewire_setup", "pagewire_prepare", "pagewire_recv", "pagewire_cleanup", "pagewire_last_error"} {
		if _, ok := compiled.ExportedFunctions()[e]; !ok {
			return nil, fmt.Errorf("%w: %s does not export %s: not a pagewire plugin (sdk/ABI.md)", ErrPlugin, name, e)
		}
	}
	inst, err := m.instantiate(ctx, -1)
	if err != nil {
		return nil, err
	}
	defer inst.mod.Close(ctx)
	v, err := inst.call(ctx, "pagewire_abi_version")
	if err != nil {
		return nil, err
	}
	if v != ABIVersion {
		return nil, fmt.Errorf("%w: %s speaks ABI v%d; this host knows v%d", ErrPlugin, name, int32(v), ABIVersion)
	}
	pl, err := inst.call(ctx, "pagewire_info")
	if err != nil {
		return nil, err
	}
	raw, err := inst.read(pl)
	if err != nil {
		return nil, err
	}
	if len(raw) < 6 || len(raw) != 6+int(raw[5]) {
		return nil, fmt.Errorf("%w: %s: method info of %d bytes", ErrPlugin, name, len(raw))
	}
	m.info = sdk.Info{Flag: binary.LittleEndian.Uint32(raw), Raw: raw[4] == 1, Name: string(raw[6:])}
	if err := m.info.Check(); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrPlugin, name, err)
	}
	ok = true
	return m, nil
}

// Info implements [sdk.Method]. A module that reports Raw (its payload is
// the pages unchanged) is not called on the data path at all: the engine
// moves the pages itself.
func (m *Module) Info() sdk.Info { return m.info }

// Close releases the runtime and every instance still open.
func (m *Module) Close(ctx context.Context) error { return m.rt.Close(ctx) }

// Inspection describes a module file.
type Inspection struct {
	File       string        `json:"file"`
	Size       int           `json:"size"`
	SHA256     string        `json:"sha256"`
	ABI        int           `json:"abi"`
	Method     string        `json:"method"`
	Flag       uint32        `json:"flag"`
	Raw        bool          `json:"raw"`
	Imports    []string      `json:"imports"`
	Exports    []string      `json:"exports"`
	CompileDur time.Duration `json:"compile_ns"`
}

// Inspect describes the module.
func (m *Module) Inspect() Inspection {
	in := Inspection{File: m.name, Size: m.size, SHA256: hex.EncodeToString(m.sum[:]), ABI: ABIVersion,
		Method: m.info.Name, Flag: m.info.Flag, Raw: m.info.Raw, CompileDur: m.compile}
	for _, f := range m.compiled.ImportedFunctions() {
		mod, fn, _ := f.Import()
		in.Imports = append(in.Imports, mod+"."+fn)
	}
	for name := range m.compiled.ExportedFunctions() {
		in.Exports = append(in.Exports, name)
	}
	slices.Sort(in.Exports)
	return in
}

// instance is one module instance: one channel's state.
type instance struct {
	m    *Module
	ch   int
	mod  api.Module
	fns  map[string]api.Function
	dead error
}

// logWriter forwards a module's output to the log, a line at a time.
type logWriter struct {
	log  *slog.Logger
	name string
	buf  []byte
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			if len(w.buf) > 4096 {
				w.log.Info("plugin output", "plugin", w.name, "text", string(w.buf))
				w.buf = w.buf[:0]
			}
			return len(p), nil
		}
		w.log.Info("plugin output", "plugin", w.name, "text", string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
}

func (m *Module) instantiate(ctx context.Context, ch int) (*instance, error) {
	out := &logWriter{log: m.cfg.Log, name: m.name}
	mc := wazero.NewModuleConfig().
		WithName(fmt.Sprintf("%s#%d", m.name, m.seq.Add(1))).
		WithStartFunctions("_initialize").
		WithStdout(out).WithStderr(out).
		WithStdin(eofReader{})
	ictx, cancel := context.WithTimeout(ctx, m.cfg.CallTimeout)
	defer cancel()
	mod, err := m.rt.InstantiateModule(ictx, m.compiled, mc)
	if err != nil {
		return nil, m.errorf(ch, "instantiate: %v", err)
	}
	inst := &instance{m: m, ch: ch, mod: mod, fns: make(map[string]api.Function)}
	for name := range m.compiled.ExportedFunctions() {
		inst.fns[name] = mod.ExportedFunction(name)
	}
	return inst, nil
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

func (m *Module) errorf(ch int, format string, args ...any) error {
	where := m.name
	if ch >= 0 {
		where = fmt.Sprintf("%s, channel %d", m.name, ch)
	}
	return fmt.Errorf("%w: %s: %s", ErrPlugin, where, fmt.Sprintf(format, args...))
}

// call runs an export with the per-call deadline. Any failure kills the
// instance.
func (in *instance) call(ctx context.Context, name string, args ...uint64) (uint64, error) {
	if in.dead != nil {
		return 0, in.dead
	}
	cctx, cancel := context.WithTimeout(ctx, in.m.cfg.CallTimeout)
	defer cancel()
	res, err := in.fns[name].Call(cctx, args...)
	if err != nil {
		if cctx.Err() == context.DeadlineExceeded {
			err = fmt.Errorf("no answer within %v", in.m.cfg.CallTimeout)
		}
		in.dead = in.m.errorf(in.ch, "%s: %v", name, err)
		in.mod.Close(context.Background())
		return 0, in.dead
	}
	if len(res) != 1 {
		in.dead = in.m.errorf(in.ch, "%s returned %d results", name, len(res))
		return 0, in.dead
	}
	return res[0], nil
}

// read returns a copy of the guest bytes named by ptr<<32|len.
func (in *instance) read(pl uint64) ([]byte, error) {
	ptr, n := uint32(pl>>32), uint32(pl)
	if n == 0 {
		return nil, nil
	}
	b, ok := in.mod.Memory().Read(ptr, n)
	if !ok {
		return nil, in.m.errorf(in.ch, "pointer %#x+%d outside memory", ptr, n)
	}
	return bytes.Clone(b), nil
}

// result maps a negative ABI code to an error with the module's message.
func (in *instance) result(ctx context.Context, op string, r int32) error {
	if r >= 0 {
		return nil
	}
	msg := ""
	if pl, err := in.call(ctx, "pagewire_last_error"); err == nil {
		if b, err := in.read(pl); err == nil {
			msg = string(b)
		}
	}
	switch r {
	case -1:
		return fmt.Errorf("%w: %s, channel %d: %s", sdk.ErrCorrupt, in.m.name, in.ch, msg)
	case -2, -3, -4:
		return in.m.errorf(in.ch, "%s: %s (code %d)", op, msg, r)
	}
	in.dead = in.m.errorf(in.ch, "%s: unknown result %d", op, r)
	return in.dead
}

// channel is a Sender or Receiver on its own instance, with the two
// guest buffers the ABI describes.
type channel struct {
	in       *instance
	ctx      context.Context
	pageSize int
	inPtr    uint32
	inCap    uint32
	outPtr   uint32
	outCap   uint32
}

func (m *Module) open(role int32, ch int, o sdk.Options) (*channel, error) {
	if o.PageSize == 0 {
		o.PageSize = 4096
	}
	if o.PacketPages == 0 {
		o.PacketPages = 128
	}
	ctx := context.Background()
	in, err := m.instantiate(ctx, ch)
	if err != nil {
		return nil, err
	}
	c := &channel{in: in, ctx: ctx, pageSize: o.PageSize}
	pages := uint64(o.PageSize) * uint64(o.PacketPages)
	payload := uint64(sdk.MaxPayload(o.PacketPages, o.PageSize))
	c.inCap, c.outCap = uint32(max(pages, payload)), uint32(max(pages, payload))
	for _, p := range []*uint32{&c.inPtr, &c.outPtr} {
		r, err := in.call(ctx, "pagewire_alloc", uint64(c.inCap))
		if err != nil {
			in.mod.Close(ctx)
			return nil, err
		}
		if r == 0 || uint64(uint32(r))+uint64(c.inCap) > uint64(in.mod.Memory().Size()) {
			in.mod.Close(ctx)
			return nil, m.errorf(ch, "pagewire_alloc(%d) returned %#x", c.inCap, r)
		}
		*p = uint32(r)
	}
	r, err := in.call(ctx, "pagewire_setup", uint64(role), uint64(ch), uint64(int64(o.Level)), uint64(o.PageSize), uint64(o.PacketPages))
	if err == nil {
		err = in.result(ctx, "pagewire_setup", int32(r))
	}
	if err != nil {
		in.mod.Close(ctx)
		return nil, err
	}
	return c, nil
}

// NewSender implements [sdk.Method]: a new instance for channel ch.
func (m *Module) NewSender(ch int, o sdk.Options) (sdk.Sender, error) {
	c, err := m.open(1, ch, o)
	if err != nil {
		return nil, err
	}
	return (*sender)(c), nil
}

// NewReceiver implements [sdk.Method]: a new instance for channel ch.
func (m *Module) NewReceiver(ch int, o sdk.Options) (sdk.Receiver, error) {
	c, err := m.open(2, ch, o)
	if err != nil {
		return nil, err
	}
	return (*receiver)(c), nil
}

func (c *channel) close() error {
	if c.in.dead != nil {
		return nil // already closed; its error was reported
	}
	r, err := c.in.call(c.ctx, "pagewire_cleanup")
	if err == nil {
		err = c.in.result(c.ctx, "pagewire_cleanup", int32(r))
	}
	c.in.mod.Close(c.ctx)
	c.in.dead = c.in.m.errorf(c.in.ch, "closed")
	return err
}

type sender channel

func (s *sender) Prepare(p *sdk.Packet, dst []byte) ([]byte, error) {
	c := (*channel)(s)
	mem := c.in.mod.Memory()
	n := len(p.Pages) * c.pageSize
	if uint32(n) > c.inCap {
		return dst, c.in.m.errorf(c.in.ch, "packet of %d pages does not fit", len(p.Pages))
	}
	buf, ok := mem.Read(c.inPtr, uint32(n))
	if !ok {
		return dst, c.in.m.errorf(c.in.ch, "input buffer outside memory")
	}
	for i, pg := range p.Pages {
		copy(buf[i*c.pageSize:], pg)
	}
	r, err := c.in.call(c.ctx, "pagewire_prepare", uint64(c.inPtr), uint64(len(p.Pages)), uint64(c.outPtr), uint64(c.outCap))
	if err != nil {
		return dst, err
	}
	if err := c.in.result(c.ctx, "pagewire_prepare", int32(r)); err != nil {
		return dst, err
	}
	if uint32(r) > c.outCap {
		c.in.dead = c.in.m.errorf(c.in.ch, "payload of %d bytes, room for %d", uint32(r), c.outCap)
		return dst, c.in.dead
	}
	out, ok := mem.Read(c.outPtr, uint32(r))
	if !ok {
		return dst, c.in.m.errorf(c.in.ch, "output buffer outside memory")
	}
	return append(dst, out...), nil
}

func (s *sender) Close() error { return (*channel)(s).close() }

type receiver channel

func (r *receiver) Recv(p *sdk.Packet, payload []byte) error {
	c := (*channel)(r)
	mem := c.in.mod.Memory()
	if uint32(len(payload)) > c.inCap {
		return fmt.Errorf("%w: payload of %d bytes, at most %d", sdk.ErrCorrupt, len(payload), c.inCap)
	}
	n := len(p.Pages) * c.pageSize
	if uint32(n) > c.outCap {
		return c.in.m.errorf(c.in.ch, "packet of %d pages does not fit", len(p.Pages))
	}
	if !mem.Write(c.inPtr, payload) {
		return c.in.m.errorf(c.in.ch, "input buffer outside memory")
	}
	res, err := c.in.call(c.ctx, "pagewire_recv", uint64(c.inPtr), uint64(len(payload)), uint64(c.outPtr), uint64(len(p.Pages)))
	if err != nil {
		return err
	}
	if err := c.in.result(c.ctx, "pagewire_recv", int32(res)); err != nil {
		return err
	}
	pages, ok := mem.Read(c.outPtr, uint32(n))
	if !ok {
		return c.in.m.errorf(c.in.ch, "output buffer outside memory")
	}
	for i, pg := range p.Pages {
		copy(pg, pages[i*c.pageSize:])
	}
	return nil
}

func (r *receiver) Close() error { return (*channel)(r).close() }
