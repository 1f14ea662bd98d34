package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newGCCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "gc",
		Short: "Delete the blobs no image needs",
		Long: `Delete the blobs no name or image ID in the store reaches any more (after imgfs rm), their
layer indexes, and leftovers of interrupted imports.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := g.open()
			if err != nil {
				return err
			}
			removed, freed, err := s.GC()
			if removed > 0 || err == nil {
				fmt.Fprintf(cmd.OutOrStdout(), "Removed %d %s, freed %s\n", removed, plural(removed, "blob"), humanSize(freed))
			}
			return err
		},
	}
}
