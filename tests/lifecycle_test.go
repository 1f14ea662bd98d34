package tests

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imgfs/imgfs/store"
)

// newStore makes a store with one small image, test/one:latest.
func newStore(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "store")
	s, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := writeImage(s, "test/one", []entry{file("one.txt", 0o644, "one\n")}); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestUmount(t *testing.T) {
	st := newStore(t)
	mnt, pid := mountStore(t, st)
	if got := ok(t, mnt, "cat", "test/one/latest/layers/0/one.txt"); got != "one\n" {
		t.Fatalf("cat: %q", got)
	}
	// A second mount at the same place is refused.
	if r := imgfs(t, st, "mount", mnt); r.code != 1 || !strings.Contains(r.stderr, "already mounted") {
		t.Errorf("mounting twice: %+v", r)
	}
	imgfsOK(t, st, "umount", mnt)
	if typ := mountType(mnt); typ != "" {
		t.Errorf("still mounted (%s) after imgfs umount", typ)
	}
	if !waitFor(5*time.Second, func() bool { return !alive(pid) }) {
		t.Errorf("daemon %d still running after imgfs umount", pid)
	}
	if r := imgfs(t, st, "umount", mnt); r.code != 1 || !strings.Contains(r.stderr, "not mounted") {
		t.Errorf("umount of what is not mounted: %+v", r)
	}
	// The daemon logged where it was mounted and that it is done.
	log, _ := os.ReadFile(filepath.Join(st, ".imgfs", "mount.log"))
	if !strings.Contains(string(log), "msg=mounted") || !strings.Contains(string(log), "msg=unmounted") {
		t.Errorf("mount.log: %q", log)
	}
}

// TestDaemonLogPrivate: the daemon of a store that cannot hold its log logs in a private
// directory of the user's, never through a symlink someone else planted, neither at the
// log's path nor at its directory's.
func TestDaemonLogPrivate(t *testing.T) {
	st := newStore(t)
	// Root writes anywhere: a directory where the store's log would be keeps it out.
	if err := os.Mkdir(filepath.Join(st, ".imgfs", "mount.log"), 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	env := []string{"TMPDIR=" + tmp, "XDG_RUNTIME_DIR="}
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("precious\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	unchanged := func() {
		t.Helper()
		if data, err := os.ReadFile(victim); err != nil || string(data) != "precious\n" {
			t.Errorf("the file a planted symlink points to was written to: %q (%v)", data, err)
		}
	}
	uid := os.Geteuid()
	// The predictable path in the shared temp directory that imgfs once appended to.
	if err := os.Symlink(victim, filepath.Join(tmp, fmt.Sprintf("imgfs-mount-%d.log", uid))); err != nil {
		t.Fatal(err)
	}
	mnt := t.TempDir()
	r := runWith(t, "", env, imgfsBin, "--store", st, "mount", mnt)
	t.Cleanup(func() { unmountQuietly(mnt) })
	dir := filepath.Join(tmp, fmt.Sprintf("imgfs-%d", uid))
	logPath := filepath.Join(dir, "mount.log")
	if r.code != 0 || !strings.Contains(r.stdout, "log "+logPath+")") {
		t.Errorf("imgfs mount: %+v, want the log at %s", r, logPath)
	}
	imgfsOK(t, st, "umount", mnt)
	unchanged()
	if got := ok(t, "", "stat", "-c", "%a %u", dir); got != fmt.Sprintf("700 %d\n", uid) {
		t.Errorf("%s: mode and owner %q, want 700 %d", dir, got, uid)
	}
	if log, _ := os.ReadFile(logPath); !strings.Contains(string(log), "msg=mounted") {
		t.Errorf("%s: %q", logPath, log)
	}

	// The private directory itself planted, or made by someone else, or open to others:
	// refused, nothing written.
	other := t.TempDir()
	for _, c := range []struct {
		what string
		make func() error
	}{
		{"a symlink", func() error { return os.Symlink(other, dir) }},
		{"another user's", func() error {
			if err := os.Mkdir(dir, 0o700); err != nil {
				return err
			}
			return os.Chown(dir, 65534, 65534)
		}},
		{"open to others", func() error {
			if err := os.Mkdir(dir, 0o700); err != nil {
				return err
			}
			return os.Chmod(dir, 0o777)
		}},
	} {
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		if err := c.make(); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(victim, filepath.Join(dir, "mount.log")); err != nil {
			t.Fatal(err)
		}
		r := runWith(t, "", env, imgfsBin, "--store", st, "mount", mnt)
		if r.code != 1 || !strings.Contains(r.stderr, dir) {
			t.Errorf("imgfs mount with %s %s: %+v, want exit 1 naming it", c.what, dir, r)
		}
		if typ := mountType(mnt); typ != "" {
			unmountQuietly(mnt)
			t.Errorf("imgfs mount with %s %s mounted (%s)", c.what, dir, typ)
		}
		unchanged()
	}
	if ents, _ := os.ReadDir(other); len(ents) != 1 || ents[0].Name() != "mount.log" {
		t.Errorf("the directory a planted symlink points to: %v, want the planted mount.log alone", ents)
	}
}

func TestMountErrors(t *testing.T) {
	st := newStore(t)
	for _, c := range []struct{ mnt, want string }{
		{filepath.Join(t.TempDir(), "nope"), "no such file"},
		{filepath.Join(st, "index.json"), "not a directory"},
	} {
		r := imgfs(t, st, "mount", c.mnt)
		if r.code != 1 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("mount at %s: %+v, want exit 1 and %q", c.mnt, r, c.want)
		}
	}
	if r := imgfs(t, st, "mount"); r.code != 2 {
		t.Errorf("mount without a mount point: %+v", r)
	}
}

func TestSignals(t *testing.T) {
	st := newStore(t)
	mnt, pid := mountStore(t, st)
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if !waitFor(5*time.Second, func() bool { return mountType(mnt) == "" && !alive(pid) }) {
		t.Fatalf("after SIGTERM: mounted as %q, daemon alive %v", mountType(mnt), alive(pid))
	}

	// A daemon killed leaves a dead mount, which the next imgfs mount cleans up.
	pid = mountAt(t, st, mnt)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var stat syscall.Stat_t
	if !waitFor(5*time.Second, func() bool { return errors.Is(syscall.Stat(mnt, &stat), syscall.ENOTCONN) }) {
		t.Fatalf("after kill -9, stat of the mount point: %v", syscall.Stat(mnt, &stat))
	}
	mountAt(t, st, mnt)
	if got := ok(t, mnt, "cat", "test/one/latest/layers/0/one.txt"); got != "one\n" {
		t.Errorf("cat after remounting: %q", got)
	}
}

// TestRemountAfterKill: imgfs mount right after the daemon of the mount there was killed
// finds that mount dead, though the kernel still has the mount point's attributes cached,
// and mounts anew. Every trial must succeed.
func TestRemountAfterKill(t *testing.T) {
	st := newStore(t)
	mnt, pid := mountStore(t, st)
	one := filepath.Join(mnt, "test/one/latest/layers/0/one.txt")
	for i := range 5 {
		if got := ok(t, "", "cat", one); got != "one\n" {
			t.Fatalf("trial %d: cat: %q", i, got)
		}
		var stat syscall.Stat_t
		if err := syscall.Stat(mnt, &stat); err != nil { // the kernel now caches it
			t.Fatal(err)
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		r := imgfs(t, st, "mount", mnt)
		var ok bool
		if pid, ok = daemonPid(r.stdout); r.code != 0 || !ok {
			t.Errorf("trial %d: imgfs mount right after kill -9: %+v", i, r)
			// Mount again once the kernel no longer has it cached, for the next trial.
			if !waitFor(5*time.Second, func() bool { return errors.Is(syscall.Stat(mnt, &stat), syscall.ENOTCONN) }) {
				t.Fatalf("after kill -9, stat of the mount point: %v", syscall.Stat(mnt, &stat))
			}
			pid = mountAt(t, st, mnt)
		}
	}
	if got := ok(t, "", "cat", one); got != "one\n" {
		t.Errorf("cat after the last remount: %q", got)
	}
}

func TestStoreChanges(t *testing.T) {
	st := newStore(t)
	mnt, _ := mountStore(t, st)
	s, err := store.Open(st)
	if err != nil {
		t.Fatal(err)
	}
	ok(t, mnt, "ls", "test/one/latest") // looked at, so the kernel has it cached

	// An image imported while mounted shows.
	two := []entry{file("two.txt", 0o644, strings.Repeat("two\n", 50000))}
	if _, err := writeImage(s, "test/two:v1", two); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if !waitFor(2*time.Second, func() bool { return runIn(t, mnt, "ls", "test").stdout == "one\ntwo\n" }) {
		t.Fatalf("test/two not listed 2 s after import: %q", runIn(t, mnt, "ls", "test").stdout)
	}
	t.Logf("import showed after %v", time.Since(start))

	// A file open when its image is removed reads on; the image goes.
	fh, err := os.Open(filepath.Join(mnt, "test/two/v1/layers/0/two.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	head := make([]byte, 8)
	if _, err := io.ReadFull(fh, head); err != nil {
		t.Fatal(err)
	}
	imgfsOK(t, st, "rm", "test/two:v1")
	start = time.Now()
	if !waitFor(2*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(mnt, "test/two"))
		return errors.Is(err, os.ErrNotExist) && runIn(t, mnt, "ls", "test").stdout == "one\n"
	}) {
		t.Fatalf("test/two still there 2 s after rm: %q", runIn(t, mnt, "ls", "test").stdout)
	}
	t.Logf("rm showed after %v", time.Since(start))
	rest, err := io.ReadAll(fh)
	if err != nil {
		t.Fatalf("reading on after rm: %v", err)
	}
	if got := append(head, rest...); !bytes.Equal(got, two[0].body) {
		t.Errorf("read %d bytes after rm, want %d", len(got), len(two[0].body))
	}
}
