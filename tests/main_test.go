// Package tests holds imgfs's end-to-end tests: a store made with the store API, mounted
// with the imgfs binary on a real FUSE mount, looked at with the programs a user would use.
package tests

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// imgfsBin is the imgfs binary TestMain builds.
var imgfsBin string

// programs the tests run, with the Debian package each comes in.
var programs = map[string]string{
	"fusermount3": "fuse3", "getfattr": "attr", "tar": "tar", "stat": "coreutils",
	"find": "findutils", "cmp": "diffutils",
}

func TestMain(m *testing.M) {
	os.Exit(func() int {
		var missing []string
		if _, err := os.Stat("/dev/fuse"); err != nil {
			missing = append(missing, "/dev/fuse (the fuse kernel module; package fuse3 for the tools)")
		}
		for prog, pkg := range programs {
			if _, err := exec.LookPath(prog); err != nil {
				missing = append(missing, fmt.Sprintf("%s (package %s)", prog, pkg))
			}
		}
		if len(missing) > 0 {
			slices.Sort(missing)
			fmt.Fprintf(os.Stderr, "FAIL: the end-to-end tests need %s: run scripts/install-deps.sh\n", strings.Join(missing, ", "))
			return 1
		}
		dir, err := os.MkdirTemp("", "imgfs-e2e-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		imgfsBin = filepath.Join(dir, "imgfs")
		goCmd, err := exec.LookPath("go")
		if err != nil {
			goCmd = "/usr/local/go/bin/go"
		}
		args := []string{"build", "-o", imgfsBin}
		if os.Getenv("IMGFS_RACE") != "" {
			// The daemons under the race detector, stopping at the first race: their mounts
			// die and the tests using them fail (the report is in the store's mount.log).
			args = append(args, "-race")
			os.Setenv("GORACE", "halt_on_error=1")
		}
		build := exec.Command(goCmd, append(args, "../cmd/imgfs")...)
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "building imgfs:", err)
			return 1
		}
		code := m.Run()
		sharedCleanup()
		stopDockerd()
		return code
	}())
}

// result is what a run of a program did.
type result struct {
	stdout, stderr string
	code           int
}

// runIn runs a program in dir ("" for the current one).
func runIn(t *testing.T, dir string, name string, args ...string) result {
	t.Helper()
	return runWith(t, dir, nil, name, args...)
}

// runWith runs a program in dir with env added to the environment.
func runWith(t *testing.T, dir string, env []string, name string, args ...string) result {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), append([]string{"LC_ALL=C"}, env...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return r
}

// ok runs a program in dir and fails the test unless it exits 0; it returns stdout.
func ok(t *testing.T, dir string, name string, args ...string) string {
	t.Helper()
	r := runIn(t, dir, name, args...)
	if r.code != 0 {
		t.Fatalf("%s %s: exit %d\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// imgfs runs imgfs --store store args...
func imgfs(t *testing.T, store string, args ...string) result {
	t.Helper()
	return runIn(t, "", imgfsBin, append([]string{"--store", store}, args...)...)
}

func imgfsOK(t *testing.T, store string, args ...string) string {
	t.Helper()
	return ok(t, "", imgfsBin, append([]string{"--store", store}, args...)...)
}

// mountStore mounts store at a new directory with imgfs mount (a daemon) and returns the
// mount point and the daemon's pid. The mount is taken down at the end of the test.
func mountStore(t *testing.T, store string) (string, int) {
	t.Helper()
	mnt := t.TempDir()
	pid := mountAt(t, store, mnt)
	t.Cleanup(func() { unmountQuietly(mnt) })
	return mnt, pid
}

// mountAt runs imgfs mount and returns the daemon's pid, from what it prints.
func mountAt(t *testing.T, store, mnt string) int {
	t.Helper()
	out := imgfsOK(t, store, "mount", mnt)
	pid, found := daemonPid(out)
	if !found {
		t.Fatalf("imgfs mount printed %q: no pid", out)
	}
	if typ := mountType(mnt); typ != "fuse.imgfs" {
		t.Fatalf("imgfs mount returned, but %s is mounted as %q", mnt, typ)
	}
	return pid
}

// daemonPid is the daemon's pid in what imgfs mount printed.
func daemonPid(out string) (int, bool) {
	_, rest, found := strings.Cut(out, "(pid ")
	pid, err := strconv.Atoi(strings.SplitN(rest, ",", 2)[0])
	return pid, found && err == nil
}

func unmountQuietly(mnt string) {
	if mountType(mnt) != "" {
		exec.Command(imgfsBin, "umount", mnt).Run()
		if mountType(mnt) != "" {
			exec.Command("umount", "-l", mnt).Run()
		}
	}
}

// mountinfo returns the fields of mnt's line in /proc/self/mountinfo: the mount options
// (field 6), and after the separator the type, source and superblock options.
func mountinfo(mnt string) (opts, fstype, source, superOpts string) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 10 || f[4] != mnt {
			continue
		}
		i := slices.Index(f, "-")
		if i < 0 || i+3 >= len(f) {
			continue
		}
		opts, fstype, source, superOpts = f[5], f[i+1], f[i+2], f[i+3]
	}
	return
}

func mountType(mnt string) string {
	_, t, _, _ := mountinfo(mnt)
	return t
}

// waitFor polls cond every 50 ms until it holds or d passes, and reports whether it held.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// alive reports whether process pid exists and is not a zombie.
func alive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(data), ") ")
	return !strings.HasPrefix(rest, "Z") && !strings.HasPrefix(rest, "X")
}

// The shared fixture: one store with the test images, mounted once for the tests that
// only look.
var (
	sharedOnce sync.Once
	shared     *fixture
	sharedErr  error
)

func sharedFixture(t *testing.T) *fixture {
	t.Helper()
	sharedOnce.Do(func() {
		shared, sharedErr = newFixture()
	})
	if sharedErr != nil {
		t.Fatal(sharedErr)
	}
	return shared
}

func sharedCleanup() {
	if shared != nil {
		shared.close()
	}
}
