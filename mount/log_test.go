package mount

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestOpenLogNoSymlinks: OpenLog opens the store's log or a private one, never through a
// symlink, and never in a directory someone else could have put one in.
func TestOpenLogNoSymlinks(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	t.Setenv("XDG_RUNTIME_DIR", "")
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("precious\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	private := filepath.Join(tmp, fmt.Sprintf("imgfs-%d", os.Geteuid()), logName)
	open := func(store string) string {
		t.Helper()
		f, err := OpenLog(filepath.Join(store, ".imgfs"))
		if err != nil {
			t.Fatalf("OpenLog(%s): %v", store, err)
		}
		defer f.Close()
		if _, err := f.WriteString("line\n"); err != nil {
			t.Fatal(err)
		}
		return f.Name()
	}

	// The store's log.
	store := t.TempDir()
	if got, want := open(store), filepath.Join(store, ".imgfs", logName); got != want {
		t.Errorf("log at %s, want %s", got, want)
	}
	// The store's log a symlink, or .imgfs one: the private log instead.
	store = t.TempDir()
	if err := os.Mkdir(filepath.Join(store, ".imgfs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(store, ".imgfs", logName)); err != nil {
		t.Fatal(err)
	}
	if got := open(store); got != private {
		t.Errorf("store log a symlink: log at %s, want %s", got, private)
	}
	store = t.TempDir()
	elsewhere := t.TempDir()
	if err := os.Symlink(elsewhere, filepath.Join(store, ".imgfs")); err != nil {
		t.Fatal(err)
	}
	if got := open(store); got != private {
		t.Errorf(".imgfs a symlink: log at %s, want %s", got, private)
	}
	if ents, _ := os.ReadDir(elsewhere); len(ents) != 0 {
		t.Errorf("the directory .imgfs points to got %v", ents)
	}
	// A private log that is a symlink is refused.
	if err := os.Remove(private); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, private); err != nil {
		t.Fatal(err)
	}
	if f, err := OpenLog(filepath.Join(store, ".imgfs")); err == nil || !strings.Contains(err.Error(), private) {
		t.Errorf("private log a symlink: OpenLog = %v, %v; want an error naming it", f, err)
	}
	if data, _ := os.ReadFile(victim); string(data) != "precious\n" {
		t.Errorf("a symlink's target was written to: %q", data)
	}

	// $XDG_RUNTIME_DIR when it is ours and private, not when others may use it.
	xdg := t.TempDir()
	t.Setenv("XDG_RUNTIME_DIR", xdg)
	if err := os.Chmod(xdg, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(private); err != nil {
		t.Fatal(err)
	}
	if got := open(store); got != private {
		t.Errorf("$XDG_RUNTIME_DIR 0755: log at %s, want %s", got, private)
	}
	if err := os.Chmod(xdg, 0o700); err != nil {
		t.Fatal(err)
	}
	if got, want := open(store), filepath.Join(xdg, "imgfs", logName); got != want {
		t.Errorf("$XDG_RUNTIME_DIR 0700: log at %s, want %s", got, want)
	}
}
