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
//
// How a call's deadline is enforced depends on the module's [Tier]: a
// module that imports pagewire.check and nothing from WASI runs without
// wazero's per-loop checks and is stopped by a watchdog at its calls to
// check ([TierFast]); any other module (WASI, or one that never calls
// check) runs with the checks ([TierChecked]) unless the Config trusts
// it. The package starts no goroutines of its own.
//
// A module's start function (its start section and _initialize) and the
// calls Load makes always run with wazero's per-loop checks, whatever the
// tier: Load stops them at Config.CallTimeout ([ErrDeadline]) or when its
// context is cancelled. In the fast and trusted tiers Load runs them in a
// second, checked compilation of the module that it discards before it
// returns; each channel's instance then runs the same start function
// without the checks, which is safe because a module without WASI imports
// (or with WASI's fake clock, no inputs and the deterministic random
// source the host gives it) computes the same thing every time.
//
// A call in the fast or trusted tier that loops without calling
// pagewire.check is not only unstoppable: wazero's machine code cannot be
// preempted by the Go runtime either, so once a garbage collection starts
// it waits for that call, and the whole process stops with it, signal
// handlers included (only SIGKILL ends it). This is why a module that
// does not import check is never fast: the fast tier is for modules that
// call check inside every loop that may run long, as the SDK's C shims
// do. Run modules you do not trust with Config.Strict.
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
	"strings"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
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

// ErrPlugin reports a plugin that failed or broke the ABI. It wraps
// [sdk.ErrPlugin].
var ErrPlugin = fmt.Errorf("wasm %w", sdk.ErrPlugin)

// ErrDeadline reports a call that ran past Config.CallTimeout; it comes
// wrapped together with [ErrPlugin]. It wraps [sdk.ErrDeadline].
var ErrDeadline = fmt.Errorf("call %w", sdk.ErrDeadline)

// Tier says how a module's calls are bounded in time.
type Tier string

const (
	// TierFast: the module imports pagewire.check and nothing from
	// WASI. Its code runs without wazero's per-loop checks, at full
	// speed; a call past its deadline is stopped at the module's next
	// call to pagewire.check. A call that loops without calling it
	// cannot be stopped while it runs, and stalls the whole process at
	// the next garbage collection (see the package doc).
	TierFast Tier = "fast"
	// TierChecked: wazero checks for the deadline at every loop header
	// (CloseOnContextDone): stoppable anywhere, 2.5-5x slower. WASI
	// modules (Go's wasip1 port) and modules that do not import
	// pagewire.check run here unless trusted, and every module does
	// under Config.Strict.
	TierChecked Tier = "checked"
	// TierTrusted: a module that would run checked, loaded with
	// Config.Trusted: no per-loop checks; only its calls to
	// pagewire.check, if any, see the deadline.
	TierTrusted Tier = "trusted"
)

// Host is the module name of the host functions a plugin may import
// besides WASI; its one function is check, () -> ().
const Host = "pagewire"

// Config configures loading. The zero value is usable.
type Config struct {
	// CacheDir holds compiled modules across runs; "" is
	// $XDG_CACHE_HOME/pagewire/wasm (os.UserCacheDir), "-" disables it.
	CacheDir string
	// MemoryLimit caps each instance's linear memory in bytes; 0 is 256 MiB.
	// The cap is per instance, and a transfer runs one instance per
	// channel: its modules may hold up to channels x MemoryLimit. On
	// Linux each memory is a mapping reserved at its cap and resident
	// only as far as the module touches it, and it grows in place, so
	// the host holds what the modules use, not a copy more.
	MemoryLimit int
	// CallTimeout bounds every call into the module, and each instance's
	// start function; 0 is 10s.
	CallTimeout time.Duration
	// Log receives what the module writes to stdout and stderr; nil is
	// slog.Default().
	Log *slog.Logger
	// Trusted drops the per-call deadline's instrumentation (wazero's
	// CloseOnContextDone, which checks for cancellation at every loop
	// header) from modules that would run checked: plugins run 3-4x
	// faster, but one that loops forever without calling pagewire.check
	// cannot be stopped and stalls the process (see the package doc).
	// For plugins you built. Fast-tier modules never have it.
	Trusted bool
	// Strict runs every module with the instrumentation, fast-tier
	// modules too ([TierChecked]): any call can be stopped at its
	// deadline, at 2.5-5x the cost. Ignored when Trusted is set.
	Strict bool
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
	tier     Tier
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
	imports, err := importModules(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrPlugin, name, err)
	}
	tier := tierOf(imports, cfg)
	m := &Module{name: name, cfg: cfg, size: len(b), sum: sha256.Sum256(b), tier: tier}
	// Only the checked tier's code can be stopped anywhere: the per-call
	// deadline and a cancelled context stop a module that loops.
	if m.rt, err = newRuntime(ctx, cfg, tier == TierChecked); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			m.rt.Close(ctx)
		}
	}()
	start := time.Now()
	compiled, err := m.rt.CompileModule(ctx, b)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrPlugin, name, err)
	}
	m.compile = time.Since(start)
	m.compiled = compiled
	for _, f := range compiled.ImportedFunctions() {
		mod, fn, _ := f.Import()
		if mod != wasi_snapshot_preview1.ModuleName && (mod != Host || fn != "check") {
			return nil, fmt.Errorf("%w: %s imports %s.%s; a plugin may import only %s and %s.check", ErrPlugin, name, mod, fn, wasi_snapshot_preview1.ModuleName, Host)
		}
	}
	for _, e := range exports {
		f, ok := compiled.ExportedFunctions()[e.name]
		if !ok {
			return nil, fmt.Errorf("%w: %s does not export %s: not a pagewire plugin (sdk/ABI.md)", ErrPlugin, name, e.name)
		}
		if !slices.Equal(f.ParamTypes(), e.params) || !slices.Equal(f.ResultTypes(), e.results) {
			return nil, fmt.Errorf("%w: %s: %s is %s; ABI v%d wants %s (sdk/ABI.md)", ErrPlugin, name, e.name,
				signature(f.ParamTypes(), f.ResultTypes()), ABIVersion, signature(e.params, e.results))
		}
	}
	// The start function and the calls below run where they can be
	// stopped: in this runtime in the checked tier, and otherwise in a
	// checked compilation of their own (see the package doc).
	probe := m
	if tier != TierChecked {
		probe = &Module{name: name, cfg: cfg, tier: TierChecked}
		if probe.rt, err = newRuntime(ctx, cfg, true); err != nil {
			return nil, err
		}
		defer probe.rt.Close(ctx)
		if probe.compiled, err = probe.rt.CompileModule(ctx, b); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrPlugin, name, err)
		}
	}
	inst, err := probe.instantiate(ctx, -1)
	if err != nil {
		return nil, err
	}
	defer inst.mod.Close(ctx)
	v, err := inst.call("pagewire_abi_version")
	if err != nil {
		return nil, err
	}
	if v != ABIVersion {
		return nil, fmt.Errorf("%w: %s speaks ABI v%d; this host knows v%d", ErrPlugin, name, int32(v), ABIVersion)
	}
	pl, err := inst.call("pagewire_info")
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
		return nil, fmt.Errorf("%w: %s: %w", ErrPlugin, name, err)
	}
	ok = true
	return m, nil
}

// tierOf picks a module's tier from its imports ("module.field"). A
// module without WASI can be stopped without wazero's per-loop checks only
// at its calls to pagewire.check: one that does not import check could
// not be stopped at all, so it runs checked, as WASI modules do, unless
// trusted.
func tierOf(imports []string, cfg Config) Tier {
	wasi := slices.ContainsFunc(imports, func(s string) bool {
		return strings.HasPrefix(s, wasi_snapshot_preview1.ModuleName+".")
	})
	check := slices.Contains(imports, Host+".check")
	switch {
	case cfg.Trusted && (wasi || !check):
		return TierTrusted
	case cfg.Trusted:
		return TierFast
	case wasi || !check || cfg.Strict:
		return TierChecked
	}
	return TierFast
}

// newRuntime returns a runtime with the host modules a plugin may import.
// closeOnDone turns on wazero's per-loop checks (CloseOnContextDone): its
// calls stop when their context is done.
func newRuntime(ctx context.Context, cfg Config, closeOnDone bool) (wazero.Runtime, error) {
	rc := wazero.NewRuntimeConfigCompiler().
		WithMemoryLimitPages(uint32((cfg.MemoryLimit + 65535) / 65536)).
		WithCloseOnContextDone(closeOnDone)
	if cfg.CacheDir != "-" {
		dir := cfg.CacheDir
		if dir == "" {
			if d, err := os.UserCacheDir(); err == nil {
				dir = filepath.Join(d, "pagewire", "wasm")
			}
		}
		if dir != "" {
			if cache, err := wazero.NewCompilationCacheWithDir(dir); err == nil {
				rc = rc.WithCompilationCache(cache) // keyed by closeOnDone too
			}
		}
	}
	rt := wazero.NewRuntimeWithConfig(ctx, rc)
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, rt); err != nil {
		rt.Close(ctx)
		return nil, err
	}
	_, err := rt.NewHostModuleBuilder(Host).NewFunctionBuilder().
		WithGoModuleFunction(api.GoModuleFunc(check), nil, nil).Export("check").
		Instantiate(ctx)
	if err != nil {
		rt.Close(ctx)
		return nil, err
	}
	return rt, nil
}

var (
	i32 = api.ValueTypeI32
	i64 = api.ValueTypeI64
)

// exports are the functions a plugin exports, with their signatures
// (sdk/ABI.md).
var exports = []struct {
	name            string
	params, results []api.ValueType
}{
	{"pagewire_abi_version", nil, []api.ValueType{i32}},
	{"pagewire_info", nil, []api.ValueType{i64}},
	{"pagewire_alloc", []api.ValueType{i32}, []api.ValueType{i32}},
	{"pagewire_setup", []api.ValueType{i32, i32, i32, i32, i32}, []api.ValueType{i32}},
	{"pagewire_prepare", []api.ValueType{i32, i32, i32, i32}, []api.ValueType{i32}},
	{"pagewire_recv", []api.ValueType{i32, i32, i32, i32}, []api.ValueType{i32}},
	{"pagewire_cleanup", nil, []api.ValueType{i32}},
	{"pagewire_last_error", nil, []api.ValueType{i64}},
}

// signature formats a function type the way sdk/ABI.md writes it:
// (i32, i32) -> i32.
func signature(params, results []api.ValueType) string {
	names := func(ts []api.ValueType) string {
		s := make([]string, len(ts))
		for i, t := range ts {
			s[i] = api.ValueTypeName(t)
		}
		return strings.Join(s, ", ")
	}
	r := names(results)
	if len(results) != 1 {
		r = "(" + r + ")"
	}
	return "(" + names(params) + ") -> " + r
}

// Info implements [sdk.Method]. A module that reports Raw (its payload is
// the pages unchanged) is not called on the data path at all: the engine
// moves the pages itself.
func (m *Module) Info() sdk.Info { return m.info }

// Close releases the runtime and every instance still open.
func (m *Module) Close(ctx context.Context) error { return m.rt.Close(ctx) }

// Tier reports how the module's calls are bounded in time.
func (m *Module) Tier() Tier { return m.tier }

// Inspection describes a module file.
type Inspection struct {
	File       string        `json:"file"`
	Size       int           `json:"size"`
	SHA256     string        `json:"sha256"`
	ABI        int           `json:"abi"`
	Method     string        `json:"method"`
	Flag       uint32        `json:"flag"`
	Raw        bool          `json:"raw"`
	Tier       Tier          `json:"tier"`
	WASI       bool          `json:"wasi"` // imports from wasi_snapshot_preview1
	Imports    []string      `json:"imports"`
	Exports    []string      `json:"exports"`
	CompileDur time.Duration `json:"compile_ns"`
}

// Inspect describes the module.
func (m *Module) Inspect() Inspection {
	in := Inspection{File: m.name, Size: m.size, SHA256: hex.EncodeToString(m.sum[:]), ABI: ABIVersion,
		Method: m.info.Name, Flag: m.info.Flag, Raw: m.info.Raw, CompileDur: m.compile, Tier: m.tier}
	for _, f := range m.compiled.ImportedFunctions() {
		mod, fn, _ := f.Import()
		in.Imports = append(in.Imports, mod+"."+fn)
		in.WASI = in.WASI || mod == wasi_snapshot_preview1.ModuleName
	}
	// A module may import one function twice (Go's wasip1 runtime does
	// fd_write and random_get): list each once.
	slices.Sort(in.Imports)
	in.Imports = slices.Compact(in.Imports)
	for name := range m.compiled.ExportedFunctions() {
		in.Exports = append(in.Exports, name)
	}
	slices.Sort(in.Exports)
	return in
}

// instance is one module instance: one channel's state. Its calls run on
// the goroutine that owns the channel, one at a time.
type instance struct {
	m    *Module
	ch   int
	mod  api.Module
	fns  map[string]api.Function
	dead error
	// ctx is the context of every call: it carries the instance to check,
	// and stop cancels it (from any goroutine) to stop the running call
	// and every later one.
	ctx      context.Context
	stop     context.CancelCauseFunc
	stack    [8]uint64 // CallWithStack's parameters and results
	deadline time.Time // of the running call
	fired    bool      // check stopped the running call
}

type instanceKey struct{}

// errStop is what check panics with to abort a call past its deadline;
// wazero recovers it and the call returns an error.
var errStop = errors.New("stopped by the host's watchdog at pagewire.check")

// check is the host function pagewire.check: it aborts the calling
// module's running call if that call is past its deadline or the
// instance was stopped. Cheap (a clock read and a context's error): the C
// plugins call it every 64 KiB of work.
func check(ctx context.Context, _ api.Module, _ []uint64) {
	in, _ := ctx.Value(instanceKey{}).(*instance)
	if in == nil {
		return
	}
	if !in.deadline.IsZero() && time.Now().After(in.deadline) {
		in.fired = true
		panic(errStop)
	}
	if in.ctx.Err() != nil {
		panic(errStop)
	}
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
	inst := &instance{m: m, ch: ch, fns: make(map[string]api.Function)}
	life, stop := context.WithCancelCause(ctx)
	inst.stop = stop
	inst.ctx = context.WithValue(life, instanceKey{}, inst)
	// The start function runs under the per-call deadline: wazero stops
	// it there in the checked tier, and check does at its calls.
	ictx, cancel := context.WithTimeout(inst.ctx, m.cfg.CallTimeout)
	defer cancel()
	inst.deadline = time.Now().Add(m.cfg.CallTimeout)
	if memoryAllocator != nil {
		ictx = experimental.WithMemoryAllocator(ictx, memoryAllocator)
	}
	mod, err := m.rt.InstantiateModule(ictx, m.compiled, mc)
	inst.deadline = time.Time{}
	if err != nil {
		defer stop(nil)
		switch {
		case ctx.Err() != nil:
			return nil, fmt.Errorf("%w: start function stopped: %w", m.errorf(ch, "instantiate"), context.Cause(ctx))
		case inst.fired || ictx.Err() == context.DeadlineExceeded:
			return nil, fmt.Errorf("%w: start function gave no answer within %v: %w", m.errorf(ch, "instantiate"), m.cfg.CallTimeout, ErrDeadline)
		}
		return nil, m.errorf(ch, "instantiate: %v", err)
	}
	inst.mod = mod
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
// instance: it is closed and never called again.
//
// In the fast tier the deadline is the watchdog's alone (check), so a call
// costs no goroutine, context or allocation; in the checked tier wazero
// also watches a context with the same deadline.
func (in *instance) call(name string, args ...uint64) (uint64, error) {
	if in.dead != nil {
		return 0, in.dead
	}
	if in.ctx.Err() != nil {
		in.dead = fmt.Errorf("%w: stopped: %w", in.m.errorf(in.ch, "%s", name), context.Cause(in.ctx))
		in.mod.Close(context.Background())
		return 0, in.dead
	}
	fn := in.fns[name] // LoadBytes checked it exists and returns one result
	ctx, cancel := in.ctx, context.CancelFunc(nil)
	if in.m.tier == TierChecked {
		ctx, cancel = context.WithTimeout(in.ctx, in.m.cfg.CallTimeout)
		defer cancel()
	}
	copy(in.stack[:], args)
	in.deadline = time.Now().Add(in.m.cfg.CallTimeout)
	err := fn.CallWithStack(ctx, in.stack[:])
	in.deadline = time.Time{}
	if err != nil {
		if in.fired || (ctx.Err() == context.DeadlineExceeded && in.ctx.Err() == nil) {
			in.dead = fmt.Errorf("%w: no answer within %v: %w", in.m.errorf(in.ch, "%s", name), in.m.cfg.CallTimeout, ErrDeadline)
		} else if in.ctx.Err() != nil {
			in.dead = fmt.Errorf("%w: stopped: %w", in.m.errorf(in.ch, "%s", name), context.Cause(in.ctx))
		} else {
			in.dead = in.m.errorf(in.ch, "%s: %v", name, err)
		}
		in.mod.Close(context.Background())
		return 0, in.dead
	}
	return in.stack[0], nil
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
func (in *instance) result(op string, r int32) error {
	if r >= 0 {
		return nil
	}
	msg := ""
	if pl, err := in.call("pagewire_last_error"); err == nil {
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
		r, err := in.call("pagewire_alloc", uint64(c.inCap))
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
	r, err := in.call("pagewire_setup", uint64(role), uint64(ch), uint64(int64(o.Level)), uint64(o.PageSize), uint64(o.PacketPages))
	if err == nil {
		err = in.result("pagewire_setup", int32(r))
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
	if c.in.ctx.Err() != nil {
		// Stopped: the instance is dropped without its cleanup call.
		c.in.mod.Close(c.ctx)
		c.in.dead = c.in.m.errorf(c.in.ch, "closed")
		return nil
	}
	r, err := c.in.call("pagewire_cleanup")
	if err == nil {
		err = c.in.result("pagewire_cleanup", int32(r))
	}
	c.in.mod.Close(c.ctx)
	c.in.dead = c.in.m.errorf(c.in.ch, "closed")
	return err
}

type sender channel

// Prepare implements [sdk.Sender].
func (s *sender) Prepare(p *sdk.Packet, dst []byte) ([]byte, error) {
	out, err := s.PrepareInPlace(p)
	return append(dst, out...), err
}

// PrepareInPlace implements core.InPlaceSender: the payload is returned
// where the module wrote it, in its memory, valid until the next call.
func (s *sender) PrepareInPlace(p *sdk.Packet) ([]byte, error) {
	c := (*channel)(s)
	if c.in.dead != nil {
		return nil, c.in.dead
	}
	mem := c.in.mod.Memory()
	n := len(p.Pages) * c.pageSize
	if uint32(n) > c.inCap {
		return nil, c.in.m.errorf(c.in.ch, "packet of %d pages does not fit", len(p.Pages))
	}
	buf, ok := mem.Read(c.inPtr, uint32(n))
	if !ok {
		return nil, c.in.m.errorf(c.in.ch, "input buffer outside memory")
	}
	for i, pg := range p.Pages {
		copy(buf[i*c.pageSize:], pg)
	}
	r, err := c.in.call("pagewire_prepare", uint64(c.inPtr), uint64(len(p.Pages)), uint64(c.outPtr), uint64(c.outCap))
	if err != nil {
		return nil, err
	}
	if err := c.in.result("pagewire_prepare", int32(r)); err != nil {
		return nil, err
	}
	if uint32(r) > c.outCap {
		c.in.dead = c.in.m.errorf(c.in.ch, "payload of %d bytes, room for %d", uint32(r), c.outCap)
		return nil, c.in.dead
	}
	out, ok := mem.Read(c.outPtr, uint32(r))
	if !ok {
		return nil, c.in.m.errorf(c.in.ch, "output buffer outside memory")
	}
	return out, nil
}

func (s *sender) Close() error { return (*channel)(s).close() }

// Stop stops the channel's running call, if any, and fails every later
// one; it may be called from any goroutine, at any time, more than once.
// The engine calls it when the transfer fails or is cancelled: a checked
// call stops at its next loop header, a fast-tier call at its next
// pagewire.check. Close still releases the instance.
func (s *sender) Stop() { (*channel)(s).in.stop(errStopped) }

// errStopped is the cause of a channel's Stop.
var errStopped = errors.New("the transfer ended")

type receiver channel

// RecvBuffer implements core.InPlaceReceiver: the payload is read
// straight into the module's input buffer.
func (r *receiver) RecvBuffer(n int) []byte {
	c := (*channel)(r)
	if c.in.dead != nil || n <= 0 || uint32(n) > c.inCap {
		return nil
	}
	b, _ := c.in.mod.Memory().Read(c.inPtr, uint32(n))
	return b
}

// Recv implements [sdk.Receiver].
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
	in, ok := mem.Read(c.inPtr, uint32(len(payload)))
	if !ok {
		return c.in.m.errorf(c.in.ch, "input buffer outside memory")
	}
	if len(payload) > 0 && &in[0] != &payload[0] { // not read in place (RecvBuffer)
		copy(in, payload)
	}
	res, err := c.in.call("pagewire_recv", uint64(c.inPtr), uint64(len(payload)), uint64(c.outPtr), uint64(len(p.Pages)))
	if err != nil {
		return err
	}
	if err := c.in.result("pagewire_recv", int32(res)); err != nil {
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

// Stop is [sender.Stop] for a receiving channel.
func (r *receiver) Stop() { (*channel)(r).in.stop(errStopped) }
