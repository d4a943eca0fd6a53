package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/pagewire/pagewire/channels"
	"github.com/pagewire/pagewire/core"
	"github.com/pagewire/pagewire/sdk"
	"github.com/pagewire/pagewire/wasm"
)

// What gateway-in sends gateway-out besides the pages, as device-state
// blobs: the hello first, then each chunk of the main stream just before
// the link's Sync that orders it (instance = the sync point's number),
// and the stream's tail last.
const (
	gwHello    = "pagewire/gateway/hello"
	gwMain     = "pagewire/gateway/main"
	gwMainTail = "pagewire/gateway/main-tail"
)

type gatewayHello struct {
	Dialect core.Dialect `json:"dialect"`
	UUID    [16]byte     `json:"uuid"`
}

// linkError marks an error of the link leg, for the error's prefix.
type linkError struct{ error }

func (e linkError) Unwrap() error { return e.error }

// qemuMethod looks up a QEMU multifd-compression name.
func qemuMethod(flag, name string) (sdk.Method, error) {
	m, err := core.Methods.Lookup(name)
	if err != nil {
		return nil, usageError{fmt.Errorf("%s %s: %w", flag, name, err)}
	}
	if f := m.Info().Flag; f != 0 && !qemuCompressed(f) {
		return nil, usageError{fmt.Errorf("%s %s: QEMU's methods are none, zlib and zstd", flag, name)}
	}
	return m, nil
}

// qemuCompressed reports whether flag is one of QEMU's compressed
// multifd methods: zlib (0x2) or zstd (0x4).
func qemuCompressed(flag uint32) bool { return flag == 0x02 || flag == 0x04 }

// qemuPlugin loads a plugin whose method is one of QEMU's compressed
// ones, for a QEMU leg.
func qemuPlugin(ctx context.Context, path, pinSHA string, wcfg wasm.Config) (sdk.Method, func(), error) {
	m, closer, err := loadPlugin(ctx, path, "--qemu-plugin-sha256", pinSHA, false, wcfg)
	if err != nil {
		return nil, nil, err
	}
	if info := m.Info(); !qemuCompressed(info.Flag) {
		closer()
		return nil, nil, usageError{fmt.Errorf("--qemu-plugin %s: method %s (flag %#x) is not QEMU's zlib (0x2) or zstd (0x4)", path, info.Name, info.Flag)}
	}
	return m, closer, nil
}

func gatewayInCmd() *cobra.Command {
	var (
		c        common
		l        link
		listen   string
		to       string
		qch      int
		qmethod  string
		dialect  string
		patience time.Duration
	)
	cmd := &cobra.Command{
		Use:   "gateway-in --listen ADDR --to ADDR [flags]",
		Short: "Take a live migration from a QEMU source and forward it to a gateway-out",
		Long: `Accept a QEMU live migration with the multifd capability at --listen (as
'pagewire qemu recv' does: --qemu-channels and --qemu-method must be the
source's multifd-channels and multifd-compression), and forward the whole
migration over pagewire's own channels to 'pagewire qemu gateway-out' at
--to, with the link's own --channels and --method (or --plugin).

Pages go on the link as they arrive; at every sync point of the source
the gateway sends the main stream up to the marker and then a Sync, so
the destination QEMU sees every page before the marker that orders it. The link runs mutual TLS 1.3 (--tls-cert, --tls-key, --tls-ca; or
--insecure) and may be capped with --max-bandwidth. Any failure on any
leg fails the migration: the source sees its connections close.`,
		Example: `  pagewire qemu gateway-in --listen tcp:127.0.0.1:4444 --to tcp:gw-out.example:7000 \
      --qemu-channels 4 --qemu-method none --channels 8 --method zstd \
      --tls-cert client.pem --tls-key client-key.pem --tls-ca ca.pem`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			defer c.release()
			if listen == "" || to == "" {
				return usageError{fmt.Errorf("gateway-in: --listen ADDR and --to ADDR are required")}
			}
			m, err := c.lookup()
			if err != nil {
				return err
			}
			qm, err := qemuMethod("--qemu-method", qmethod)
			if err != nil {
				return err
			}
			dl, err := core.ParseDialect(dialect)
			if err != nil {
				return usageError{fmt.Errorf("--dialect: %w", err)}
			}
			d, err := l.dial(to)
			if err != nil {
				return err
			}
			ln, err := channels.Listen(listen)
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "listening on %s\n", channels.Addr(ln.Addr()))
			g := &gatewayIn{link: d, cfg: core.SenderConfig{Channels: c.channels, Method: m, Level: c.level, Timeout: c.timeout}}
			stats := func() core.Stats {
				if s := g.link2.Load(); s != nil {
					return s.Stats()
				}
				return core.Stats{}
			}
			qcfg := core.QEMUConfig{Channels: qch, Method: qm, Dialect: dl, Timeout: c.timeout, HandshakeTimeout: patience}
			return runGateway(cmd.Context(), &c, "gateway-in", "forwarded", to, &g.ramCopy, stats, func(ctx context.Context) (core.Stats, error) {
				return g.run(ctx, ln, qcfg)
			})
		},
	}
	c.register(cmd)
	l.register(cmd, true, true)
	cmd.Flags().StringVar(&listen, "listen", "", "address the QEMU source migrates to, tcp:HOST:PORT or unix:PATH (required)")
	cmd.Flags().StringVar(&to, "to", "", "address of the gateway-out (required)")
	cmd.Flags().IntVar(&qch, "qemu-channels", 2, "the source's multifd-channels")
	cmd.Flags().StringVar(&qmethod, "qemu-method", "none", "the source's multifd-compression: none, zlib or zstd")
	cmd.Flags().StringVar(&dialect, "dialect", "auto", "the source's multifd dialect: 7.2, 10.0, or auto (the stream tells)")
	cmd.Flags().DurationVar(&patience, "wait", 30*time.Minute, "how long to wait for the source QEMU's channels")
	return cmd
}

// gatewayIn forwards a QEMU migration to a gateway-out.
type gatewayIn struct {
	link channels.Dialer
	cfg  core.SenderConfig

	uuid [16]byte // the source's

	ramCopy
	q     *core.QEMUReceiver
	snd   *core.Sender
	stop  func()                      // stops watching snd
	fwd   *forwarder                  // pages to snd as they land
	link2 atomic.Pointer[core.Sender] // snd, for the progress line
}

// watch cancels ctx with the sender's error as soon as it fails; stop
// ends the watch.
func watch(s *core.Sender, cancel context.CancelCauseFunc, leg string) (stop func()) {
	done := make(chan struct{})
	go func() {
		select {
		case <-s.Done():
			if err := s.Err(); err != nil {
				cancel(fmt.Errorf("%s: %w", leg, err))
			}
		case <-done:
		}
	}()
	return sync.OnceFunc(func() { close(done) })
}

func (g *gatewayIn) run(ctx context.Context, ln net.Listener, qcfg core.QEMUConfig) (core.Stats, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	qcfg.Alloc = g.alloc
	qcfg.OnSync = func(p *core.SyncPoint) error { return g.sync(ctx, cancel, p) }
	g.fwd = newForwarder(ctx, g.link2.Load)
	qcfg.OnPages = g.fwd.pages
	g.uuid = qcfg.UUID
	g.q = core.NewQEMUReceiver(qcfg)
	_, err := g.q.Receive(ctx, ln)
	if ferr := g.fwd.drain(); err == nil && g.snd != nil {
		err = ferr
	}
	g.fwd.stop(g.snd, err)
	if g.stop != nil {
		g.stop()
	}
	if err == nil && g.snd == nil {
		err = errors.New("the source's migration had no sync point")
	}
	if err == nil {
		if tail := g.q.MainTail(); len(tail) > 0 {
			err = g.snd.SendDeviceState(gwMainTail, 0, tail)
		}
	}
	var le linkError
	if g.snd == nil {
		if errors.As(err, &le) {
			return core.Stats{}, fmt.Errorf("link: %w", le.error)
		}
		return core.Stats{}, fmt.Errorf("source: %w", err)
	}
	if err != nil {
		if lerr := g.snd.Err(); lerr != nil {
			err = fmt.Errorf("link: %w", lerr)
		} else if errors.As(err, &le) {
			err = fmt.Errorf("link: %w", le.error)
		} else {
			err = fmt.Errorf("source: %w", err)
		}
		st, _ := g.snd.Abort(err)
		return st, err
	}
	st, err := g.snd.Close()
	if err != nil {
		return st, fmt.Errorf("link: %w", err)
	}
	return st, nil
}

// sync forwards one sync point: pages, the main stream's chunk, a Sync.
func (g *gatewayIn) sync(ctx context.Context, cancel context.CancelCauseFunc, p *core.SyncPoint) error {
	if g.snd == nil {
		// QEMU sends no page before its first sync point; any that came
		// fail here, before the forwarder can reach the Sender.
		if err := g.fwd.drain(); err != nil {
			return linkError{err}
		}
		cfg := g.cfg
		s, err := core.NewSender(ctx, g.link, g.mem, cfg)
		if err != nil {
			return linkError{err}
		}
		g.snd = s
		g.link2.Store(s)
		// A failed link fails the source's side at once, not at the
		// next sync point.
		g.stop = watch(s, cancel, "link")
		h, _ := json.Marshal(gatewayHello{Dialect: core.Dialect(g.q.Stats().Dialect), UUID: g.uuid})
		if err := s.SendDeviceState(gwHello, 0, h); err != nil {
			return err
		}
	}
	if err := g.fwd.drain(); err != nil {
		return linkError{err}
	}
	if err := g.snd.SendDeviceState(gwMain, uint32(p.N), bytes.Clone(p.Main())); err != nil {
		return linkError{err}
	}
	if err := g.snd.Sync(); err != nil {
		return linkError{err}
	}
	return nil
}

func gatewayOutCmd() *cobra.Command {
	var (
		c        common
		l        link
		listen   string
		to       string
		qch      int
		qmethod  string
		qplugin  string
		qpin     string
		qlevel   int
		patience time.Duration
	)
	cmd := &cobra.Command{
		Use:   "gateway-out --listen ADDR --to ADDR [flags]",
		Short: "Take a migration from a gateway-in and feed it to a QEMU destination",
		Long: `Accept a migration from 'pagewire qemu gateway-in' at --listen and re-emit
it to a real destination QEMU at --to (started with -incoming and the
multifd capability): the main stream byte for byte, the pages on
--qemu-channels multifd channels with --qemu-method (the destination's
multifd-channels and multifd-compression) and the source's uuid, a SYNC
on every channel before each of the main stream's sync markers.
--qemu-plugin FILE compresses toward the destination with a plugin
instead (a Wasm module or a go-plugin executable whose method is QEMU's
zlib or zstd, such as bin/plugins/zstd-c.wasm).

The link's method comes from the gateway-in (any method this build has,
or the same --plugin). The link runs mutual TLS 1.3 (--tls-cert, --tls-key,
--tls-ca; or --insecure). Any failure on any leg fails the migration: the
destination sees its connections close before the end of the stream.`,
		Example: `  pagewire qemu gateway-out --listen tcp:0.0.0.0:7000 --to tcp:127.0.0.1:4445 \
      --qemu-channels 2 --qemu-method zstd \
      --tls-cert server.pem --tls-key server-key.pem --tls-ca ca.pem`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			defer c.release()
			if listen == "" || to == "" {
				return usageError{fmt.Errorf("gateway-out: --listen ADDR and --to ADDR are required")}
			}
			var qm sdk.Method
			var err error
			if qm, err = qemuMethod("--qemu-method", qmethod); err != nil {
				return err
			}
			if qpin != "" && qplugin == "" {
				return usageError{fmt.Errorf("--qemu-plugin-sha256 pins a --qemu-plugin; there is none")}
			}
			if qplugin != "" {
				pm, closer, err := qemuPlugin(cmd.Context(), qplugin, qpin, wasm.Config{Trusted: c.trusted, Strict: c.strict})
				if err != nil {
					return err
				}
				defer closer()
				if cmd.Flags().Changed("qemu-method") && qm.Info().Flag != pm.Info().Flag {
					return usageError{fmt.Errorf("--qemu-plugin %s runs %s, but --qemu-method is %s", qplugin, pm.Info().Name, qmethod)}
				}
				qm = pm
			}
			if qch < 1 || qch > 255 {
				return usageError{fmt.Errorf("--qemu-channels %d: want 1..255", qch)}
			}
			var cfg core.ReceiverConfig
			if cmd.Flags().Changed("method") || c.plugin != "" {
				if cfg.Method, err = c.lookup(); err != nil {
					return err
				}
			}
			d, err := channels.NewDialer(to)
			if err != nil {
				return usageError{err}
			}
			ln, err := l.listen(listen)
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "listening on %s\n", channels.Addr(ln.Addr()))
			g := &gatewayOut{dest: d, cfg: core.SenderConfig{Channels: qch, Method: qm, Level: qlevel, Timeout: c.timeout}}
			cfg.Timeout = c.timeout
			cfg.HandshakeTimeout = patience
			// A main-stream chunk can be large (QEMU 10 with legacy zero
			// pages writes 9 bytes per zero page on the main channel).
			cfg.MaxDeviceState = 1<<32 - 1
			stats := func() core.Stats {
				if r := g.r.Load(); r != nil {
					return r.Stats()
				}
				return core.Stats{}
			}
			return runGateway(cmd.Context(), &c, "gateway-out", "fed", to, &g.ramCopy, stats, func(ctx context.Context) (core.Stats, error) {
				return g.run(ctx, ln, cfg)
			})
		},
	}
	c.register(cmd)
	l.register(cmd, true, false)
	cmd.Flags().StringVar(&listen, "listen", "", "address to listen at for the gateway-in (required)")
	cmd.Flags().StringVar(&to, "to", "", "the destination QEMU's -incoming address, tcp:HOST:PORT or unix:PATH (required)")
	cmd.Flags().IntVar(&qch, "qemu-channels", 2, "the destination's multifd-channels")
	cmd.Flags().StringVar(&qmethod, "qemu-method", "none", "the destination's multifd-compression: none, zlib or zstd")
	cmd.Flags().StringVar(&qplugin, "qemu-plugin", "", "compress toward the destination with the plugin FILE, a Wasm module or go-plugin executable of QEMU's zlib or zstd (then --qemu-method, if given, must name the same)")
	cmd.Flags().StringVar(&qpin, "qemu-plugin-sha256", "", "refuse to run a go-plugin --qemu-plugin whose sha256 is not HEX (--plugin-trusted and --plugin-strict apply to a Wasm --qemu-plugin too)")
	cmd.Flags().IntVar(&qlevel, "qemu-level", 0, "compression level toward the destination (0: QEMU's default)")
	cmd.Flags().DurationVar(&patience, "wait", 30*time.Minute, "how long to wait for the gateway-in's channels")
	return cmd
}

// gatewayOut feeds a migration from a gateway-in to a QEMU destination.
type gatewayOut struct {
	dest channels.Dialer
	cfg  core.SenderConfig

	ramCopy
	qs      *core.Sender // to the destination, from the hello on
	stop    func()
	markers atomic.Uint64               // main-stream chunks written, each ending at a marker
	early   []byte                      // the first chunk, when it came before the hello
	qsp     atomic.Pointer[core.Sender] // qs, for the forwarder
	fwd     *forwarder                  // pages to qs as they land
	r       atomic.Pointer[core.Receiver]
}

func (g *gatewayOut) run(ctx context.Context, ln net.Listener, cfg core.ReceiverConfig) (core.Stats, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	cfg.Alloc = g.alloc
	var mu sync.Mutex // device-state blobs come from any link channel
	cfg.OnDeviceState = func(idstr string, instance uint32, blob []byte) error {
		mu.Lock()
		defer mu.Unlock()
		return g.deviceState(ctx, cancel, idstr, instance, blob)
	}
	cfg.OnSync = g.sync
	g.fwd = newForwarder(ctx, g.qsp.Load)
	cfg.OnPages = g.fwd.pages
	r := core.NewReceiver(cfg)
	g.r.Store(r)
	_, err := r.Receive(ctx, ln)
	mu.Lock()
	defer mu.Unlock()
	if ferr := g.fwd.drain(); err == nil && g.qs != nil && ferr != nil {
		err = fmt.Errorf("destination: %w", ferr)
	}
	g.fwd.stop(g.qs, err)
	if g.stop != nil {
		g.stop()
	}
	if err == nil && g.qs == nil {
		err = errors.New("the link carried no migration")
	}
	if err != nil {
		if g.qs != nil {
			if derr := g.qs.Err(); derr != nil {
				err = fmt.Errorf("destination: %w", derr)
			} else {
				err = fmt.Errorf("link: %w", err)
				g.release(err)
			}
			g.qs.Abort(err)
			return r.Stats(), err
		}
		return r.Stats(), fmt.Errorf("link: %w", err)
	}
	if _, err := g.qs.Close(); err != nil {
		return r.Stats(), fmt.Errorf("destination: %w", err)
	}
	return r.Stats(), nil
}

func (g *gatewayOut) deviceState(ctx context.Context, cancel context.CancelCauseFunc, idstr string, instance uint32, blob []byte) error {
	switch idstr {
	case gwHello:
		if g.qs != nil {
			return errors.New("a second hello from the gateway-in")
		}
		var h gatewayHello
		if err := json.Unmarshal(blob, &h); err != nil {
			return fmt.Errorf("hello from the gateway-in: %w", err)
		}
		if h.Dialect != core.Dialect72 && h.Dialect != core.Dialect10 {
			return fmt.Errorf("hello from the gateway-in: dialect %q", h.Dialect)
		}
		cfg := g.cfg
		cfg.UUID, cfg.Dialect = h.UUID, h.Dialect
		qs, err := core.NewQEMUSender(ctx, g.dest, g.mem, cfg)
		if err != nil {
			return fmt.Errorf("destination: %w", err)
		}
		g.qs = qs
		g.qsp.Store(qs)
		g.stop = watch(qs, cancel, "destination")
		if g.early != nil {
			b := g.early
			g.early = nil
			return g.deviceState(ctx, cancel, gwMain, 1, b)
		}
		return nil
	case gwMain, gwMainTail:
		if g.qs == nil {
			// The hello and the first chunk share a sync interval, so
			// they may arrive in either order.
			if idstr != gwMain || instance != 1 || g.early != nil {
				return fmt.Errorf("main stream chunk %d before the hello", instance)
			}
			g.early = bytes.Clone(blob)
			return nil
		}
		if idstr == gwMain {
			if want := g.markers.Load() + 1; uint64(instance) != want {
				return fmt.Errorf("main stream chunk %d, want %d", instance, want)
			}
		}
		if err := g.qs.WriteMain(blob); err != nil {
			return fmt.Errorf("destination: %w", err)
		}
		if idstr == gwMain {
			g.markers.Add(1)
		}
		return nil
	}
	return fmt.Errorf("unexpected device state %q from the gateway-in", idstr)
}

// release makes a destination that waits at a sync marker fail instead
// of hanging: QEMU 7.2 does not wake a main thread waiting for its
// channels' SYNCs when a channel ends, so it would wait forever. A SYNC
// on every channel lets it read on, find the main stream cut short, and
// fail the migration (and exit).
func (g *gatewayOut) release(err error) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		g.qs.Sync()
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		g.qs.Fail(err)
		<-done
	}
}

// sync sends the interval's pages to the destination, and a SYNC on every
// channel when the interval ended at a main-stream marker (the link's
// last sync, from its Close, did not).
func (g *gatewayOut) sync(p *core.SyncPoint) error {
	if g.qs == nil {
		return errors.New("sync point before the hello")
	}
	if err := g.fwd.drain(); err != nil {
		return fmt.Errorf("destination: %w", err)
	}
	if p.N <= g.markers.Load() {
		if err := g.qs.Sync(); err != nil {
			return fmt.Errorf("destination: %w", err)
		}
		return nil
	}
	// The link's last sync point (its Close) ends no marker: no SYNC,
	// but the destination's channels must be done with the pages before
	// the link may write memory again.
	if err := g.qs.Flush(); err != nil {
		return fmt.Errorf("destination: %w", err)
	}
	return nil
}

// ramCopy is a gateway's copy of guest RAM, made from the block list.
type ramCopy struct {
	mem   core.Memory
	total atomic.Int64 // bytes, for the progress line
}

func (r *ramCopy) alloc(blocks []core.BlockInfo) (core.Memory, error) {
	mem, err := core.Alloc(blocks)
	r.mem = mem
	var n int64
	for _, b := range blocks {
		n += int64(b.Size)
	}
	r.total.Store(n)
	return mem, err
}

// runGateway runs a gateway with a progress line (desc) and reports its
// summary (role, addr).
func runGateway(ctx context.Context, c *common, desc, role, addr string, ram *ramCopy, stats func() core.Stats,
	run func(context.Context) (core.Stats, error)) error {
	pctx, cancel := context.WithCancel(ctx)
	wait := c.showProgress(pctx, desc, ram.total.Load, stats)
	st, err := run(ctx)
	cancel()
	wait()
	if err != nil {
		return err
	}
	sum := newSummary(role, st)
	sum.Addr = addr
	c.report(os.Stderr, sum)
	return nil
}

// forwarder hands pages that landed (OnPages, from any channel goroutine)
// to one goroutine that queues them on a Sender as they come, so each
// leg streams instead of waiting for the sync point. At a sync point,
// drain waits until everything handed over is queued.
type forwarder struct {
	ctx   context.Context // the transfer's: done, no one waits on the queue
	items chan fwdItem
	free  sync.Pool // *[]uint64
	done  chan struct{}
	err   error // the first SendPages error; read after drain
	to    func() *core.Sender
}

type fwdItem struct {
	block string
	offs  *[]uint64
	ack   chan struct{} // a drain
}

func newForwarder(ctx context.Context, to func() *core.Sender) *forwarder {
	f := &forwarder{ctx: ctx, items: make(chan fwdItem, 256), done: make(chan struct{}), to: to}
	go f.run()
	return f
}

func (f *forwarder) run() {
	defer close(f.done)
	for it := range f.items {
		if it.ack != nil {
			close(it.ack)
			continue
		}
		if f.err == nil {
			s := f.to()
			if s == nil {
				f.err = errors.New("pages before the transfer's hello")
			} else {
				f.err = s.SendPages(it.block, *it.offs)
			}
		}
		f.free.Put(it.offs)
	}
}

// pages is the OnPages hook.
func (f *forwarder) pages(block string, offs []uint64) {
	b, _ := f.free.Get().(*[]uint64)
	if b == nil {
		b = new([]uint64)
	}
	*b = append((*b)[:0], offs...)
	select {
	case f.items <- fwdItem{block: block, offs: b}:
	case <-f.ctx.Done(): // failing: the pages no longer matter
	}
}

// drain returns once every page handed over is queued on the Sender,
// with the first error.
func (f *forwarder) drain() error {
	ack := make(chan struct{})
	select {
	case f.items <- fwdItem{ack: ack}:
	case <-f.ctx.Done():
		return context.Cause(f.ctx)
	}
	select {
	case <-ack:
		return f.err
	case <-f.ctx.Done():
		return context.Cause(f.ctx)
	}
}

// stop ends the goroutine; no pages may come after. A goroutine stuck
// on a leg that no longer reads is unblocked by failing that leg (s,
// when not nil) after 5 seconds.
func (f *forwarder) stop(s *core.Sender, why error) {
	close(f.items)
	select {
	case <-f.done:
		return
	case <-time.After(5 * time.Second):
	}
	if s != nil {
		if why == nil {
			why = errors.New("the next leg does not read")
		}
		s.Fail(why)
	}
	<-f.done
}
