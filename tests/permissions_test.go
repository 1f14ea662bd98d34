package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgfs/imgfs/store"
)

// asNobody runs a program as uid/gid 65534 with no supplementary groups.
func asNobody(t *testing.T, name string, args ...string) result {
	t.Helper()
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Fatal("setpriv not found: apt-get install util-linux")
	}
	return runIn(t, "", "setpriv", append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", "--", name}, args...)...)
}

// TestAllowOther: without --allow-other only the mounting user sees the mount (FUSE's
// rule); with it, other users see it and the image's permissions are enforced
// (default_permissions) in rootfs/ and layers/N/, and nothing else gives them the bytes of
// a file they may not read: export.tar is the mount owner's only, the store is 0700.
func TestAllowOther(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("this test switches to another user: run it as root")
	}
	top := t.TempDir()
	st := filepath.Join(top, "store")
	s, err := store.Open(st)
	if err != nil {
		t.Fatal(err)
	}
	perm, err := writeImage(s, "test/perm", []entry{
		dir("secret/", 0o700), file("secret/key", 0o600, "key\n"),
		file("public", 0o644, "public\n"), file("private", 0o600, "private\n"),
	})
	if err != nil {
		t.Fatal(err)
	}
	// A new store is its owner's only: its blobs hold every file.
	if got := ok(t, "", "stat", "-c", "%a", st); got != "700\n" {
		t.Errorf("new store: mode %q, want 700", got)
	}
	mnt := filepath.Join(top, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	// nobody must be able to reach the mount point itself.
	for _, d := range []string{top, filepath.Dir(top)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	img := filepath.Join(mnt, "test", "perm", "latest", "rootfs")

	mountAt(t, st, mnt)
	if got := ok(t, "", "cat", filepath.Join(img, "public")); got != "public\n" {
		t.Errorf("root: cat public = %q", got)
	}
	if r := asNobody(t, "ls", mnt); r.code == 0 || !strings.Contains(r.stderr, "Permission denied") {
		t.Errorf("nobody: ls of a mount without --allow-other: %+v, want Permission denied", r)
	}
	imgfsOK(t, st, "umount", mnt)

	out := imgfsOK(t, st, "mount", "--allow-other", mnt)
	t.Cleanup(func() { unmountQuietly(mnt) })
	if !strings.Contains(out, "pid") {
		t.Errorf("imgfs mount --allow-other: %q", out)
	}
	opts, _, _, super := mountinfo(mnt)
	if !strings.Contains(super, "allow_other") || !strings.Contains(super, "default_permissions") {
		t.Errorf("--allow-other: superblock options %q, want allow_other and default_permissions (mount options %q)", super, opts)
	}
	if r := asNobody(t, "cat", filepath.Join(img, "public")); r.code != 0 || r.stdout != "public\n" {
		t.Errorf("nobody: cat public: %+v", r)
	}
	for _, p := range []string{"private", "secret/key"} {
		if r := asNobody(t, "cat", filepath.Join(img, p)); r.code == 0 || !strings.Contains(r.stderr, "Permission denied") {
			t.Errorf("nobody: cat %s: %+v, want Permission denied", p, r)
		}
	}
	if r := asNobody(t, "ls", filepath.Join(img, "secret")); r.code == 0 || !strings.Contains(r.stderr, "Permission denied") {
		t.Errorf("nobody: ls secret (0700): %+v, want Permission denied", r)
	}
	// Root still reads everything.
	if got := ok(t, "", "cat", filepath.Join(img, "secret/key")); got != "key\n" {
		t.Errorf("root: cat secret/key = %q", got)
	}

	// layers/N/ keeps each entry's mode and owner.
	layer := filepath.Join(mnt, "test", "perm", "latest", "layers", "0")
	if r := asNobody(t, "cat", filepath.Join(layer, "public")); r.code != 0 || r.stdout != "public\n" {
		t.Errorf("nobody: cat layers/0/public: %+v", r)
	}
	for _, p := range []string{"private", "secret/key"} {
		if r := asNobody(t, "cat", filepath.Join(layer, p)); r.code == 0 || !strings.Contains(r.stderr, "Permission denied") {
			t.Errorf("nobody: cat layers/0/%s: %+v, want Permission denied", p, r)
		}
	}
	// export.tar and layers/N.tar hold every file's bytes whatever their modes: the mount
	// owner's only. manifest.json and config.json hold no file's bytes: readable by all.
	for _, p := range []string{
		"test/perm/latest/export.tar", "test/perm/export.tar", perm.id.String() + "/export.tar",
		"test/perm/latest/layers/0.tar",
	} {
		p = filepath.Join(mnt, p)
		if r := asNobody(t, "head", "-c", "1", p); r.code == 0 || !strings.Contains(r.stderr, "Permission denied") {
			t.Errorf("nobody: read %s: %+v, want Permission denied", p, r)
		}
		want := fmt.Sprintf("400 %d %d\n", os.Getuid(), os.Getgid())
		if got := ok(t, "", "stat", "-c", "%a %u %g", p); got != want {
			t.Errorf("stat %s: mode, uid, gid %q, want %q", p, got, want)
		}
		if r := runIn(t, "", "head", "-c", "1", p); r.code != 0 || len(r.stdout) != 1 {
			t.Errorf("root: read %s: %+v", p, r)
		}
	}
	for _, p := range []string{"manifest.json", "config.json"} {
		if r := asNobody(t, "cat", filepath.Join(mnt, "test", "perm", "latest", p)); r.code != 0 || !strings.HasPrefix(r.stdout, "{") {
			t.Errorf("nobody: cat %s: %+v", p, r)
		}
	}
}
