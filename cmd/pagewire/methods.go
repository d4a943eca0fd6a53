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
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, name := range builtin.Methods().Names() {
				m, _ := builtin.Methods().Lookup(name)
				fmt.Fprintf(cmd.OutOrStdout(), "%-8s flag %#04x\n", name, m.Info().Flag)
			}
			return nil
		},
	}
}
