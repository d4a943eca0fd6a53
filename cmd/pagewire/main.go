// Command pagewire moves memory images between two ends with pagewire's
// multifd engine: send, recv, and demo (both ends in one process).
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"github.com/spf13/cobra"

	_ "github.com/pagewire/pagewire/channels/vmbus" // vmbus: addresses
)

// usageError marks errors in how the command was called (exit code 2).
type usageError struct{ error }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := &cobra.Command{
		Use:   "pagewire",
		Short: "Move memory pages between two ends the way live migration does",
		Long: `pagewire moves memory images over N parallel channels in QEMU's multifd
wire format: packets of up to 128 pages, zero pages as offsets only, one
compression method per transfer.

Addresses are written tcp:HOST:PORT, unix:PATH or vmbus:PATH (VMBus rings in
shared memory, offered by the receiver on the unix socket PATH).`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError{fmt.Errorf("%w\nsee '%s --help'", err, c.CommandPath())}
	})
	root.AddCommand(sendCmd(), recvCmd(), demoCmd(), methodsCmd(), qemuCmd(), pluginCmd(), certsCmd())
	var (
		profile string
		pf      *os.File
	)
	root.PersistentFlags().StringVar(&profile, "cpuprofile", "", "write a CPU profile (go tool pprof) of the command to FILE")
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		if profile == "" {
			return nil
		}
		f, err := os.Create(profile)
		if err != nil {
			return err
		}
		pf = f
		return pprof.StartCPUProfile(f)
	}
	err := root.ExecuteContext(ctx)
	if pf != nil {
		pprof.StopCPUProfile()
		pf.Close()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "pagewire: %v\n", err)
		var ue usageError
		if errors.As(err, &ue) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}
