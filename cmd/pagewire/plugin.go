package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/pagewire/pagewire/goplugin"
	"github.com/pagewire/pagewire/plugin"
	"github.com/pagewire/pagewire/sdk/plugintest"
	"github.com/pagewire/pagewire/wasm"
)

func pluginCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "plugin",
		Short: "Inspect and test compression plugins",
	}
	cmd.AddCommand(pluginInspectCmd(), pluginTestCmd())
	return cmd
}

func pluginInspectCmd() *cobra.Command {
	var asJSON, strict bool
	cmd := &cobra.Command{
		Use:   "inspect FILE",
		Short: "Show a plugin's ABI or protocol version, method, wire flag, size and sha256 (Wasm: tier, imports, exports)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if kind, err := plugin.Detect(args[0]); err != nil {
				return err
			} else if kind == plugin.GoPlugin {
				m, err := goplugin.Load(args[0], goplugin.Config{})
				if err != nil {
					return err
				}
				defer m.Close()
				in := m.Inspect()
				if asJSON {
					(&common{}).printJSON(in)
					return nil
				}
				fmt.Fprintf(cmd.OutOrStdout(), "file     %s\nkind     %s\nsize     %d bytes\nsha256   %s\nprotocol v%d\nmethod   %s\nflag     %#04x\nraw      %v\nstart    %v\n",
					in.File, in.Kind, in.Size, in.SHA256, in.Protocol, in.Method, in.Flag, in.Raw, in.StartDur)
				return nil
			}
			m, err := wasm.Load(cmd.Context(), args[0], wasm.Config{Strict: strict})
			if err != nil {
				return err
			}
			defer m.Close(context.Background())
			in := m.Inspect()
			if asJSON {
				(&common{}).printJSON(in)
				return nil
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "file     %s\nsize     %d bytes\nsha256   %s\nabi      v%d\nmethod   %s\nflag     %#04x\nraw      %v\ncompile  %v\n",
				in.File, in.Size, in.SHA256, in.ABI, in.Method, in.Flag, in.Raw, in.CompileDur)
			fmt.Fprintf(w, "tier     %s (%s)\n", in.Tier, tierNotes[in.Tier])
			fmt.Fprintf(w, "imports  %d\n", len(in.Imports))
			for _, i := range in.Imports {
				fmt.Fprintf(w, "  %s\n", i)
			}
			fmt.Fprintf(w, "exports  %d\n", len(in.Exports))
			for _, e := range in.Exports {
				fmt.Fprintf(w, "  %s\n", e)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	cmd.Flags().BoolVar(&strict, "strict", false, "load a Wasm module with per-loop deadline checks, as send and recv do with --plugin-strict (the tier shown is then checked)")
	return cmd
}

// tierNotes explains each tier in one line for plugin inspect (sdk/ABI.md
// has the measurements).
var tierNotes = map[wasm.Tier]string{
	wasm.TierFast:    "imports pagewire.check and nothing from WASI: runs without per-loop checks; a call past its deadline stops at its next pagewire.check",
	wasm.TierChecked: "imports WASI or not pagewire.check, or --strict: wazero checks the deadline at every loop header, stoppable anywhere, 2.5-5x slower",
	wasm.TierTrusted: "would run checked, but trusted: no per-loop checks, stoppable only at pagewire.check",
}

func pluginTestCmd() *cobra.Command {
	var trusted, strict bool
	cmd := &cobra.Command{
		Use:   "test FILE",
		Short: "Run the conformance kit (sdk/plugintest) against a Wasm or go-plugin plugin",
		Long: `Load FILE and run every check of the conformance kit against it, printing
a PASS or FAIL line per check; exit 1 if any check fails.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, closer, err := loadPlugin(cmd.Context(), args[0], "", "", false, wasm.Config{Trusted: trusted, Strict: strict})
			if err != nil {
				return err
			}
			defer closer()
			w := cmd.OutOrStdout()
			failed := 0
			for _, r := range plugintest.RunAll(m) {
				if r.Err != nil {
					failed++
					fmt.Fprintf(w, "FAIL %-14s %v (%v)\n", r.Name, r.Err, r.Elapsed.Round(time.Millisecond))
					continue
				}
				fmt.Fprintf(w, "PASS %-14s (%v)\n", r.Name, r.Elapsed.Round(time.Millisecond))
			}
			if failed > 0 {
				return fmt.Errorf("%s: %d conformance check(s) failed", args[0], failed)
			}
			fmt.Fprintf(w, "%s (%s): every conformance check passed\n", args[0], m.Info().Name)
			return nil
		},
	}
	cmd.Flags().BoolVar(&trusted, "trusted", false, "run a WASI module without per-loop deadline checks (faster)")
	cmd.Flags().BoolVar(&strict, "strict", false, "run any Wasm module with per-loop deadline checks (slower, stoppable anywhere)")
	return cmd
}
