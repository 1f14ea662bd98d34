package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/distribution/reference"
	"github.com/imgfs/imgfs/store"
	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"
)

func newRmCmd(g *globals) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "rm [flags] REF...",
		Aliases: []string{"rmi"},
		Short:   "Remove image names from the store",
		Long: `Remove images from the store's index, as docker rmi does: a name (busybox, busybox:1.36)
is untagged; an image ID untags every name of the image (all in one repository, unless
--force) and drops its unnamed entries. Blobs stay until imgfs gc.`,
		Args: minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := g.open()
			if err != nil {
				return err
			}
			failed := 0
			for _, ref := range args {
				if err := rmOne(s, ref, force, cmd.OutOrStdout()); err != nil {
					reportf(cmd.ErrOrStderr(), "%v", err)
					failed++
				}
			}
			if failed > 0 {
				return alreadyReported{failed}
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "untag an image ID's names even if they are in several repositories")
	return cmd
}

// rmOne removes what ref names, printing what it did as docker rmi does.
func rmOne(s *store.Store, ref string, force bool, out io.Writer) error {
	img, err := s.Resolve(ref)
	if err != nil {
		return untagBroken(s, ref, err, out)
	}
	// A name (or a name with a digest) untags that name only.
	if named, err := reference.ParseDockerRef(ref); err == nil && img.Name != nil {
		_, digested := named.(reference.Digested)
		if digested || named.String() == img.Name.String() {
			if err := s.Untag(img.Name); err != nil {
				return err
			}
			fmt.Fprintln(out, "Untagged:", reference.FamiliarString(img.Name))
			return nil
		}
	}

	// An image ID: all its names, and its unnamed entries.
	imgs, err := s.Images()
	if err != nil && len(imgs) == 0 {
		return err
	}
	var names []reference.Named
	repos := map[string]bool{}
	unnamed := map[digest.Digest]bool{}
	for _, i := range imgs {
		if i.ID != img.ID {
			continue
		}
		if i.Name == nil {
			unnamed[i.Target.Digest] = true
			continue
		}
		names = append(names, i.Name)
		repos[reference.FamiliarName(i.Name)] = true
	}
	if len(repos) > 1 && !force {
		return fmt.Errorf("conflict: unable to delete %s (must be forced): image is referenced in multiple repositories",
			shortID(img.ID))
	}
	for _, n := range names {
		if err := s.Untag(n); err != nil {
			return err
		}
		fmt.Fprintln(out, "Untagged:", reference.FamiliarString(n))
	}
	if len(unnamed) > 0 {
		if _, err := s.RemoveUntagged(unnamed); err != nil {
			return err
		}
		fmt.Fprintln(out, "Deleted:", img.ID)
	}
	return nil
}

// untagBroken removes the name ref when Resolve failed with err for want of its image (a
// manifest blob missing or damaged, no manifest for the platform): the name is a line of
// index.json, and removing it needs nothing else. Any other failure is err.
func untagBroken(s *store.Store, ref string, err error, out io.Writer) error {
	named, perr := reference.ParseDockerRef(ref)
	if perr != nil || errors.Is(err, store.ErrNoSuchImage) {
		return err
	}
	if _, digested := named.(reference.Digested); digested {
		return err
	}
	if uerr := s.Untag(named); uerr != nil {
		return err
	}
	fmt.Fprintln(out, "Untagged:", reference.FamiliarString(named))
	return nil
}
