package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/pagewire/pagewire/channels"
	"github.com/pagewire/pagewire/core"
	"github.com/pagewire/pagewire/internal/pagegen"
	"github.com/pagewire/pagewire/sdk"
)

func demoCmd() *cobra.Command {
	var (
		c       common
		size    string
		rounds  int
		dirty   float64
		seed    uint64
		dialect string
	)
	cmd := &cobra.Command{
		Use:   "demo [flags]",
		Short: "Run a sender and a receiver in one process over loopback TCP",
		Long: `Build a deterministic synthetic guest image (zero, text-like, binary-like
and random pages), send it over loopback TCP, and check that the receiver
ends with exactly the sender's image. With --rounds R, a fraction --dirty
of the pages is rewritten between rounds and only those pages are sent
again, with a Sync after each round, as iterative pre-copy does.`,
		Example: `  pagewire demo
  pagewire demo --channels 8 --size 1G --rounds 5 --dirty 0.05`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			defer c.release()
			m, err := c.lookup()
			if err != nil {
				return err
			}
			n, err := parseSize(size)
			if err != nil {
				return usageError{fmt.Errorf("--size: %w", err)}
			}
			if n <= 0 || n%core.DefaultPageSize != 0 {
				return usageError{fmt.Errorf("--size %s: want a positive multiple of %d bytes", size, core.DefaultPageSize)}
			}
			if rounds < 1 {
				return usageError{fmt.Errorf("--rounds %d: want at least 1", rounds)}
			}
			if dirty < 0 || dirty > 1 {
				return usageError{fmt.Errorf("--dirty %g: want a fraction in [0, 1]", dirty)}
			}
			dl, err := core.ParseDialect(dialect)
			if err != nil {
				return usageError{fmt.Errorf("--dialect: %w", err)}
			}
			return runDemo(cmd.Context(), &c, m, int(n), rounds, dirty, seed, dl)
		},
	}
	c.register(cmd)
	cmd.Flags().StringVar(&size, "size", "256M", "size of the synthetic guest image (K, M, G suffixes)")
	cmd.Flags().IntVar(&rounds, "rounds", 3, "pre-copy rounds: the whole image, then dirtied pages")
	cmd.Flags().Float64Var(&dirty, "dirty", 0.1, "fraction of pages rewritten between rounds")
	cmd.Flags().Uint64Var(&seed, "seed", 1, "seed of the synthetic image")
	cmd.Flags().StringVar(&dialect, "dialect", "10.0", "multifd dialect: 10.0 or 7.2 (zero pages on the control channel)")
	return cmd
}

func runDemo(ctx context.Context, c *common, m sdk.Method, size, rounds int, dirty float64, seed uint64, dialect core.Dialect) error {
	const block = "pc.ram"
	ps := core.DefaultPageSize
	fmt.Fprintf(os.Stderr, "demo: building a %s synthetic guest image\n", bytesText(uint64(size)))
	img := pagegen.Image(size, ps, seed)

	ln, err := channels.Listen("tcp:127.0.0.1:0")
	if err != nil {
		return err
	}
	d, err := channels.NewDialer(channels.Addr(ln.Addr()))
	if err != nil {
		ln.Close()
		return err
	}
	r := core.NewReceiver(core.ReceiverConfig{Method: m, Channels: c.channels, Level: c.level, Timeout: c.timeout})
	type result struct {
		mem core.Memory
		err error
	}
	rctx, rcancel := context.WithCancel(ctx)
	defer rcancel()
	done := make(chan result, 1)
	go func() {
		mem, err := r.Receive(rctx, ln)
		done <- result{mem, err}
	}()

	s, err := core.NewSender(ctx, d, core.Blocks{{Name: block, Data: img}}, core.SenderConfig{
		Channels: c.channels, Method: m, Level: c.level, Timeout: c.timeout, Dialect: dialect,
	})
	if err != nil {
		rcancel()
		<-done
		return err
	}
	pctx, pcancel := context.WithCancel(ctx)
	total := int64(size) + int64(float64(size)*dirty)*int64(rounds-1)
	wait := c.showProgress(pctx, "demo", func() int64 { return total }, s.Stats)
	err = func() error {
		for round := 1; round <= rounds; round++ {
			if round == 1 {
				if err := s.SendBlock(block); err != nil {
					return err
				}
			} else {
				offs := pagegen.Dirty(img, ps, dirty, seed+uint64(round))
				if err := s.SendPages(block, offs); err != nil {
					return err
				}
			}
			if err := s.Sync(); err != nil {
				return err
			}
			if !c.json && !(c.progress && isTerminal()) {
				st := s.Stats()
				fmt.Fprintf(os.Stderr, "round %d: %d pages sent so far\n", round, st.NormalPages+st.ZeroPages)
			}
		}
		return nil
	}()
	st, cerr := s.Close()
	pcancel()
	wait()
	if cerr != nil {
		err = cerr // the transfer's error, with the peer's reason when it gave one
	}
	if err != nil {
		rcancel()
		<-done
		return err
	}
	res := <-done
	if res.err != nil {
		return res.err
	}
	got := res.mem.Blocks()[0].Data
	ok := bytes.Equal(got, img)
	sum := newSummary("demo", st)
	sum.Verified = &ok
	c.report(os.Stderr, sum)
	if !ok {
		return fmt.Errorf("demo: the received image differs from the sender's")
	}
	if !c.json {
		fmt.Fprintf(os.Stderr, "verified: the receiver's image is identical to the sender's after %d round(s) (sha256 %x)\n", rounds, sha256.Sum256(got))
	}
	return nil
}

func isTerminal() bool {
	fi, err := os.Stderr.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
