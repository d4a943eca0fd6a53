package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/pagewire/pagewire/plugins/builtin"
)

func methodsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "methods",
		Short: "List the compression methods built in",
		Long: `List the compression methods built in: name, wire flag, and the code
that compresses. zstd runs on the system's libzstd in a binary built with
the libzstd tag (make build), in pure Go otherwise; PAGEWIRE_ZSTD=go picks
pure Go in a libzstd build.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, name := range builtin.Methods().Names() {
				m, _ := builtin.Methods().Lookup(name)
				impl := "pagewire (built in)"
				if i, ok := m.(interface{ Implementation() string }); ok {
					impl = i.Implementation()
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%-8s flag %#04x  %s\n", name, m.Info().Flag, impl)
			}
			return nil
		},
	}
}
