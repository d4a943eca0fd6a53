package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/spf13/cobra"

	"github.com/pagewire/pagewire/channels"
	"github.com/pagewire/pagewire/core"
	"github.com/pagewire/pagewire/qemu"
	"github.com/pagewire/pagewire/sdk"
)

func qemuCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "qemu",
		Short: "Talk to real QEMU migrations",
	}
	cmd.AddCommand(qemuRecvCmd(), gatewayInCmd(), gatewayOutCmd())
	return cmd
}

// blockFile names the file a RAM block is written to: QEMU's block names
// may contain slashes ("/rom@etc/acpi/tables").
func blockFile(name string) string {
	return strings.TrimLeft(strings.ReplaceAll(name, "/", "_"), "_") + ".raw"
}

func qemuRecvCmd() *cobra.Command {
	var (
		c       common
		listen  string
		out     string
		dialect string
	)
	cmd := &cobra.Command{
		Use:   "recv --listen ADDR --out DIR [flags]",
		Short: "Receive a live migration from a QEMU source with the multifd capability",
		Long: `Accept a QEMU live migration with the multifd capability at ADDR: the
main channel and the multifd channels, told apart by their first four
bytes. Both multifd dialects are read: QEMU 7.2's (zero pages on the main
channel, a SYNC at every end of section) and QEMU 10.0's (zero pages in
packets, MULTIFD_FLUSH sync points); the stream tells which, unless
--dialect insists. Each RAM block is written to DIR/BLOCKNAME.raw ('/' in a block name
becomes '_') and the main stream's bytes to DIR/main.stream; the device
state after the RAM is kept there, not parsed.

The source's multifd-channels and multifd-compression must be given with
--channels and --method, as for a QEMU destination: nothing on the wire
says them. Point the source at ADDR with QMP 'migrate'. The command exits
0 once the migration has completed, and removes its files if it fails.`,
		Example: `  pagewire qemu recv --listen tcp:127.0.0.1:4444 --out ram/ --channels 4 --method zstd
  # on the source's QMP: migrate-set-capabilities multifd=on,
  # migrate-set-parameters multifd-channels=4 multifd-compression=zstd,
  # migrate uri=tcp:127.0.0.1:4444`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if listen == "" || out == "" {
				return usageError{fmt.Errorf("qemu recv: --listen ADDR and --out DIR are required")}
			}
			var m sdk.Method // nil: the first packet with pages tells
			if c.method != "auto" || c.plugin != "" {
				var err error
				if m, err = c.lookup(); err != nil {
					return err
				}
				if err := qemu.CheckMethod(m); err != nil {
					return usageError{fmt.Errorf("--method: %w", err)}
				}
			}
			if err := os.MkdirAll(out, 0o755); err != nil {
				return err
			}
			d, err := core.ParseDialect(dialect)
			if err != nil {
				return usageError{fmt.Errorf("--dialect: %w", err)}
			}
			return runQEMURecv(cmd.Context(), &c, listen, out, qemu.Config{Channels: c.channels, Method: m, Dialect: d, Timeout: c.timeout})
		},
	}
	c.register(cmd)
	cmd.Flags().Lookup("channels").DefValue = "2"
	cmd.Flags().Set("channels", "2")
	cmd.Flags().Lookup("method").Usage = "the source's multifd-compression: none, zlib, zstd, or auto (the first packet with pages tells)"
	cmd.Flags().Lookup("method").DefValue = "auto"
	cmd.Flags().Set("method", "auto")
	cmd.Flags().StringVar(&listen, "listen", "", "address to listen at, tcp:HOST:PORT or unix:PATH (required)")
	cmd.Flags().StringVar(&out, "out", "", "directory to write the RAM blocks and main.stream to (required)")
	cmd.Flags().StringVar(&dialect, "dialect", "auto", "the source's multifd dialect: 7.2, 10.0, or auto (the stream tells)")
	return cmd
}

func runQEMURecv(ctx context.Context, c *common, listen, out string, cfg qemu.Config) (err error) {
	var (
		mu     sync.Mutex
		images []*core.Image
		files  = map[string]string{} // partial -> final
		total  atomic.Int64
	)
	main, err := createPartial(filepath.Join(out, "main.stream.partial"))
	if err != nil {
		return err
	}
	files[main.Name()] = filepath.Join(out, "main.stream")
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, im := range images {
			if cerr := im.Close(); err == nil {
				err = cerr
			}
		}
		if cerr := main.Close(); err == nil {
			err = cerr
		}
		for partial, final := range files {
			if err == nil {
				err = os.Rename(partial, final)
			}
			if err != nil {
				os.Remove(partial)
			}
		}
	}()
	cfg.Main = main
	cfg.Alloc = func(blocks []core.BlockInfo) (core.Memory, error) {
		mu.Lock()
		defer mu.Unlock()
		var bs core.Blocks
		seen := map[string]string{}
		for _, b := range blocks {
			name := blockFile(b.Name)
			if other, dup := seen[name]; dup {
				return nil, fmt.Errorf("blocks %q and %q would both be written to %s", other, b.Name, name)
			}
			seen[name] = b.Name
			final := filepath.Join(out, name)
			if err := removeStale(final + ".partial"); err != nil {
				return nil, err
			}
			im, err := core.CreateImage(final+".partial", b.Name, int64(b.Size)) // reserves the space: a full disk fails here
			if err != nil {
				return nil, err // CreateImage removed what it made
			}
			images = append(images, im)
			files[final+".partial"] = final
			bs = append(bs, im.Blocks()...)
			total.Add(int64(b.Size))
		}
		return core.FreshZeros(bs), nil // new files, reading as zeros
	}
	ln, err := channels.Listen(listen)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "listening on %s\n", channels.Addr(ln.Addr()))
	method := "auto (the first packet with pages tells)"
	if cfg.Method != nil {
		method = cfg.Method.Info().Name
	}
	fmt.Fprintf(os.Stderr, "expecting a QEMU migration with %d multifd channels, compression %s\n", cfg.Channels, method)
	q := qemu.NewReceiver(cfg)
	pctx, cancel := context.WithCancel(ctx)
	wait := c.showProgress(pctx, "qemu", total.Load, func() core.Stats { return q.Stats().Stats })
	_, err = q.Receive(ctx, ln)
	cancel()
	wait()
	if err != nil {
		return err
	}
	st := q.Stats()
	if c.json {
		sum := newSummary("qemu-received", st.Stats)
		c.printJSON(struct {
			summary
			Machine       string `json:"machine"`
			Dialect       string `json:"dialect"`
			MainBytes     int64  `json:"main_bytes"`
			MainZeroPages uint64 `json:"main_zero_pages"`
			SyncPoints    uint64 `json:"sync_points"`
			DeviceBytes   int64  `json:"device_bytes"`
			Dir           string `json:"dir"`
		}{c.named(sum), st.Machine, st.Dialect, st.MainBytes, st.MainZeroPages, st.SyncPoints, st.DeviceBytes, out})
		return nil
	}
	sum := newSummary("qemu-received", st.Stats)
	c.report(os.Stderr, sum)
	per := make([]string, len(st.Channels))
	for i, ch := range st.Channels {
		per[i] = fmt.Sprintf("%d:%d", ch.Channel, ch.NormalPages)
	}
	fmt.Fprintf(os.Stderr, "QEMU %s dialect, machine %s: %d zero pages and %s on the main channel, %d sync points, pages per channel %s, %s of device state kept in %s\n",
		st.Dialect, st.Machine, st.MainZeroPages, bytesText(uint64(st.MainBytes)), st.SyncPoints, strings.Join(per, " "),
		bytesText(uint64(st.DeviceBytes)), filepath.Join(out, "main.stream"))
	return nil
}
