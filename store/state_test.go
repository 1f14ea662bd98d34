package store

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// A state file is written whole into .imgfs (recreated if deleted), read back within its
// bound, and named only as a plain file there.
func TestStateFile(t *testing.T) {
	s := openStore(t)
	if _, err := s.ReadStateFile("cache.json", 100); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing state file: %v, want ErrNotExist", err)
	}
	if err := os.RemoveAll(s.StateDir()); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteStateFile("cache.json", []byte(`{"a":1}`)); err != nil {
		t.Fatal(err)
	}
	if got, err := s.ReadStateFile("cache.json", 100); err != nil || string(got) != `{"a":1}` {
		t.Errorf("read back %q, %v", got, err)
	}
	if _, err := os.Stat(filepath.Join(s.StateDir(), "cache.json")); err != nil {
		t.Error(err)
	}
	if _, err := s.ReadStateFile("cache.json", 3); err == nil {
		t.Error("a state file over its bound was read")
	}
	for _, bad := range []string{"", "../index.json", "a/b", ".hidden"} {
		if err := s.WriteStateFile(bad, nil); err == nil {
			t.Errorf("state file %q written", bad)
		}
	}
}
