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
	"github.com/spf13/cobra"
)

// readyTimeout bounds how long imgfs mount waits for its daemon to serve.
const readyTimeout = 10 * time.Second

func newMountCmd(g *globals) *cobra.Command {
	var foreground, allowOther, debug bool
	cmd := &cobra.Command{
		Use:   "mount [flags] MOUNTPOINT",
		Short: "Mount the store's images as a read-only filesystem",
		Long: `Mount the images of the store at MOUNTPOINT, read-only, nosuid and nodev:

  MOUNTPOINT/busybox/latest/rootfs/      the image's files, layers overlaid
  MOUNTPOINT/busybox/latest/layers/N/    each layer's own files, whiteouts included
  MOUNTPOINT/busybox/latest/manifest.json, config.json
  MOUNTPOINT/sha256:<image ID prefix>/   any image by ID (not listed)

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
				return daemonize(cmd, g, dir, allowOther, debug)
			}
			err = serve(cmd, g, dir, mount.Options{AllowOther: allowOther, Debug: debug})
			mount.Ready(err) // if it failed before the mount was made
			return err
		},
	}
	cmd.Flags().BoolVarP(&foreground, "foreground", "f", false, "serve in the foreground, logging to stderr")
	cmd.Flags().BoolVar(&allowOther, "allow-other", false, "let other users in (allow_other, default_permissions)")
	cmd.Flags().BoolVar(&debug, "debug", false, "log every FUSE request")
	return cmd
}

// daemonize runs imgfs mount --foreground as a daemon and waits until it serves.
func daemonize(cmd *cobra.Command, g *globals, dir string, allowOther, debug bool) error {
	s, err := g.open()
	if err != nil {
		return err
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
func serve(cmd *cobra.Command, g *globals, dir string, opts mount.Options) error {
	s, err := g.open()
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
	s.Logger = logger
	ra := readahead.New()
	f := fsys.New(s, fsys.Options{Logger: logger, AllowOther: opts.AllowOther, ReadAhead: ra})
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
