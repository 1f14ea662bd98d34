// Package mount is the life of an imgfs mount: options, mounting (directly as root, else
// through fusermount3), serving until unmounted or signalled, unmounting, clean-up of a
// stale mount left by a killed daemon, and running as a daemon that reports back once the
// mount serves.
package mount

import (
	"bufio"
	"errors"
	"fmt"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/imgfs/imgfs/mount/readahead"
)

// FSType is the filesystem type of an imgfs mount, as /proc/self/mountinfo shows it.
const FSType = "fuse.imgfs"

// ErrMounted is returned by Mount when imgfs is already mounted there (and serving).
var ErrMounted = errors.New("imgfs is already mounted there")

// Options say how to mount.
type Options struct {
	// AllowOther lets users other than the mounter in (allow_other), with the kernel
	// checking permissions (default_permissions). Needs root or user_allow_other in
	// /etc/fuse.conf.
	AllowOther bool
	// Debug logs every FUSE request to stderr.
	Debug bool
	// Go is the go-fuse options of the tree (timeouts, root attributes); nil for defaults.
	Go *gofs.Options
	// ReadAhead, if set, is bound to the mount once it is made, and closed when serving
	// ends.
	ReadAhead *readahead.Switch
	// Raw, if set, gives the filesystem to serve from go-fuse's node API over the root
	// (gofs.NewNodeFS), which it may serve below.
	Raw func(fuse.RawFileSystem) fuse.RawFileSystem
}

// Server is a mounted imgfs.
type Server struct {
	dir  string
	srv  *fuse.Server
	sigs chan os.Signal // SIGTERM, SIGINT, SIGHUP, caught from before the mount is made

	readAhead *readahead.Switch
}

// Mount mounts root at dir, read-only, nosuid, nodev, and serves it. A stale imgfs mount
// at dir (its daemon killed) is unmounted first; a live one is ErrMounted.
func Mount(dir string, root gofs.InodeEmbedder, opts Options) (*Server, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := cleanOrLive(dir); err != nil {
		return nil, err
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("mount point: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("mount point %s is not a directory", dir)
	}
	o := gofs.Options{}
	if opts.Go != nil {
		o = *opts.Go
	}
	o.MountOptions = fuse.MountOptions{
		FsName:  "imgfs",
		Name:    "imgfs",
		Options: []string{"ro", "nosuid", "nodev"},
		Debug:   opts.Debug,
		// 1 MiB requests (max_read, and MaxPages on Linux >= 4.20): a read of a layer file
		// costs a round trip per MiB, not per 128 KiB.
		MaxWrite:     1 << 20,
		MaxReadAhead: 1 << 20,
		// Reads answer with bytes in memory, which go-fuse would otherwise first try to
		// splice, setting up a pipe on every reply only to give up on it.
		DisableSplice: true,
		// Symlinks never change inside an image: the kernel keeps their targets.
		EnableSymlinkCaching: true,
	}
	if opts.AllowOther {
		o.MountOptions.AllowOther = true
		o.MountOptions.Options = append(o.MountOptions.Options, "default_permissions")
	}
	if os.Geteuid() == 0 {
		// mount(2) ourselves: no fusermount3 needed. It falls back to fusermount3.
		o.MountOptions.DirectMount = true
		o.MountOptions.DirectMountFlags = syscall.MS_RDONLY | syscall.MS_NOSUID | syscall.MS_NODEV
	} else if _, err := exec.LookPath("fusermount3"); err != nil {
		return nil, errors.New("fusermount3 not found: install the fuse3 package")
	}
	if opts.Debug {
		o.MountOptions.Logger = log.New(os.Stderr, "fuse: ", log.LstdFlags)
	}
	// Catch the stop signals before the mount exists: one arriving in between would kill
	// the process and leave a dead mount behind.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	var raw fuse.RawFileSystem = gofs.NewNodeFS(root, &o)
	if opts.Raw != nil {
		raw = opts.Raw(raw)
	}
	srv, err := fuse.NewServer(raw, dir, &o.MountOptions)
	if err == nil {
		go srv.Serve()
		// On failure the serve loop ends by itself: there is no mount to read from.
		err = srv.WaitMount()
	}
	if err != nil {
		signal.Stop(sigs)
		return nil, fmt.Errorf("mounting %s: %w", dir, err)
	}
	if dev, _, ok := mountInfo(dir); ok {
		opts.ReadAhead.Bind(dev)
	}
	return &Server{dir: dir, srv: srv, sigs: sigs, readAhead: opts.ReadAhead}, nil
}

// Dir is the mount point.
func (s *Server) Dir() string { return s.dir }

// Unmount unmounts the filesystem. If it is busy (files open in it), it is detached
// (lazy unmount): gone from the tree now, served until the last file closes.
func (s *Server) Unmount() error {
	if err := s.srv.Unmount(); err != nil {
		if lerr := lazyUnmount(s.dir); lerr != nil {
			return fmt.Errorf("unmounting %s: %v (lazy: %v)", s.dir, err, lerr)
		}
	}
	return nil
}

// Serve serves until the filesystem is unmounted from outside, or SIGTERM, SIGINT or
// SIGHUP asks to stop, in which case it unmounts. It returns nil once unmounted.
func (s *Server) Serve() error {
	sigs := s.sigs
	defer signal.Stop(sigs)
	defer s.readAhead.Close()
	done := make(chan struct{})
	go func() {
		s.srv.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-sigs:
		if err := s.Unmount(); err != nil {
			return err
		}
		<-done
		return nil
	}
}

// Unmount unmounts the FUSE filesystem at dir, which need not be ours to serve: as root
// with umount(2), else with fusermount3 -u.
func Unmount(dir string) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	fstype, ok := MountedType(dir)
	if !ok {
		return fmt.Errorf("%s is not mounted", dir)
	}
	if !strings.HasPrefix(fstype, "fuse") {
		return fmt.Errorf("%s is a %s mount, not imgfs's", dir, fstype)
	}
	if os.Geteuid() == 0 {
		if err := syscall.Unmount(dir, 0); err != nil {
			return fmt.Errorf("unmounting %s: %w", dir, err)
		}
		return nil
	}
	out, err := exec.Command("fusermount3", "-u", dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("fusermount3 -u %s: %v: %s", dir, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// CleanStale unmounts (lazily) a FUSE mount at dir whose server is gone. It reports
// whether there was one.
func CleanStale(dir string) (bool, error) {
	if !dead(dir) {
		return false, nil
	}
	if err := lazyUnmount(dir); err != nil {
		return true, fmt.Errorf("cleaning up the stale mount at %s: %w", dir, err)
	}
	return true, nil
}

// cleanOrLive cleans up a stale mount at dir, and returns ErrMounted for a live imgfs
// mount there. A mount that answers is asked again for a second before it is taken
// for live: kill(2) returns before the process it kills is gone, and a daemon thread on
// another core may answer one more request (imgfs mount right after kill -9).
func cleanOrLive(dir string) error {
	for range 20 {
		if _, err := CleanStale(dir); err != nil {
			return err
		}
		if fstype, ok := MountedType(dir); !ok || fstype != FSType {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s: %w", dir, ErrMounted)
}

// dead reports whether dir is in a FUSE mount whose server is gone. It asks with
// statfs(2), which the kernel forwards to the server every time: a stat may be answered
// from the attributes the kernel cached (for a second on imgfs's root), and so take a mount
// whose daemon was just killed for a live one. A dead mount answers ENOTCONN ("transport
// endpoint is not connected"), or ECONNABORTED to a request that was waiting for the server
// as it died.
func dead(dir string) bool {
	var st syscall.Statfs_t
	err := syscall.Statfs(dir, &st)
	return errors.Is(err, syscall.ENOTCONN) || errors.Is(err, syscall.ECONNABORTED)
}

func lazyUnmount(dir string) error {
	if os.Geteuid() == 0 {
		return syscall.Unmount(dir, syscall.MNT_DETACH)
	}
	out, err := exec.Command("fusermount3", "-uz", dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("fusermount3 -uz: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// MountedType returns the filesystem type of the mount at dir (the topmost, if several
// are stacked), from /proc/self/mountinfo.
func MountedType(dir string) (string, bool) {
	_, fstype, ok := mountInfo(dir)
	return fstype, ok
}

// mountInfo returns the device number ("major:minor") and filesystem type of the mount at
// dir (the topmost, if several are stacked), from /proc/self/mountinfo.
func mountInfo(dir string) (dev, fstype string, found bool) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", "", false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source super
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 || unescapeMountinfo(fields[4]) != dir {
			continue
		}
		for i, fld := range fields {
			if fld == "-" && i+1 < len(fields) {
				dev, fstype, found = fields[2], fields[i+1], true
				break
			}
		}
	}
	return dev, fstype, found
}

// unescapeMountinfo undoes the octal escapes (\040 for space) of mountinfo paths.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			var v byte
			ok := true
			for _, c := range []byte(s[i+1 : i+4]) {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + (c - '0')
			}
			if ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
