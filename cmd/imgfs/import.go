package main

import (
	"errors"
	"fmt"

	"github.com/distribution/reference"
	"github.com/imgfs/imgfs/store"
	"github.com/spf13/cobra"
)

var _ store.Progress = (*blobProgress)(nil)

func newImportCmd(g *globals) *cobra.Command {
	var name string
	var quiet bool
	cmd := &cobra.Command{
		Use:     "import [flags] PATH...",
		Aliases: []string{"load"},
		Short:   "Import images from docker save or OCI archives and layouts",
		Long: `Import the images of each PATH into the store, as docker load does: a docker save archive,
an oci-archive (plain, gzip or zstd) or an OCI image layout directory; - reads an archive
from standard input. Every blob is verified and every layer indexed on the way.

--name names the image of a single-image PATH, besides the names the archive gives it.
Progress of blobs over 1 MB goes to stderr (bars on a terminal); --quiet leaves it out.`,
		Args: minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var opts store.ImportOptions
			if name != "" {
				if len(args) > 1 {
					return usageError{errors.New("--name names the image of one PATH only")}
				}
				n, err := reference.ParseNormalizedNamed(name)
				if err != nil {
					return fmt.Errorf("--name %q: %v", name, err)
				}
				opts.Name = n
			}
			if countOf(args, "-") > 1 {
				return usageError{errors.New("standard input (-) can be read once only")}
			}
			s, err := g.open()
			if err != nil {
				return err
			}
			failed := 0
			for _, path := range args {
				var p *blobProgress
				if !quiet {
					p = newProgress(cmd.ErrOrStderr(), "Importing")
					opts.Progress = p
				}
				imgs, err := s.Import(path, opts)
				if p != nil {
					p.Wait()
				}
				if err != nil {
					reportf(cmd.ErrOrStderr(), "%v", err)
					failed++
					continue
				}
				printed := map[string]bool{}
				for _, img := range imgs {
					line := "Loaded image ID: " + img.ID.String()
					if img.Name != nil {
						line = "Loaded image: " + reference.FamiliarString(img.Name)
					}
					if !printed[line] {
						printed[line] = true
						fmt.Fprintln(cmd.OutOrStdout(), line)
					}
				}
			}
			if failed > 0 {
				return alreadyReported{failed}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "name the imported image REF (one PATH only)")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "show no progress")
	return cmd
}

func countOf(list []string, s string) int {
	n := 0
	for _, e := range list {
		if e == s {
			n++
		}
	}
	return n
}
