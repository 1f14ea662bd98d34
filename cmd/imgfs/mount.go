package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	fsys "github.com/imgfs/imgfs/fs"
	"github.com/imgfs/imgfs/mount"
	"github.com/imgfs/imgfs/mount/readahead"
	"github.com/imgfs/imgfs/registry"
	"github.com/imgfs/imgfs/store"
	"github.com/imgfs/imgfs/store/chunks"
	"github.com/spf13/cobra"
)

// readyTimeout bounds how long imgfs mount waits for its daemon to serve.
const readyTimeout = 10 * time.Second

// mountFlags are imgfs mount's registry flags: the registries shown, and how they are read.
type mountFlags struct {
	registries []string
	cacheSize  string
	insecure   []string
	certDir    string
	timeout    time.Duration
}

// defaultCacheSize bounds the chunk cache of lazy mounts (--cache-size).
const defaultCacheSize = "10G"

// args are the flags again, for the daemon's command line.
func (f *mountFlags) args() []string {
	var args []string
	for _, r := range f.registries {
		args = append(args, "--registry", r)
	}
	for _, h := range f.insecure {
		args = append(args, "--insecure-registry", h)
	}
	if f.certDir != "" {
		args = append(args, "--cert-dir", f.certDir)
	}
	return append(args, "--cache-size", f.cacheSize, "--timeout", f.timeout.String())
}

// remotes returns the registries to show, reading blobs through the store's chunk cache.
func (f *mountFlags) remotes(s *store.Store, logger *slog.Logger) ([]fsys.Remote, error) {
	if f.timeout <= 0 {
		return nil, usageError{fmt.Errorf("--timeout %s: must be more than 0", f.timeout)}
	}
	size, err := parseSize(f.cacheSize)
	if err != nil {
		return nil, usageError{fmt.Errorf("--cache-size %q: %v", f.cacheSize, err)}
	}
	if len(f.registries) == 0 {
		return nil, nil
	}
	c, err := registry.New(registry.Options{Insecure: f.insecure, CertDir: f.certDir, UserAgent: "imgfs/" + version, Timeout: f.timeout})
	if err != nil {
		return nil, err
	}
	cache := chunks.New(s.ChunkCacheDir(), 0, size)
	var remotes []fsys.Remote
	for _, host := range f.registries {
		src, err := c.NewSource(host, cache, logger)
		if err != nil {
			return nil, usageError{fmt.Errorf("--registry: %v", err)}
		}
		remotes = append(remotes, c.NewRemote(s, src))
	}
	return remotes, nil
}

func newMountCmd(g *globals) *cobra.Command {
	var foreground, allowOther, debug bool
	var mf mountFlags
	cmd := &cobra.Command{
		Use:   "mount [flags] MOUNTPOINT",
		Short: "Mount the store's images as a read-only filesystem",
		Long: `Mount the images of the store at MOUNTPOINT, read-only, nosuid and nodev:

  MOUNTPOINT/busybox/latest/rootfs/      the image's files, layers overlaid
  MOUNTPOINT/busybox/latest/layers/N/    each layer's own files, whiteouts included
  MOUNTPOINT/busybox/latest/manifest.json, config.json
  MOUNTPOINT/sha256:<image ID prefix>/   any image by ID (not listed)

With --registry HOST[:PORT] (repeatable), that registry's images show too, read in place
(lazily): MOUNTPOINT/HOST[:PORT]/REPO/TAG/ and MOUNTPOINT/HOST[:PORT]/REPO@sha256:.../,
the same tree as a local image's. Repositories are listed from the registry's catalog
where it has one; any REPO/TAG is resolved when looked up, and a tag again after a second.
A layer is indexed by streaming it once (the index kept in the store); reads fetch only
the chunks they need with Range requests, kept in the store's .imgfs/cache/ (at most
--cache-size, least recently used out), which the store's mounts share. A registry that
sends nothing for --timeout fails the read (EIO); reads work again when it is back.

Images imported or removed while mounted show within a second. imgfs mount returns once
the mount serves, leaving a daemon behind (log: .imgfs/mount.log in the store, else
mount.log in $XDG_RUNTIME_DIR/imgfs or $TMPDIR/imgfs-<uid>, private directories); with
--foreground it serves until unmounted (imgfs umount, umount, fusermount3 -u) or
interrupted. A stale mount left by a killed daemon is cleaned up first.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := filepath.Abs(args[0])
			if err != nil {
				return err
			}
			if !foreground {
				return daemonize(cmd, g, dir, allowOther, debug, &mf)
			}
			err = serve(cmd, g, dir, mount.Options{AllowOther: allowOther, Debug: debug}, &mf)
			mount.Ready(err) // if it failed before the mount was made
			return err
		},
	}
	cmd.Flags().BoolVarP(&foreground, "foreground", "f", false, "serve in the foreground, logging to stderr")
	cmd.Flags().BoolVar(&allowOther, "allow-other", false, "let other users in (allow_other, default_permissions)")
	cmd.Flags().BoolVar(&debug, "debug", false, "log every FUSE request")
	cmd.Flags().StringArrayVar(&mf.registries, "registry", nil, "show registry HOST[:PORT]'s images under MOUNTPOINT/HOST[:PORT]/, read lazily (repeatable)")
	cmd.Flags().StringVar(&mf.cacheSize, "cache-size", defaultCacheSize, "bound of the store's cache of bytes fetched from registries (bytes, or with K, M, G, T)")
	cmd.Flags().StringSliceVar(&mf.insecure, "insecure-registry", nil, "let registry HOST[:PORT] be reached over plain HTTP when it has no HTTPS (repeatable)")
	cmd.Flags().StringVar(&mf.certDir, "cert-dir", "", "TLS files for the registries: *.crt CAs to trust, *.cert and *.key a client certificate (default /etc/docker/certs.d/HOST[:PORT], /etc/containers/certs.d/HOST[:PORT])")
	cmd.Flags().DurationVar(&mf.timeout, "timeout", registry.DefaultTimeout,
		"fail a read when the registry sends nothing for this long")
	return cmd
}

// daemonize runs imgfs mount --foreground as a daemon and waits until it serves.
func daemonize(cmd *cobra.Command, g *globals, dir string, allowOther, debug bool, mf *mountFlags) error {
	s, err := g.open()
	if err != nil {
		return err
	}
	if _, err := mf.remotes(s, nil); err != nil {
		return err // the flags' errors from this command, not the daemon's log
	}
	if _, err := mount.CleanStale(dir); err != nil {
		return err
	}
	if fstype, ok := mount.MountedType(dir); ok && fstype == mount.FSType {
		return fmt.Errorf("%s: %v", dir, mount.ErrMounted)
	}
	if fi, err := os.Stat(dir); err != nil {
		return fmt.Errorf("mount point: %w", err)
	} else if !fi.IsDir() {
		return fmt.Errorf("mount point %s is not a directory", dir)
	}
	args := []string{"--store", s.Root()}
	if g.platform != "" {
		args = append(args, "--platform", g.platform)
	}
	args = append(args, "mount", "--foreground")
	if allowOther {
		args = append(args, "--allow-other")
	}
	if debug {
		args = append(args, "--debug")
	}
	args = append(args, mf.args()...)
	args = append(args, "--", dir)
	logf, err := mount.OpenLog(s.StateDir())
	if err != nil {
		return err
	}
	defer logf.Close()
	pid, err := mount.Daemonize(args, logf, readyTimeout)
	if err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "Mounted %s at %s (pid %d, log %s)\n", s.Root(), dir, pid, logf.Name())
	return nil
}

// serve mounts and serves in this process until unmounted.
func serve(cmd *cobra.Command, g *globals, dir string, opts mount.Options, mf *mountFlags) error {
	s, err := g.open()
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
	s.Logger = logger
	remotes, err := mf.remotes(s, logger)
	if err != nil {
		return err
	}
	ra := readahead.New()
	f := fsys.New(s, fsys.Options{Logger: logger, AllowOther: opts.AllowOther, ReadAhead: ra, Remotes: remotes})
	defer f.Close()
	opts.Go = f.MountOptions()
	opts.Raw = f.Raw
	opts.ReadAhead = ra
	srv, err := mount.Mount(dir, f.Root(), opts)
	if err != nil {
		return err
	}
	stopMemory := make(chan struct{})
	defer close(stopMemory)
	go holdMemory(stopMemory)
	mount.Ready(nil)
	f.ListRegistries()
	logger.Info("mounted", "store", s.Root(), "mountpoint", srv.Dir(), "pid", os.Getpid(), "version", version)
	err = srv.Serve()
	logger.Info("unmounted", "mountpoint", srv.Dir(), "err", err)
	return err
}

func newUmountCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "umount MOUNTPOINT",
		Aliases: []string{"unmount"},
		Short:   "Unmount an imgfs mount",
		Long: `Unmount the imgfs mount at MOUNTPOINT; its daemon then exits. umount (as root) and
fusermount3 -u do the same.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return mount.Unmount(args[0])
		},
	}
}
