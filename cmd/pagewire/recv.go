package main

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"

	"github.com/spf13/cobra"

	"github.com/pagewire/pagewire/channels"
	"github.com/pagewire/pagewire/core"
	"github.com/pagewire/pagewire/plugins/builtin"
)

func recvCmd() *cobra.Command {
	var (
		c      common
		l      link
		listen string
		out    string
	)
	cmd := &cobra.Command{
		Use:   "recv --listen ADDR --out IMAGE [flags]",
		Short: "Receive one memory image from 'pagewire send'",
		Long: `Listen at ADDR for one transfer from 'pagewire send' and write the image to
IMAGE. The image is written to IMAGE.partial and renamed when every page
has landed; a failed transfer leaves no IMAGE behind.

--channels and --method, when given, are what the sender must use;
otherwise the receiver follows the sender.`,
		Example: `  pagewire recv --listen tcp:127.0.0.1:7000 --out guest.img`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			defer c.release()
			if listen == "" || out == "" {
				return usageError{fmt.Errorf("recv: --listen ADDR and --out IMAGE are required")}
			}
			cfg := core.ReceiverConfig{Methods: builtin.Methods(), Level: c.level, Timeout: c.timeout}
			if cmd.Flags().Changed("channels") {
				if _, err := c.lookup(); err != nil {
					return err
				}
				cfg.Channels = c.channels
			}
			if cmd.Flags().Changed("method") || c.plugin != "" {
				m, err := c.lookup()
				if err != nil {
					return err
				}
				cfg.Method = m
			}
			var (
				image *core.Image
				total atomic.Int64
			)
			partial := out + ".partial"
			cfg.Alloc = func(blocks []core.BlockInfo) (core.Memory, error) {
				if len(blocks) != 1 {
					return nil, fmt.Errorf("the sender has %d RAM blocks; recv writes one image", len(blocks))
				}
				im, err := core.CreateImage(partial, blocks[0].Name, int64(blocks[0].Size))
				if err != nil {
					return nil, err
				}
				image = im
				total.Store(int64(blocks[0].Size))
				return im, nil
			}
			ln, err := l.listen(listen)
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "listening on %s\n", channels.Addr(ln.Addr()))
			r := core.NewReceiver(cfg)
			ctx := cmd.Context()
			pctx, cancel := context.WithCancel(ctx)
			wait := c.showProgress(pctx, "recv", total.Load, r.Stats)
			_, err = r.Receive(ctx, ln)
			cancel()
			wait()
			if image != nil {
				if cerr := image.Close(); err == nil {
					err = cerr
				}
				if err != nil {
					os.Remove(partial)
				} else if err = os.Rename(partial, out); err != nil {
					os.Remove(partial)
				}
			}
			if err != nil {
				return err
			}
			sum := newSummary("received", r.Stats())
			sum.Addr, sum.Image = listen, out
			c.report(os.Stderr, sum)
			return nil
		},
	}
	c.register(cmd)
	l.register(cmd, false, false)
	cmd.Flags().StringVar(&listen, "listen", "", "address to listen at, tcp:HOST:PORT, unix:PATH or vmbus:PATH (required)")
	cmd.Flags().StringVar(&out, "out", "", "file to write the received image to (required)")
	return cmd
}
