package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// createTemp makes a temp file in .imgfs/tmp, recreating the directory if someone removed
// .imgfs (it is derived data and may be deleted at any time).
func (s *Store) createTemp(pattern string) (*os.File, error) {
	f, err := os.CreateTemp(s.tmpDir(), pattern)
	if errors.Is(err, os.ErrNotExist) {
		if err = os.MkdirAll(s.tmpDir(), 0o755); err == nil {
			f, err = os.CreateTemp(s.tmpDir(), pattern)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	return f, nil
}

// commitTemp makes the temp file f (written, not yet closed) the file dst: it sets the
// mode, fsyncs and closes f, renames it over dst and fsyncs dst's directory, so that after
// a crash dst is either absent/old or complete. f is removed on failure.
func commitTemp(f *os.File, dst string) error {
	if err := finishTemp(f); err != nil {
		return err
	}
	return placeTemp(f.Name(), dst)
}

// finishTemp makes the temp file f (written, not yet closed) ready to be renamed into
// place: it sets the mode, fsyncs and closes f. f is removed on failure.
func finishTemp(f *os.File) (err error) {
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
			err = fmt.Errorf("store: %w", err)
		}
	}()
	// CreateTemp makes 0600 files; blobs are readable by all, like the tools around us do.
	if err := f.Chmod(0o644); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return f.Close()
}

// placeTemp renames the finished temp file tmp over dst and fsyncs dst's directory. tmp
// is removed on failure.
func placeTemp(tmp, dst string) (err error) {
	defer func() {
		if err != nil {
			os.Remove(tmp)
			err = fmt.Errorf("store: %w", err)
		}
	}()
	dir := filepath.Dir(dst)
	err = os.Rename(tmp, dst)
	// The destination directory may be missing (.imgfs/index removed, a blob of a new
	// algorithm); the temp file is still there if Rename failed for that. Someone deleting
	// .imgfs/ again and again can remove the directory between MkdirAll and Rename: a few
	// tries, not one.
	for try := 0; errors.Is(err, os.ErrNotExist) && try < 8; try++ {
		// MkdirAll fails with ENOENT or EEXIST too when what it made or saw goes.
		if err = os.MkdirAll(dir, 0o755); err == nil || errors.Is(err, os.ErrNotExist) || errors.Is(err, os.ErrExist) {
			err = os.Rename(tmp, dst)
		}
	}
	if err != nil {
		return err
	}
	if err := syncDir(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		// ENOENT: the directory went after the rename (.imgfs/ deleted), and dst with
		// it; there is nothing left to make durable.
		return err
	}
	return nil
}

// removeTemp removes a temp file that is no longer wanted ("": none).
func removeTemp(tmp string) {
	if tmp != "" {
		os.Remove(tmp)
	}
}

// writeFileAtomic replaces path with data through a temp file.
func (s *Store) writeFileAtomic(path string, data []byte) error {
	f, err := s.createTemp(filepath.Base(path) + "-*")
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(f.Name())
		return fmt.Errorf("store: %w", err)
	}
	return commitTemp(f, path)
}

// syncDir fsyncs a directory so that a rename into it survives a crash.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		// EINVAL: the filesystem cannot sync directories; nothing more to do there.
		return err
	}
	return nil
}

// The store's locks are flocks on the store directory and on blobs/, not on files in
// .imgfs/: .imgfs/ is derived data that may be deleted at any time, and a lock file
// deleted while held is a lock that the next process takes anew on a new file, both then
// writing index.json at once and one losing the other's names. The store directory
// and blobs/ stay as long as the store has anything in it; neither is ever replaced, as
// a file can be by a rename over it. Each lock needs an object of its own, since an
// importer holds the GC lock (shared) while it takes the index lock (exclusive).
//
// On filesystems that emulate flock with fcntl locks (NFS) an exclusive lock needs a file
// open for writing, which a directory cannot be: there the locks are on the files
// .imgfs/lock and .imgfs/gc.lock, as they were, for want of better.

// lockDir takes a flock of the given kind on the directory dir of the store (created if
// missing), or on .imgfs/<fallback> where directories cannot be locked, and returns the
// function that releases it.
func (s *Store) lockDir(dir, fallback string, how int) (func(), error) {
	if !s.canLockDirs() {
		return s.flock(fallback, how)
	}
	p := s.path(dir)
	mkdir := ""
	if dir != "" {
		mkdir = p
	}
	return lockFile(p, mkdir, func() (*os.File, error) { return os.Open(p) }, how)
}

// canLockDirs reports whether the store's filesystem takes exclusive flocks on
// directories, found out once by trying one that does not wait. It is a property of the
// filesystem, so every process on the store comes to the same answer and takes the same
// locks; asking per lock would not do, as a shared lock on a directory works everywhere.
func (s *Store) canLockDirs() bool {
	s.dirLocksOnce.Do(func() {
		s.dirLocks = true
		f, err := os.Open(s.root)
		if err != nil {
			return // lockDir says why
		}
		defer f.Close() // releases the lock if the try took it
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); errors.Is(err, syscall.EBADF) {
			s.dirLocks = false
		}
	})
	return s.dirLocks
}

// flockFile is flock(2) on f, retried when a signal interrupts it.
func flockFile(f *os.File, how int) error {
	for {
		err := syscall.Flock(int(f.Fd()), how)
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}

// flock takes a flock of the given kind on .imgfs/<name>, creating the file, and returns
// the function that releases it: the locks where directories cannot be locked.
func (s *Store) flock(name string, how int) (func(), error) {
	p := s.path(".imgfs", name)
	return lockFile(p, filepath.Dir(p), func() (*os.File, error) { return os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644) }, how)
}

// lockFile flocks the file or directory p as open opens it, making the directory mkdir
// first when p is missing ("": never), and returns the function that releases the lock:
// closing p.
func lockFile(p, mkdir string, open func() (*os.File, error), how int) (func(), error) {
	f, err := open()
	if errors.Is(err, os.ErrNotExist) && mkdir != "" {
		if err = os.MkdirAll(mkdir, 0o755); err == nil {
			f, err = open()
		}
	}
	if err != nil {
		return nil, fmt.Errorf("store: lock: %w", err)
	}
	if err := flockFile(f, how); err != nil {
		f.Close()
		return nil, fmt.Errorf("store: lock %s: %w", p, err)
	}
	return func() { f.Close() }, nil
}

// lockIndex takes the exclusive lock that index.json writers and GC hold: a flock on the
// store directory.
func (s *Store) lockIndex() (func(), error) {
	s.mu.Lock()
	unlock, err := s.lockDir("", "lock", syscall.LOCK_EX)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	return func() { unlock(); s.mu.Unlock() }, nil
}

// Hold keeps GC from running, in this process and others, until release is called. An
// importer holds it from before its first WriteBlob until after its Tag: between the two,
// the blobs it wrote are not yet reachable from index.json and GC would delete them. Hold
// blocks while a GC runs. Do not call GC while holding it: GC would wait for ever.
// WriteBlob, PutLayerIndex and Tag hold it themselves for their own duration.
//
// It is a shared flock on blobs/, which GC locks exclusively.
func (s *Store) Hold() (release func(), err error) {
	return s.lockGC(syscall.LOCK_SH)
}

// lockGC takes the lock that GC holds exclusively and imports shared.
func (s *Store) lockGC(how int) (func(), error) {
	return s.lockDir("blobs", "gc.lock", how)
}

// writeBehind writes to f and asks the kernel to start writing each writeBehindChunk of it
// to disk as soon as it is written (sync_file_range, which does not wait), so that the
// fsync of finishTemp finds little left to write: a pull's blobs are then on disk when
// their last byte arrives, instead of the whole blob's writeback starting at the end.
type writeBehind struct {
	f          *os.File
	n, started int64
}

const writeBehindChunk = 8 << 20

func (w *writeBehind) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.n += int64(n)
	if w.n-w.started >= writeBehindChunk {
		// Only a hint: where it fails, fsync still writes it all.
		unix.SyncFileRange(int(w.f.Fd()), w.started, w.n-w.started, unix.SYNC_FILE_RANGE_WRITE)
		w.started = w.n
	}
	return n, err
}
