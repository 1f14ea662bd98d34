package store

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// ReadStateFile reads the file name in StateDir, at most maxSize bytes: a small file of
// imgfs's own that other packages keep there (a cache, never needed for correctness).
// A missing file is an error satisfying errors.Is(err, os.ErrNotExist).
func (s *Store) ReadStateFile(name string, maxSize int64) ([]byte, error) {
	p, err := s.statePath(name)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxSize+1))
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	if int64(len(data)) > maxSize {
		return nil, fmt.Errorf("store: %s: larger than %d bytes", p, maxSize)
	}
	return data, nil
}

// WriteStateFile replaces the file name in StateDir with data atomically, as the store
// writes its own files: a reader sees the old file or the new one, whole.
func (s *Store) WriteStateFile(name string, data []byte) error {
	p, err := s.statePath(name)
	if err != nil {
		return err
	}
	return s.writeFileAtomic(p, data)
}

// statePath is the path of the file name in StateDir; name is a plain file name.
func (s *Store) statePath(name string) (string, error) {
	if name == "" || name != filepath.Base(name) || strings.HasPrefix(name, ".") {
		return "", fmt.Errorf("store: state file name %q", name)
	}
	return filepath.Join(s.StateDir(), name), nil
}
