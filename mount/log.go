package mount

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// logName is the daemon's log in the directory chosen for it.
const logName = "mount.log"

// OpenLog opens the daemon's log for appending (and reading back): mount.log in dir, the
// store's own directory (store.Store.StateDir), or, when that cannot be written (a
// read-only store, another user's), in a private directory of ours (see privateDir). The
// daemon may run as root: its log is only ever opened in a directory that no one else can
// write to, and never through a symlink, or someone else could choose the file it appends
// to.
func OpenLog(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o755); err == nil {
		if f, err := openLogIn(dir, 0o022); err == nil {
			return f, nil
		}
	}
	dir, err := privateDir()
	if err == nil {
		var f *os.File
		if f, err = openLogIn(dir, 0o077); err == nil {
			return f, nil
		}
	}
	return nil, fmt.Errorf("daemon log: %w", err)
}

// privateDir returns the directory for the log of a daemon whose store cannot have it:
// $XDG_RUNTIME_DIR/imgfs when $XDG_RUNTIME_DIR is a directory of ours that only we can use
// (what the XDG spec promises), else imgfs-<uid> in the temp directory. It creates the
// directory, mode 0700, if it is missing; one that is there already is checked when the
// log is opened in it (openLogIn), and refused if it is not as we would have made it.
func privateDir() (string, error) {
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("imgfs-%d", os.Geteuid()))
	if x := os.Getenv("XDG_RUNTIME_DIR"); filepath.IsAbs(x) {
		if d, err := openOwnDir(x, 0o077); err == nil {
			d.Close()
			dir = filepath.Join(x, "imgfs")
		}
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", err
	}
	return dir, nil
}

// openLogIn opens logName in dir for appending, creating it mode 0600, once dir is known
// to be a directory of ours that no one else can write to (openOwnDir: no mode bits of
// forbidden). The log is opened relative to the directory checked, whatever has become
// of dir's path since, and not if it is a symlink or anything but a regular file.
func openLogIn(dir string, forbidden uint32) (*os.File, error) {
	d, err := openOwnDir(dir, forbidden)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	p := filepath.Join(dir, logName)
	fd, err := syscall.Openat(int(d.Fd()), logName,
		syscall.O_RDWR|syscall.O_APPEND|syscall.O_CREAT|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: p, Err: err}
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		syscall.Close(fd)
		return nil, &fs.PathError{Op: "stat", Path: p, Err: err}
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		syscall.Close(fd)
		return nil, fmt.Errorf("%s is not a regular file", p)
	}
	// O_NONBLOCK was for the open only (a FIFO there must not hang it).
	if err := syscall.SetNonblock(fd, false); err != nil {
		syscall.Close(fd)
		return nil, &fs.PathError{Op: "fcntl", Path: p, Err: err}
	}
	return os.NewFile(uintptr(fd), p), nil
}

// openOwnDir opens dir, not following a symlink, if it is a directory owned by our
// effective uid and has none of the mode bits forbidden (0o022: no one else may write to
// it; 0o077: no one else may use it at all).
func openOwnDir(dir string, forbidden uint32) (*os.File, error) {
	fd, err := syscall.Open(dir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: dir, Err: err}
	}
	d := os.NewFile(uintptr(fd), dir)
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		d.Close()
		return nil, &fs.PathError{Op: "stat", Path: dir, Err: err}
	}
	if int(st.Uid) != os.Geteuid() || st.Mode&forbidden != 0 {
		d.Close()
		what := "write to"
		if forbidden&0o044 != 0 {
			what = "use"
		}
		return nil, fmt.Errorf("%s is not a directory that only uid %d can %s (owner %d, mode %#o)",
			dir, os.Geteuid(), what, st.Uid, st.Mode&0o7777)
	}
	return d, nil
}
