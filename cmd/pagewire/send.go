package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/spf13/cobra"

	"github.com/pagewire/pagewire/core"
)

func sendCmd() *cobra.Command {
	var (
		c       common
		l       link
		to      string
		block   string
		dialect string
	)
	cmd := &cobra.Command{
		Use:   "send --to ADDR [flags] IMAGE",
		Short: "Send a memory image to a pagewire receiver",
		Long: `Send IMAGE, one RAM block, to 'pagewire recv' listening at ADDR. The
image's size travels with it, so the receiver sizes its output. An IMAGE
ending in .zst is decompressed into memory first (the corpus images).`,
		Example: `  pagewire send --to tcp:127.0.0.1:7000 --channels 4 guest.img`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			defer c.release()
			if to == "" {
				return usageError{fmt.Errorf("send: --to ADDR is required")}
			}
			m, err := c.lookup()
			if err != nil {
				return err
			}
			d, err := l.dial(to)
			if err != nil {
				return linkError(err)
			}
			mem, closeImage, err := loadImage(args[0], block)
			if err != nil {
				return err
			}
			defer closeImage()
			size := int64(len(mem.Blocks()[0].Data))
			if size%core.DefaultPageSize != 0 {
				return fmt.Errorf("%s: %d bytes is not a whole number of %d-byte pages", args[0], size, core.DefaultPageSize)
			}
			dl, err := core.ParseDialect(dialect)
			if err != nil {
				return usageError{fmt.Errorf("--dialect: %w", err)}
			}
			ctx := cmd.Context()
			s, err := core.NewSender(ctx, d, mem, core.SenderConfig{
				Channels: c.channels, Method: m, Level: c.level, Timeout: c.timeout, Dialect: dl,
			})
			if err != nil {
				return linkError(err)
			}
			pctx, cancel := context.WithCancel(ctx)
			wait := c.showProgressStatus(pctx, "send", func() int64 { return size }, s.Stats, l.status)
			err = s.SendBlock(block)
			st, cerr := s.Close()
			cancel()
			wait()
			if cerr != nil {
				err = cerr // the transfer's error, with the peer's reason when it gave one
			}
			if err != nil {
				return linkError(err)
			}
			sum := newSummary("sent", st)
			sum.Addr, sum.Image = to, args[0]
			l.summarize(&sum)
			sum.PluginShared, sum.PluginCopied = c.sharedPackets()
			c.report(os.Stderr, sum)
			return nil
		},
	}
	c.register(cmd)
	l.register(cmd, false, true)
	cmd.Flags().StringVar(&to, "to", "", "receiver address, tcp:HOST:PORT, unix:PATH or vmbus:PATH (required)")
	cmd.Flags().StringVar(&block, "block", "pc.ram", "name of the RAM block the image is")
	cmd.Flags().StringVar(&dialect, "dialect", "10.0", "multifd dialect: 10.0 (zero pages as offsets in packets) or 7.2 (zero pages on the control channel)")
	return cmd
}

// loadImage maps a raw image, or decompresses a .zst one into memory.
func loadImage(path, block string) (core.Memory, func(), error) {
	if !strings.HasSuffix(path, ".zst") {
		im, err := core.OpenImage(path, block)
		if err != nil {
			return nil, nil, err
		}
		return im, func() { im.Close() }, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	dec, err := zstd.NewReader(f, zstd.WithDecoderMaxWindow(1<<30))
	if err != nil {
		return nil, nil, err
	}
	defer dec.Close()
	// Into shared memory, as a raw image's file mapping is: a go-plugin
	// method then maps the pages instead of having them copied to it.
	im, err := core.ReadImage(dec, block)
	if err != nil {
		return nil, nil, fmt.Errorf("decompress %s: %w", path, err)
	}
	return im, func() { im.Close() }, nil
}
