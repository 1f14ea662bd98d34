package main

import (
	"fmt"

	"github.com/distribution/reference"
	"github.com/imgfs/imgfs/registry"
	"github.com/spf13/cobra"
)

func newPullCmd(g *globals) *cobra.Command {
	var f registryFlags
	var allPlatforms bool
	cmd := &cobra.Command{
		Use:   "pull [flags] REF",
		Short: "Pull an image from a registry into the store",
		Long: `Pull the image REF from its registry into the store, as docker pull does: names follow
docker's rules (alpine is docker.io/library/alpine:latest; NAME@sha256:... pulls by digest).
The image is stored as it is in the registry (manifest, image index, config and compressed
layers, same digests), each layer verified and indexed as it downloads, 3 at a time. Blobs
the store has are not fetched again. Credentials come from docker's config.json and its
credential helpers. Registries are reached over HTTPS, their certificate checked against
the system's CAs and those of --cert-dir (or /etc/docker/certs.d/HOST[:PORT]/ and
/etc/containers/certs.d/HOST[:PORT]/); loopback ones (localhost, 127.0.0.0/8, ::1) and
those named with --insecure-registry over plain HTTP when they do not speak HTTPS.

Of a multi-platform image (an image index), the manifest for this machine's platform (or
--platform's) is pulled; --all-platforms pulls every manifest of the index, with their
configs and layers, each layer once: what imgfs push needs to push the image whole.

A download that breaks resumes where it broke; 5xx answers and resets are tried again a few
times. A registry that sends nothing for --timeout fails the pull. A failed or killed pull
leaves index.json and blobs/ as they were and keeps the blobs it finished, verified, for
the same pull run again; imgfs gc removes them.

Layer progress goes to stderr: on a terminal a line per layer kept in place, with a bar
while its bytes move, as docker shows it; elsewhere a line each time a layer's word
changes. The digest and status go to stdout; --quiet prints nothing.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, c, ctx, stop, err := f.open(g)
			if err != nil {
				return err
			}
			defer stop()
			d := f.display(cmd.ErrOrStderr())
			opts := registry.PullOptions{Status: d.statusFunc(), Progress: d.progressFunc("Downloading"), AllPlatforms: allPlatforms}
			res, err := c.Pull(ctx, s, args[0], opts)
			d.Wait() // before any other line: the display has the terminal until then
			if err != nil {
				return fmt.Errorf("pull %s: %w", args[0], err)
			}
			if f.quiet {
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
	f.add(cmd)
	cmd.Flags().BoolVar(&allPlatforms, "all-platforms", false, "pull every platform's manifest of a multi-platform image")
	return cmd
}
