package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/imgfs/imgfs/registry"
	"github.com/imgfs/imgfs/store"
	"github.com/spf13/cobra"
)

// registryFlags are the flags pull, push and index push share.
type registryFlags struct {
	quiet    bool
	insecure []string
	certDir  string
	timeout  time.Duration
}

func (f *registryFlags) add(cmd *cobra.Command) {
	cmd.Flags().BoolVarP(&f.quiet, "quiet", "q", false, "print nothing")
	cmd.Flags().StringSliceVar(&f.insecure, "insecure-registry", nil, "let registry HOST[:PORT] be reached over plain HTTP when it has no HTTPS (repeatable)")
	cmd.Flags().StringVar(&f.certDir, "cert-dir", "", "TLS files for the registry: *.crt CAs to trust, *.cert and *.key a client certificate (default /etc/docker/certs.d/HOST[:PORT], /etc/containers/certs.d/HOST[:PORT])")
	cmd.Flags().DurationVar(&f.timeout, "timeout", registry.DefaultTimeout,
		"fail when the registry sends nothing for this long (a transfer that keeps moving never times out)")
}

// open opens the store and a registry client, and returns a context that an interrupt or
// SIGTERM cancels; the caller calls stop.
func (f *registryFlags) open(g *globals) (s *store.Store, c *registry.Client, ctx context.Context, stop func(), err error) {
	if s, err = g.open(); err != nil {
		return nil, nil, nil, nil, err
	}
	if c, ctx, stop, err = f.client(); err != nil {
		return nil, nil, nil, nil, err
	}
	return s, c, ctx, stop, nil
}

// client returns a registry client, for a command that needs no store, and a context that
// an interrupt or SIGTERM cancels; the caller calls stop.
func (f *registryFlags) client() (c *registry.Client, ctx context.Context, stop func(), err error) {
	if f.timeout <= 0 {
		return nil, nil, nil, usageError{fmt.Errorf("--timeout %s: must be more than 0", f.timeout)}
	}
	if c, err = registry.New(registry.Options{Insecure: f.insecure, CertDir: f.certDir, UserAgent: "imgfs/" + version, Timeout: f.timeout}); err != nil {
		return nil, nil, nil, err
	}
	ctx, stop = signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	return c, ctx, stop, nil
}

// display returns where a pull or push shows its progress: stderr, nil when quiet.
func (f *registryFlags) display(stderr io.Writer) *display {
	if f.quiet {
		return nil
	}
	return newDisplay(stderr)
}
