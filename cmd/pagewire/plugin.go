package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/pagewire/pagewire/wasm"
)

func pluginCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "plugin",
		Short: "Inspect and test compression plugins",
	}
	cmd.AddCommand(pluginInspectCmd())
	return cmd
}

func pluginInspectCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "inspect FILE",
		Short: "Show a Wasm plugin's ABI version, method, wire flag, imports, exports, size and sha256",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := wasm.Load(cmd.Context(), args[0], wasm.Config{})
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
	return cmd
}
