package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"

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
has landed; a failed transfer leaves no IMAGE and no IMAGE.partial behind.
The space for the whole image is reserved when the sender arrives, so a
full disk refuses the transfer at its start. A file or symbolic link left
at IMAGE.partial is removed (a link's target is never written).

--channels and --method, when given, are what the sender must use;
otherwise the receiver follows the sender.`,
		Example: `  pagewire recv --listen tcp:127.0.0.1:7000 --out guest.img`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			defer c.release()
			if listen == "" || out == "" {
				return usageError{fmt.Errorf("recv: --listen ADDR and --out IMAGE are required")}
			}
			cfg := core.ReceiverConfig{Methods: builtin.Methods(), Timeout: c.timeout}
			if cmd.Flags().Changed("channels") {
				if c.channels < 1 || c.channels > 255 {
					return usageError{fmt.Errorf("--channels %d: want 1..255", c.channels)}
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
				image      *core.Image
				total      atomic.Int64
				unregister = func() {}
			)
			defer func() { unregister() }()
			partial := out + ".partial"
			cfg.Alloc = func(blocks []core.BlockInfo) (core.Memory, error) {
				if len(blocks) != 1 {
					return nil, fmt.Errorf("the sender has %d RAM blocks; recv writes one image", len(blocks))
				}
				if err := removeStale(partial); err != nil {
					return nil, err
				}
				im, err := core.CreateImage(partial, blocks[0].Name, int64(blocks[0].Size))
				if err != nil {
					return nil, err // CreateImage removed what it made
				}
				// A signal that ends the process mid-transfer leaves no
				// .partial behind.
				unregister = atExit(func() { os.Remove(partial) })
				image = im
				total.Store(int64(blocks[0].Size))
				return im, nil
			}
			if err := checkOut(out); err != nil {
				return err
			}
			// The image is put in place before the sender is told that
			// every page landed: a rename that fails fails the transfer
			// on both ends.
			cfg.Finish = func(core.Memory) error {
				im := image
				image = nil
				if err := im.Close(); err != nil {
					return fmt.Errorf("%s: %w", partial, err)
				}
				if err := os.Rename(partial, out); err != nil {
					return err
				}
				unregister() // in place: nothing to remove any more
				return nil
			}
			ln, err := l.listen(listen)
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "listening on %s\n", channels.Addr(ln.Addr()))
			r := core.NewReceiver(cfg)
			ctx := cmd.Context()
			pctx, cancel := context.WithCancel(ctx)
			wait := c.showProgressStatus(pctx, "recv", total.Load, r.Stats, l.status)
			_, err = r.Receive(ctx, ln)
			cancel()
			wait()
			if image != nil { // the transfer failed before Finish
				image.Close()
			}
			if err != nil {
				os.Remove(partial)
				return linkError(err)
			}
			sum := newSummary("received", r.Stats())
			sum.Addr, sum.Image = listen, out
			l.summarize(&sum)
			c.report(os.Stderr, sum)
			return nil
		},
	}
	c.registerRecv(cmd)
	l.register(cmd, false, false)
	cmd.Flags().StringVar(&listen, "listen", "", "address to listen at, tcp:HOST:PORT, unix:PATH or vmbus:PATH (required)")
	cmd.Flags().StringVar(&out, "out", "", "file to write the received image to (required)")
	return cmd
}

// checkOut refuses, before any sender arrives, an --out that cannot be
// written: a directory, or a path in a missing or unwritable directory.
func checkOut(out string) error {
	if fi, err := os.Stat(out); err == nil && fi.IsDir() {
		return usageError{fmt.Errorf("--out %s is a directory; name the image file", out)}
	}
	dir := filepath.Dir(out)
	f, err := os.CreateTemp(dir, ".pagewire-check-*")
	if err != nil {
		return usageError{fmt.Errorf("--out %s: cannot write in %s: %w", out, dir, err)}
	}
	f.Close()
	os.Remove(f.Name())
	return nil
}

// removeStale removes a regular file or a symbolic link (the link, never
// its target) that a crashed run may have left at path, for the exclusive
// create that follows. Anything else there stays and makes that create
// fail.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() && fi.Mode()&fs.ModeSymlink == 0 {
		return nil
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// createPartial creates a new file at path for writing, removing a stale
// one first (see removeStale); it never opens through a symbolic link.
func createPartial(path string) (*os.File, error) {
	if err := removeStale(path); err != nil {
		return nil, err
	}
	return os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o644)
}
