package main

import (
	"fmt"

	"github.com/imgfs/imgfs/registry"
	"github.com/spf13/cobra"
)

func newIndexCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "index",
		Short: "Share layer indexes through a registry",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cmd.Help()
		},
	}
	cmd.AddCommand(newIndexPushCmd())
	return cmd
}

func newIndexPushCmd() *cobra.Command {
	var f registryFlags
	cmd := &cobra.Command{
		Use:   "push [flags] REF",
		Short: "Build and push the layer indexes of an image already in a registry",
		Long: `Build the layer indexes of the image REF, already in its registry (pushed by another
tool), and push them there, as imgfs push pushes the indexes of the images it pushes: one
OCI artifact per image manifest (every manifest of an image index), whose subject is the
manifest, through the registry's referrers API, else the fallback tag sha256-HEX. Each
layer is streamed once, verified by its digest and its diffID, 3 at a time, and nothing is
kept in the store. A manifest whose layers the registry already shares usable indexes of is
left as it is. Names, credentials, TLS and --timeout are as for imgfs pull.

Layer progress goes to stderr, as pull's. For each image manifest, stdout says
"MANIFEST: layer indexes: ARTIFACT size: N", or "MANIFEST: layer indexes already in the
registry"; --quiet prints nothing.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, stop, err := f.client()
			if err != nil {
				return err
			}
			defer stop()
			d := f.display(cmd.ErrOrStderr())
			opts := registry.IndexPushOptions{Status: d.statusFunc(), Progress: d.progressFunc("Downloading")}
			res, err := c.PushIndexes(ctx, args[0], opts)
			d.Wait() // before any other line: the display has the terminal until then
			if err != nil {
				return fmt.Errorf("index push %s: %w", args[0], err)
			}
			if f.quiet {
				return nil
			}
			out := cmd.OutOrStdout()
			for _, p := range res {
				if p.Existed {
					fmt.Fprintf(out, "%s: layer indexes already in the registry\n", p.Manifest)
					continue
				}
				fmt.Fprintf(out, "%s: layer indexes: %s size: %d\n", p.Manifest, p.Artifact, p.Size)
			}
			return nil
		},
	}
	f.add(cmd)
	return cmd
}
