package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/distribution/reference"
	"github.com/imgfs/imgfs/registry"
	"github.com/spf13/cobra"
)

func newPullCmd(g *globals) *cobra.Command {
	var quiet bool
	var insecure []string
	cmd := &cobra.Command{
		Use:   "pull [flags] REF",
		Short: "Pull an image from a registry into the store",
		Long: `Pull the image REF from its registry into the store, as docker pull does: names follow
docker's rules (alpine is docker.io/library/alpine:latest; NAME@sha256:... pulls by digest).
The image is stored as it is in the registry (manifest, image index, config and compressed
layers, same digests), each layer verified and indexed as it downloads, 3 at a time. Blobs
the store has are not fetched again. Credentials come from docker's config.json and its
credential helpers. Loopback registries are reached over plain HTTP, others over HTTPS
unless named with --insecure-registry.

Layer progress goes to stderr, the digest and status to stdout; --quiet prints nothing.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := g.open()
			if err != nil {
				return err
			}
			c, err := registry.New(registry.Options{Insecure: insecure, UserAgent: "imgfs/" + version})
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			var opts registry.PullOptions
			if !quiet {
				errw := cmd.ErrOrStderr()
				opts.Status = func(id, msg string) { fmt.Fprintf(errw, "%s: %s\n", id, msg) }
			}
			res, err := c.Pull(ctx, s, args[0], opts)
			if err != nil {
				return fmt.Errorf("pull %s: %w", args[0], err)
			}
			if quiet {
				return nil
			}
			out := cmd.OutOrStdout()
			fmt.Fprintln(out, "Digest:", res.Digest)
			if res.UpToDate {
				fmt.Fprintln(out, "Status: Image is up to date for", reference.FamiliarString(res.Name))
			} else {
				fmt.Fprintln(out, "Status: Downloaded newer image for", reference.FamiliarString(res.Name))
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print nothing")
	cmd.Flags().StringSliceVar(&insecure, "insecure-registry", nil, "reach registry HOST[:PORT] over plain HTTP (repeatable)")
	return cmd
}
