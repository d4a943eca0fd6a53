package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pagewire/pagewire/channels"
	"github.com/pagewire/pagewire/core"
	"github.com/pagewire/pagewire/internal/qmp"
	"github.com/pagewire/pagewire/plugins/auto"
	"github.com/pagewire/pagewire/qemu"
	"github.com/pagewire/pagewire/qemu/gateway"
	"github.com/pagewire/pagewire/sdk"
	"github.com/pagewire/pagewire/wasm"
)

// qemuMethod looks up a QEMU multifd-compression name.
func qemuMethod(flag, name string) (sdk.Method, error) {
	if name == "auto" {
		return nil, nil // the first packet with pages tells
	}
	m, err := qemu.Methods().Lookup(name)
	if err != nil {
		return nil, usageError{fmt.Errorf("%s %s: %w", flag, name, err)}
	}
	if qemu.CheckMethod(m) != nil {
		return nil, usageError{fmt.Errorf("%s %s: QEMU's methods are none, zlib and zstd", flag, name)}
	}
	return m, nil
}

// qemuPlugin loads a plugin whose method is one of QEMU's compressed
// ones, for a QEMU leg.
func qemuPlugin(ctx context.Context, path, pinSHA string, wcfg wasm.Config) (sdk.Method, func(), error) {
	m, closer, err := loadPlugin(ctx, path, "--qemu-plugin-sha256", pinSHA, false, wcfg)
	if err != nil {
		return nil, nil, err
	}
	if info := m.Info(); !qemu.Compressed(info.Flag) {
		closer()
		return nil, nil, usageError{fmt.Errorf("--qemu-plugin %s: method %s (flag %#x) is not QEMU's zlib (0x2) or zstd (0x4)", path, info.Name, info.Flag)}
	}
	return m, closer, nil
}

// sourceReadBuffer is the receive buffer of gateway-in's connections from
// the source QEMU (channels.ListenerReadBuffer).
const sourceReadBuffer = 256 << 10

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
		// deltaCache is --delta-cache
		deltaCache string
		qmpSock    string
	)
	cmd := &cobra.Command{
		Use:   "gateway-in --listen ADDR --to ADDR [flags]",
		Short: "Take a live migration from a QEMU source and forward it to a gateway-out",
		Long: `Accept a QEMU live migration with the multifd capability at --listen (as
'pagewire qemu recv' does: --qemu-channels and --qemu-method must be the
source's multifd-channels and multifd-compression), and forward the whole
migration over pagewire's own channels to 'pagewire qemu gateway-out' at
--to, with the link's own --channels and --method (or --plugin).

The link's method is auto unless --method or --plugin says otherwise:
every 100 ms it sends pages raw, with lz4, or with zstd at level 1, 3 or
7, whichever moves the guest's pages soonest given the link's rate it
measures (from how long its writes block) and what each costs and
saves on these pages (from small probes). The summary says what it
chose; docs/auto.md has the controller.

Pages go on the link as they arrive; at every sync point of the source
the gateway sends the main stream up to the marker and then a Sync, so
the destination QEMU sees every page before the marker that orders it. The link runs mutual TLS 1.3 (--tls-cert, --tls-key, --tls-ca; or
--insecure) and may be capped with --max-bandwidth.

A link connection that is reset, closed or silent for 10 s is not the
end: gateway-in connects again (with the same certificate and the
session's token) and both gateways go on where they were, for up to
--link-retry per outage (3m; 0: off, then on gateway-out too); the
QEMUs see a slow link. Any other failure on any leg, or a link down
past --link-retry, fails the migration: the source sees its
connections close. docs/resume.md has the details.

--delta-cache SIZE keeps the last version of up to SIZE bytes of pages
sent on the link (as QEMU's xbzrle-cache-size), and sends a page that
comes again as its differences from that version when they are small: a
guest that changes a few bytes of many pages needs a fraction of the
link. gateway-out applies them to its copy of the guest's RAM; one that
predates delta pages refuses the link at its start.`,
		Example: `  pagewire qemu gateway-in --listen tcp:127.0.0.1:4444 --to tcp:gw-out.example:7000 \
      --qemu-channels 4 --qemu-method none --channels 8 \
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
			var cache int64
			if deltaCache != "" {
				if cache, err = parseSize(deltaCache); err != nil || cache < 0 {
					return usageError{fmt.Errorf("--delta-cache %q: want a size such as 256M", deltaCache)}
				}
			}
			qm, err := qemuMethod("--qemu-method", qmethod)
			if err != nil {
				return err
			}
			if qch < 1 || qch > 255 {
				return usageError{fmt.Errorf("--qemu-channels %d: want 1..255", qch)}
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
			// What the source has written but gateway-in has not taken
			// counts as sent for QEMU: keep it small (channels.NotSentLowat
			// does the same on the link).
			if err := channels.ListenerReadBuffer(ln, sourceReadBuffer); err != nil {
				ln.Close()
				return err
			}
			fmt.Fprintf(os.Stderr, "listening on %s\n", channels.Addr(ln.Addr()))
			g := &gateway.In{
				Source:     gateway.SourceConfig{Channels: qch, Method: qm, Dialect: dl, Timeout: c.timeout, HandshakeTimeout: patience},
				Link:       d,
				LinkConfig: core.SenderConfig{Channels: c.channels, Method: m, Level: c.level, Timeout: c.timeout, DeltaCache: cache},
			}
			var q *qmp.Client
			if qmpSock != "" {
				if q, err = watchQMP(qmpSock, "the source's"); err != nil {
					ln.Close()
					return err
				}
				defer q.Close()
				// Asked as the stream ends, before its tail goes on: no
				// waiting there (a guest paused before the migration
				// has no STOP to come, and the tail would wait for it).
				g.Stopped = func() time.Time { return lastStop(q, 0) }
			}
			return runGateway(cmd.Context(), &c, &l, "gateway-in", "forwarded", to, g.RAMBytes, g.Stats, g.QEMUDialect, func(ctx context.Context) (core.Stats, error) {
				return g.Run(ctx, ln)
			}, func(sum *summary) {
				if a, ok := m.(*auto.Method); ok {
					r := a.Report()
					sum.Auto = &r
				}
				if q != nil {
					if t := lastStop(q, stopWait); !t.IsZero() {
						sum.SourceStopped = t.UTC().Format(time.RFC3339Nano)
					}
				}
			})
		},
	}
	c.register(cmd)
	// The link's method adapts unless told: gateway-in owns the link.
	cmd.Flags().Lookup("method").DefValue = "auto"
	cmd.Flags().Set("method", "auto")
	cmd.Flags().Lookup("method").Changed = false
	l.register(cmd, true, true)
	cmd.Flags().StringVar(&listen, "listen", "", "address the QEMU source migrates to, tcp:HOST:PORT or unix:PATH (required)")
	cmd.Flags().StringVar(&to, "to", "", "address of the gateway-out (required)")
	cmd.Flags().StringVar(&qmpSock, "qmp", "", "a QMP unix socket of the source QEMU, a monitor of the gateway's own (-qmp unix:PATH,server=on,wait=off): gateway-in tells gateway-out when the source stopped the guest, for the end-to-end downtime")
	cmd.Flags().StringVar(&deltaCache, "delta-cache", "", "keep up to SIZE bytes of pages sent on the link (suffixes K, M, G) and send a page that comes again as its differences (0 or empty: off)")
	cmd.Flags().IntVar(&qch, "qemu-channels", 2, "the source's multifd-channels")
	cmd.Flags().StringVar(&qmethod, "qemu-method", "auto", "the source's multifd-compression: none, zlib, zstd, or auto (the first packet with pages tells)")
	cmd.Flags().StringVar(&dialect, "dialect", "auto", "the source's multifd dialect: 7.2, 10.0, or auto (the stream tells)")
	cmd.Flags().DurationVar(&patience, "wait", 30*time.Minute, "how long to wait for the source QEMU's channels")
	return cmd
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
		qmpSock  string
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
--tls-ca; or --insecure). A link connection that is reset or lost is
taken back when gateway-in returns with the same certificate and the
session's token, within --link-retry (3m; 0: off, then on gateway-in
too); others that claim a session are refused and reported. Any other
failure on any leg, or a link down past --link-retry, fails the
migration: the destination sees its connections close before the end
of the stream.

With --qmp on both gateways (each a QMP monitor of its own QEMU), the
summary gives the migration's end-to-end downtime: from the source's
STOP event, which gateway-in sends over the link, to the destination's
MIGRATION completed event. Both are QEMU's timestamps, so the two hosts'
clocks must agree (NTP); on one host they do.`,
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
			if qmethod == "auto" {
				return usageError{fmt.Errorf("--qemu-method auto: a destination cannot tell; give its multifd-compression: none, zlib or zstd")}
			}
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
			var lm sdk.Method
			if cmd.Flags().Changed("method") || c.plugin != "" {
				if lm, err = c.lookup(); err != nil {
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
			g := &gateway.Out{
				Link:       gateway.LinkConfig{Method: lm, Timeout: c.timeout, HandshakeTimeout: patience},
				Dest:       d,
				DestConfig: core.SenderConfig{Channels: qch, Method: qm, Level: qlevel, Timeout: c.timeout},
			}
			var q *qmp.Client
			if qmpSock != "" {
				if q, err = watchQMP(qmpSock, "the destination's"); err != nil {
					ln.Close()
					return err
				}
				defer q.Close()
			}
			return runGateway(cmd.Context(), &c, &l, "gateway-out", "fed", to, g.RAMBytes, g.Stats, g.QEMUDialect, func(ctx context.Context) (core.Stats, error) {
				return g.Run(ctx, ln)
			}, func(sum *summary) {
				if q != nil {
					sum.EndToEndDowntimeMs = endToEnd(q, g.SourceStopped())
				}
			})
		},
	}
	c.register(cmd)
	l.register(cmd, true, false)
	cmd.Flags().StringVar(&listen, "listen", "", "address to listen at for the gateway-in (required)")
	cmd.Flags().StringVar(&to, "to", "", "the destination QEMU's -incoming address, tcp:HOST:PORT or unix:PATH (required)")
	cmd.Flags().StringVar(&qmpSock, "qmp", "", "a QMP unix socket of the destination QEMU, a monitor of the gateway's own (-qmp unix:PATH,server=on,wait=off; its 'events' migration capability on): with gateway-in's --qmp, the summary gives the end-to-end downtime, from the source's STOP to the destination's MIGRATION completed event")
	cmd.Flags().IntVar(&qch, "qemu-channels", 2, "the destination's multifd-channels")
	cmd.Flags().StringVar(&qmethod, "qemu-method", "none", "the destination's multifd-compression: none, zlib or zstd")
	cmd.Flags().StringVar(&qplugin, "qemu-plugin", "", "compress toward the destination with the plugin FILE, a Wasm module or go-plugin executable of QEMU's zlib or zstd (then --qemu-method, if given, must name the same)")
	cmd.Flags().StringVar(&qpin, "qemu-plugin-sha256", "", "refuse to run a --qemu-plugin whose sha256 is not HEX (--plugin-trusted and --plugin-strict apply to a Wasm --qemu-plugin too)")
	cmd.Flags().IntVar(&qlevel, "qemu-level", 0, "compression level toward the destination (0: QEMU's default)")
	cmd.Flags().DurationVar(&patience, "wait", 30*time.Minute, "how long to wait for the gateway-in's channels")
	return cmd
}

// runGateway runs a gateway with a progress line (desc) and reports its
// summary (role, addr).
func runGateway(ctx context.Context, c *common, l *link, desc, role, addr string, total func() int64, stats func() core.Stats,
	qemuDialect func() core.Dialect, run func(context.Context) (core.Stats, error), more func(*summary)) error {
	pctx, cancel := context.WithCancel(ctx)
	wait := c.showProgressStatus(pctx, desc, total, stats, l.status)
	st, err := run(ctx)
	cancel()
	wait()
	if err != nil {
		return linkError(err)
	}
	sum := newSummary(role, st)
	sum.Addr = addr
	sum.QEMUDialect = string(qemuDialect())
	l.summarize(&sum)
	more(&sum)
	c.report(os.Stderr, sum)
	return nil
}

// watchQMP connects to a gateway's own QMP monitor of a QEMU (whose:
// "the source's") and keeps its events from now on.
func watchQMP(sock, whose string) (*qmp.Client, error) {
	sock = strings.TrimPrefix(sock, "unix:")
	q, err := qmp.Dial(sock, 30*time.Second)
	if err != nil {
		return nil, fmt.Errorf("--qmp: %s QEMU's monitor: %w (give a -qmp unix:PATH,server=on,wait=off of the gateway's own)", whose, err)
	}
	q.Watch()
	return q, nil
}

// lastStop returns the time of the source's last STOP event, waiting up
// to wait for one.
func lastStop(q *qmp.Client, wait time.Duration) time.Time {
	if _, ok := q.WaitEvent(func(e qmp.Event) bool { return e.Name == "STOP" }, wait); !ok {
		return time.Time{}
	}
	var t time.Time
	for _, e := range q.Events() {
		if e.Name == "STOP" {
			t = e.Time()
		}
	}
	return t
}

// stopWait bounds the wait for the source's STOP event for the summary,
// and completedWait for the destination's MIGRATION completed.
const (
	stopWait      = 2 * time.Second
	completedWait = 30 * time.Second
)

// endToEnd returns the end-to-end downtime in milliseconds: from the
// source's STOP (stopped, from gateway-in) to the destination's
// MIGRATION completed event; nil, with a note on stderr, if either is
// missing.
func endToEnd(q *qmp.Client, stopped time.Time) *int64 {
	if stopped.IsZero() {
		fmt.Fprintln(os.Stderr, "gateway-out: no end-to-end downtime: gateway-in did not say when the source stopped (give it --qmp)")
		return nil
	}
	e, ok := q.WaitEvent(qmp.MigrationStatus("completed"), completedWait)
	if !ok {
		fmt.Fprintf(os.Stderr, "gateway-out: no end-to-end downtime: no MIGRATION completed event from the destination within %v (is its 'events' migration capability on?)\n", completedWait)
		return nil
	}
	ms := e.Time().Sub(stopped).Milliseconds()
	return &ms
}
