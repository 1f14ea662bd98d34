// Command imgfs serves container images as a read-only FUSE filesystem.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// version is set at build time by the Makefile (-ldflags -X main.version=...).
var version = "dev"

func main() {
	root := &cobra.Command{
		Use:           "imgfs",
		Short:         "Look inside container images through a read-only filesystem",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(&cobra.Command{
		Use:   "version",
		Short: "Print the imgfs version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), "imgfs", version)
		},
	})
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "imgfs:", err)
		os.Exit(1)
	}
}
