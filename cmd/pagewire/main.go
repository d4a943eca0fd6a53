// Command pagewire moves memory images between two ends with pagewire's
// multifd engine: send, recv, and demo (both ends in one process).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	_ "github.com/pagewire/pagewire/channels/vmbus" // vmbus: addresses
)

// usageError marks errors in how the command was called (exit code 2).
type usageError struct{ error }

// exitFuncs are the cleanups atExit registered, by registration number.
var exitFuncs struct {
	sync.Mutex
	fs      map[int]func()
	next    int
	running chan struct{} // closed when the cleanups have run; nil before they start
}

// atExit registers f to run once when the process exits: after the
// command returns, or when a signal ends a command that did not stop in
// time (lastResort), where the command's deferred functions never run.
// Cleanups run in reverse order of registration, at most once each, on
// whichever goroutine ends the process, possibly while the command is
// still running: f must be safe to call concurrently with it (removing a
// file the command still has open is). The returned func unregisters f,
// for when it no longer applies (a .partial renamed into place); it does
// not wait for a cleanup already running. Registering once the cleanups
// have started runs f at once.
func atExit(f func()) (unregister func()) {
	exitFuncs.Lock()
	if exitFuncs.running != nil {
		exitFuncs.Unlock()
		f()
		return func() {}
	}
	if exitFuncs.fs == nil {
		exitFuncs.fs = make(map[int]func())
	}
	id := exitFuncs.next
	exitFuncs.next++
	exitFuncs.fs[id] = f
	exitFuncs.Unlock()
	return func() {
		exitFuncs.Lock()
		delete(exitFuncs.fs, id)
		exitFuncs.Unlock()
	}
}

// runExitFuncs runs the cleanups atExit registered; a second caller waits
// until the first has run them.
func runExitFuncs() {
	exitFuncs.Lock()
	if done := exitFuncs.running; done != nil {
		exitFuncs.Unlock()
		<-done
		return
	}
	done := make(chan struct{})
	exitFuncs.running = done
	fs, n := exitFuncs.fs, exitFuncs.next
	exitFuncs.fs = nil
	exitFuncs.Unlock()
	defer close(done)
	for id := n - 1; id >= 0; id-- {
		if f := fs[id]; f != nil {
			f()
		}
	}
}

// exit runs the atExit cleanups and ends the process.
func exit(code int) {
	runExitFuncs()
	os.Exit(code)
}

// signalGrace is how long a command has to return after SIGINT or SIGTERM
// cancelled its context.
const signalGrace = time.Second

// lastResort cancels the command's context at the first SIGINT or SIGTERM
// and, if the command has not returned signalGrace later (or at a second
// signal), runs the atExit cleanups and exits with 128+the signal's
// number (130, 143), the way a shell reports a process a signal ended.
// A plugin call can be deaf to cancellation: a Wasm module looping in the
// fast tier, a go-plugin that does not answer.
//
// It cannot help when the Go runtime itself is stuck: a fast-tier Wasm
// call that loops without calling pagewire.check cannot be preempted, and
// once a garbage collection waits for it nothing in the process runs,
// this goroutine included (package wasm's doc; --plugin-strict avoids it).
func lastResort(sigs <-chan os.Signal, cancel context.CancelFunc) {
	sig := <-sigs
	cancel()
	t := time.NewTimer(signalGrace)
	select {
	case <-t.C:
		fmt.Fprintf(os.Stderr, "pagewire: %v: the command did not stop within %v; exiting\n", sig, signalGrace)
	case <-sigs:
		fmt.Fprintf(os.Stderr, "pagewire: %v again: exiting\n", sig)
	}
	code := 1
	if s, ok := sig.(syscall.Signal); ok {
		code = 128 + int(s)
	}
	exit(code)
}

func main() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go lastResort(sigs, cancel)
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
	cmd, err := root.ExecuteContextC(ctx)
	if pf != nil {
		pprof.StopCPUProfile()
		pf.Close()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "pagewire: %v\n", err)
		code := 1
		var ue usageError
		if errors.As(err, &ue) {
			code = 2
		}
		if asJSON, _ := cmd.Flags().GetBool("json"); asJSON {
			// A script reading --json gets an answer on failure too.
			json.NewEncoder(os.Stdout).Encode(struct {
				Error    string `json:"error"`
				ExitCode int    `json:"exit_code"`
			}{err.Error(), code})
		}
		exit(code)
	}
	runExitFuncs()
}
