package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/pagewire/pagewire/core"
	"github.com/pagewire/pagewire/goplugin"
	"github.com/pagewire/pagewire/plugin"
	"github.com/pagewire/pagewire/plugins/auto"
	"github.com/pagewire/pagewire/plugins/builtin"
	"github.com/pagewire/pagewire/sdk"
	"github.com/pagewire/pagewire/wasm"
)

// loadPlugin opens a Wasm module or a go-plugin executable (see package
// plugin); closer releases it. pinSHA (hex) pins the file's sha256;
// noShare keeps a go-plugin from mapping the sender's memory.
func loadPlugin(ctx context.Context, path, pinFlag, pinSHA string, noShare bool, wcfg wasm.Config) (sdk.Method, func(), error) {
	cfg := plugin.Config{Wasm: wcfg, GoPlugin: goplugin.Config{NoSharedMemory: noShare}}
	if pinSHA != "" {
		sum, err := plugin.ParseSHA256(pinSHA)
		if err != nil {
			return nil, nil, usageError{fmt.Errorf("%s: %w", pinFlag, err)}
		}
		cfg.SHA256 = sum
	}
	p, err := plugin.Open(ctx, path, cfg)
	if err != nil {
		return nil, nil, err
	}
	return p.Method, func() { p.Close() }, nil
}

// common holds the flags shared by send, recv and demo.
type common struct {
	channels int
	method   string
	level    int
	json     bool
	timeout  time.Duration
	progress bool
	plugin   string
	trusted  bool
	strict   bool
	pinSHA   string
	noShare  bool

	loaded      sdk.Method // the --plugin method
	closeLoaded func()     // closes loaded
	flags       *pflag.FlagSet
	receiving   bool // registerRecv's: --channels 0 is "the sender's"
}

func (c *common) register(cmd *cobra.Command) {
	f := cmd.Flags()
	c.flags = f
	f.IntVarP(&c.channels, "channels", "n", core.DefaultChannels, "number of multifd channels (1-255)")
	f.StringVarP(&c.method, "method", "m", "nocomp", "compression method (see 'pagewire methods')")
	f.IntVar(&c.level, "level", 0, "compression level (0: the method's default)")
	c.registerCommon(cmd)
	f.BoolVar(&c.noShare, "plugin-no-share", false, "copy every page to a go-plugin --plugin instead of letting it map the sender's memory read-only (it then sees only the pages it compresses)")
}

// registerRecv registers the flags of a receiving end, which follows the
// sender: --channels and --method only insist, and nothing compresses.
func (c *common) registerRecv(cmd *cobra.Command) {
	f := cmd.Flags()
	c.flags, c.receiving = f, true
	f.IntVarP(&c.channels, "channels", "n", 0, "insist on this many multifd channels (default: the sender's)")
	f.StringVarP(&c.method, "method", "m", "", "insist on this compression method (default: the sender's, among 'pagewire methods' or --plugin)")
	c.registerCommon(cmd)
}

func (c *common) registerCommon(cmd *cobra.Command) {
	f := cmd.Flags()
	f.BoolVar(&c.json, "json", false, "print the summary as JSON on stdout")
	f.DurationVar(&c.timeout, "timeout", 0, "fail when a single read or write stalls this long (0: never)")
	f.BoolVar(&c.progress, "progress", true, "show a progress bar when stderr is a terminal")
	f.StringVar(&c.plugin, "plugin", "", "load the compression method from a plugin FILE instead of --method: a Wasm module (sdk/ABI.md) or a go-plugin executable (sdk/goplugin)")
	f.StringVar(&c.pinSHA, "plugin-sha256", "", "refuse to run a --plugin (Wasm module or go-plugin executable) whose sha256 is not HEX")
	f.BoolVar(&c.trusted, "plugin-trusted", false, "run a --plugin that would be checked (WASI, or no pagewire.check import) without per-loop deadline checks: 3-4x faster, but a plugin that loops forever hangs the process (sdk/ABI.md, Tiers)")
	f.BoolVar(&c.strict, "plugin-strict", false, "run any Wasm --plugin with per-loop deadline checks, fast-tier modules too: stoppable anywhere, 2.5-5x slower")
}

func (c *common) lookup() (sdk.Method, error) {
	if (c.channels < 1 && !c.receiving) || c.channels < 0 || c.channels > 255 {
		return nil, usageError{fmt.Errorf("--channels %d: want 1..255", c.channels)}
	}
	if c.plugin != "" {
		if c.loaded == nil {
			m, closer, err := loadPlugin(context.Background(), c.plugin, "--plugin-sha256", c.pinSHA, c.noShare, wasm.Config{Trusted: c.trusted, Strict: c.strict})
			if err != nil {
				return nil, err
			}
			c.loaded, c.closeLoaded = m, closer
		}
		if c.flags != nil && c.flags.Changed("method") {
			if name := c.loaded.Info().Name; name != c.method && !(c.method == "none" && name == "nocomp") {
				return nil, usageError{fmt.Errorf("--plugin %s runs %s, but --method is %s: give one of them", c.plugin, name, c.method)}
			}
		}
		return c.loaded, nil
	}
	m, err := builtin.Methods().Lookup(c.method)
	if err != nil {
		return nil, usageError{fmt.Errorf("--method: %w", err)}
	}
	return m, nil
}

// release frees what lookup loaded.
func (c *common) release() {
	if c.loaded != nil {
		c.closeLoaded()
		c.loaded, c.closeLoaded = nil, nil
	}
}

// showProgress draws a bar for RAM bytes moved until ctx is done, when
// stderr is a terminal. total may change (the receiver learns it late).
func (c *common) showProgress(ctx context.Context, desc string, total func() int64, stats func() core.Stats) (wait func()) {
	return c.showProgressStatus(ctx, desc, total, stats, nil)
}

// showProgressStatus is showProgress with status appended to desc on
// every tick (the link's state).
func (c *common) showProgressStatus(ctx context.Context, desc string, total func() int64, stats func() core.Stats, status func() string) (wait func()) {
	if !c.progress || !term.IsTerminal(int(os.Stderr.Fd())) {
		return func() {}
	}
	bar := progressbar.NewOptions64(-1,
		progressbar.OptionSetWriter(os.Stderr),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionShowBytes(true),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)
	// Start the bar's clock now: its first rate is then bytes over the
	// time since the command started, not over the first render's few
	// microseconds.
	bar.Set64(0)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		max := int64(-1)
		for {
			select {
			case <-ctx.Done():
				// The last figures, not the last tick's, before the bar
				// is cleared.
				last := stats()
				bar.Set64(int64(last.RAMBytes()))
				bar.Finish()
				bar.Exit()
				return
			case <-t.C:
			}
			if n := total(); n > 0 && n != max {
				max = n
				bar.ChangeMax64(n)
			}
			if status != nil {
				bar.Describe(desc + status())
			}
			st := stats()
			bar.Set64(int64(st.RAMBytes()))
		}
	}()
	return func() { <-done }
}

// summary is the machine-readable result of a command.
type summary struct {
	Role     string  `json:"role"`
	Addr     string  `json:"addr,omitempty"`
	Image    string  `json:"image,omitempty"`
	RAMBytes uint64  `json:"ram_bytes"`
	Pages    uint64  `json:"pages"`
	Seconds  float64 `json:"seconds"`
	MBps     float64 `json:"mb_per_s"`
	Ratio    float64 `json:"ratio"`
	Verified *bool   `json:"verified,omitempty"`
	// WireMBps is the rate on the wire (multifd and control bytes), where
	// MBps is of guest RAM, zero pages included.
	WireMBps float64 `json:"wire_mb_per_s"`
	Plugin   string  `json:"plugin,omitempty"` // the --plugin file that ran the method
	// Implementation is the code behind a built-in method: "libzstd
	// 1.5.4", "klauspost/compress v1.20.4".
	Implementation string `json:"implementation,omitempty"`
	// QEMUDialect is a gateway's QEMU migration's dialect; Dialect is
	// then the link's.
	QEMUDialect string `json:"qemu_dialect,omitempty"`
	// A go-plugin sender's packets taken by offset in shared memory and
	// as copies (goplugin.Method.SharedPackets).
	PluginShared *uint64 `json:"plugin_shared_packets,omitempty"`
	PluginCopied *uint64 `json:"plugin_copied_packets,omitempty"`
	// Auto is what the auto method chose (gateway-in's link).
	Auto *auto.Report `json:"auto,omitempty"`
	// SourceStopped is when the source QEMU stopped its guest (gateway-in
	// with --qmp), RFC 3339.
	SourceStopped string `json:"source_stopped,omitempty"`
	// EndToEndDowntimeMs is from the source's STOP to the destination's
	// MIGRATION completed (gateway-out with --qmp, and gateway-in's).
	EndToEndDowntimeMs *int64 `json:"e2e_downtime_ms,omitempty"`
	// Resume is the link's resuming after lost connections (--link-retry).
	Resume *resumeSummary `json:"link_resume,omitempty"`
	core.Stats
}

func newSummary(role string, st core.Stats) summary {
	return summary{
		Role:     role,
		RAMBytes: st.RAMBytes(),
		Pages:    st.NormalPages + st.ZeroPages,
		Seconds:  st.Elapsed.Seconds(),
		MBps:     st.MBps(),
		Ratio:    st.Ratio(),
		WireMBps: wireRate(st),
		Stats:    st,
	}
}

// sharedPackets is what the loaded go-plugin took from shared memory and
// as copies, nil for any other method.
func (c *common) sharedPackets() (shared, copied *uint64) {
	if gp, ok := c.loaded.(*goplugin.Method); ok {
		s, c := gp.SharedPackets()
		return &s, &c
	}
	return nil, nil
}

// named fills in what ran the method: the --plugin file, or the code
// behind a built-in method.
func (c *common) named(s summary) summary {
	s.Plugin = c.plugin
	if m, err := builtin.Methods().Lookup(s.Method); err == nil && s.Plugin == "" {
		if i, ok := m.(interface{ Implementation() string }); ok {
			s.Implementation = i.Implementation()
		}
	}
	return s
}

func (c *common) report(w io.Writer, s summary) {
	s = c.named(s)
	if c.json {
		c.printJSON(s)
		return
	}
	method := s.Method
	if s.Plugin != "" {
		method += " (plugin " + s.Plugin + ")"
	}
	fmt.Fprintf(w, "%s: %s of RAM in %.2fs (%.0f MB/s of RAM, %.0f MB/s on the wire): %d pages, %d zero, %s on the wire + %s control (ratio %.2f), %d channels, %s, %s\n",
		s.Role, bytesText(s.RAMBytes), s.Seconds, s.MBps, s.WireMBps, s.Pages, s.ZeroPages,
		bytesText(s.WireBytes), bytesText(s.ControlBytes), s.Ratio, len(s.Channels), method, dialectText(s))
	if s.Auto != nil {
		fmt.Fprintf(w, "%s: %s\n", s.Role, s.Auto)
	}
	if r := s.Resume; r != nil && (r.Reconnects > 0 || r.Refused > 0) {
		fmt.Fprintf(w, "%s: the link resumed %d connection(s) after %.1fs down in all, %s sent again (%.2f%% of the link's bytes)",
			s.Role, r.Reconnects, r.OutageSeconds, bytesText(uint64(r.ResentBytes)), 100*float64(r.ResentBytes)/float64(max(1, s.WireBytes+s.ControlBytes)))
		if r.Refused > 0 {
			fmt.Fprintf(w, "; refused %d connection(s) that claimed a session", r.Refused)
		}
		fmt.Fprintln(w)
	}
	if s.EndToEndDowntimeMs != nil {
		fmt.Fprintf(w, "%s: end-to-end downtime %d ms (the source's STOP to the destination's completion)\n", s.Role, *s.EndToEndDowntimeMs)
	}
	if s.PluginShared != nil && s.PluginCopied != nil {
		fmt.Fprintf(w, "%s: the plugin took %d packets from shared memory and %d as copies\n", s.Role, *s.PluginShared, *s.PluginCopied)
	}
}

func dialectText(s summary) string {
	if s.QEMUDialect != "" {
		return fmt.Sprintf("QEMU dialect %s (the link's %s)", s.QEMUDialect, s.Dialect)
	}
	return "dialect " + s.Dialect
}

// wireRate is MB/s on the wire (multifd and control bytes).
func wireRate(st core.Stats) float64 {
	if st.Elapsed <= 0 {
		return 0
	}
	return float64(st.WireBytes+st.ControlBytes) / st.Elapsed.Seconds() / 1e6
}

func bytesText(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// parseSize reads sizes such as 4096, 64K, 256M, 1G (powers of 1024).
func parseSize(s string) (int64, error) {
	t := strings.TrimSuffix(strings.ToUpper(strings.TrimSpace(s)), "IB")
	t = strings.TrimSuffix(t, "B")
	mult := int64(1)
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'K':
			mult, t = 1<<10, t[:n-1]
		case 'M':
			mult, t = 1<<20, t[:n-1]
		case 'G':
			mult, t = 1<<30, t[:n-1]
		case 'T':
			mult, t = 1<<40, t[:n-1]
		}
	}
	v, err := strconv.ParseInt(t, 10, 64)
	if err != nil || v < 0 || v > (1<<62)/mult {
		return 0, fmt.Errorf("bad size %q: want bytes, or a number with K, M, G or T", s)
	}
	return v * mult, nil
}

func (c *common) printJSON(v any) {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
