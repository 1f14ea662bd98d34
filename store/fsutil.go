package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
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
func commitTemp(f *os.File, dst string) (err error) {
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
	if err := f.Close(); err != nil {
		return err
	}
	dir := filepath.Dir(dst)
	if err := os.Rename(f.Name(), dst); errors.Is(err, os.ErrNotExist) {
		// The destination directory may be missing (.imgfs/index removed, a blob of a
		// new algorithm); the temp file is still there if Rename failed for that.
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if err := os.Rename(f.Name(), dst); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	return syncDir(dir)
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

// flock takes a flock of the given kind on .imgfs/<name>, creating the file, and returns
// the function that releases it.
func (s *Store) flock(name string, how int) (func(), error) {
	p := s.path(".imgfs", name)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
	if errors.Is(err, os.ErrNotExist) {
		if err = os.MkdirAll(filepath.Dir(p), 0o755); err == nil {
			f, err = os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("store: lock: %w", err)
	}
	for {
		err = syscall.Flock(int(f.Fd()), how)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("store: lock %s: %w", p, err)
	}
	// Closing the file releases the lock.
	return func() { f.Close() }, nil
}

// lockIndex takes the exclusive lock that index.json writers and GC hold.
func (s *Store) lockIndex() (func(), error) {
	s.mu.Lock()
	unlock, err := s.flock("lock", syscall.LOCK_EX)
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
func (s *Store) Hold() (release func(), err error) {
	return s.flock("gc.lock", syscall.LOCK_SH)
}
