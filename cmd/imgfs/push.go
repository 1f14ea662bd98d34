package main

import (
	"fmt"

	"github.com/imgfs/imgfs/registry"
	"github.com/spf13/cobra"
)

func newPushCmd(g *globals) *cobra.Command {
	var f registryFlags
	cmd := &cobra.Command{
		Use:   "push [flags] REF",
		Short: "Push an image from the store to a registry",
		Long: `Push the image REF from the store to the registry its name says, as docker push does; a
repository name without a tag pushes every tag of it. The manifest (or image index and all
its manifests), configs and compressed layers go up byte for byte, so the digests stay the
same. Each blob is checked once with a HEAD, however many tags share it; a missing one is
mounted from another repository of the same registry where imgfs saw it (pulled from or
pushed to), else uploaded, 3 at a time. A multi-platform image needs every manifest of its
index in the store: imgfs pull --all-platforms brings them. Credentials come from docker's
config.json and its credential helpers. Registries are reached over HTTPS, their
certificate checked against the system's CAs and those of --cert-dir (or
/etc/docker/certs.d/HOST[:PORT]/ and /etc/containers/certs.d/HOST[:PORT]/); loopback ones
(localhost, 127.0.0.0/8, ::1) and those named with --insecure-registry over plain HTTP when
they do not speak HTTPS.

Layer progress goes to stderr: on a terminal a line per layer kept in place, with a bar
while its bytes move, as docker shows it; elsewhere a line each time a layer's word
changes. "TAG: digest: sha256:... size: N" goes to stdout; --quiet prints nothing.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, c, ctx, stop, err := f.open(g)
			if err != nil {
				return err
			}
			defer stop()
			d := f.display(cmd.ErrOrStderr())
			opts := registry.PushOptions{Status: d.statusFunc(), Progress: d.progressFunc("Pushing")}
			res, err := c.Push(ctx, s, args[0], opts)
			d.Wait() // before any other line: the display has the terminal until then
			if err != nil {
				return fmt.Errorf("push %s: %w", args[0], err)
			}
			if f.quiet {
				return nil
			}
			out := cmd.OutOrStdout()
			for _, p := range res {
				fmt.Fprintf(out, "%s: digest: %s size: %d\n", p.Tag, p.Digest, p.Size)
			}
			return nil
		},
	}
	f.add(cmd)
	return cmd
}
