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
changes. "TAG: digest: sha256:... size: N" goes to stdout; --quiet prints nothing.

Each image manifest's layer indexes go up too, as an OCI artifact whose subject is the
manifest (through the referrers API, else the fallback tag sha256-HEX), unless the registry
lists the same one already; a lazy mount of the image on another machine then builds no
index. A registry that refuses them gets a warning line; the push still succeeds.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, c, ctx, stop, err := f.open(g)
			if err != nil {
				return err
			}
			defer stop()
			d := f.display(cmd.ErrOrStderr())
			var warning string
			opts := registry.PushOptions{Status: d.statusFunc(), Progress: d.progressFunc("Pushing"),
				Warn: func(msg string) { warning = msg }}
			res, err := c.Push(ctx, s, args[0], opts)
			d.Wait() // before any other line: the display has the terminal until then
			if err != nil {
				return fmt.Errorf("push %s: %w", args[0], err)
			}
			if warning != "" && !f.quiet {
				reportf(cmd.ErrOrStderr(), "warning: push %s: %s", args[0], warning)
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
