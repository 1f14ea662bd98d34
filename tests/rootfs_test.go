package tests

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestRootfs: the layers overlaid as the OCI rules say, seen with find, stat, cat, cmp,
// readlink, getfattr, tar and du.
func TestRootfs(t *testing.T) {
	f := sharedFixture(t)
	root := filepath.Join(f.appDir(), "rootfs")
	got := strings.Split(strings.TrimSpace(ok(t, root, "find", ".")), "\n")
	slices.Sort(got)
	// gone.txt and old/a whited out, opq/ opaque (x hidden, y added), tool3 linked in layer 1.
	want := []string{".", "./big", "./big/5m", "./bin", "./bin/cap", "./bin/link", "./bin/su", "./bin/tool",
		"./bin/tool2", "./bin/tool3", "./dev", "./dev/fifo", "./dev/null", "./dev/tty300", "./etc", "./etc/hello.txt",
		"./old", "./old/b", "./opq", "./opq/y", "./tmp"}
	if !slices.Equal(got, want) {
		t.Errorf("find in rootfs:\n%q\nwant\n%q", got, want)
	}
	// The later layer wins: content, mode and owner of etc/hello.txt are layer 1's.
	if got := ok(t, root, "cat", "etc/hello.txt"); got != "hello again\n" {
		t.Errorf("rootfs/etc/hello.txt: %q", got)
	}
	if got := strings.TrimSpace(ok(t, root, "stat", "-c", "%A %u:%g", "etc/hello.txt")); got != "-rw-r--r-- 0:0" {
		t.Errorf("stat rootfs/etc/hello.txt: %q", got)
	}
	// A hard link from layer 1 into layer 0: one inode, three links, the target's bytes.
	inodes := strings.Fields(ok(t, root, "stat", "-c", "%i %h", "bin/tool", "bin/tool2", "bin/tool3"))
	if len(inodes) != 6 || inodes[0] != inodes[2] || inodes[0] != inodes[4] || inodes[1] != "3" || inodes[5] != "3" {
		t.Errorf("inode and nlink of tool, tool2, tool3: %v", inodes)
	}
	if got := ok(t, root, "cat", "bin/tool3"); got != "#!/bin/sh\necho tool\n" {
		t.Errorf("rootfs/bin/tool3: %q", got)
	}
	for _, c := range []struct{ path, want string }{
		{"bin/su", "-rwsr-xr-x 0:0 7"},
		{"bin/link", "lrwxrwxrwx 0:0 4"},
		{"dev/null", "crw-rw-rw- 0:0 0"},
		{"dev/fifo", "prw-r--r-- 0:0 0"},
		{"tmp", "drwxrwxrwt 0:0 0"},
	} {
		if got := strings.TrimSpace(ok(t, root, "stat", "-c", "%A %u:%g %s", c.path)); got != c.want {
			t.Errorf("stat rootfs/%s: %q, want %q", c.path, got, c.want)
		}
	}
	if got := ok(t, root, "readlink", "bin/link"); got != "tool\n" {
		t.Errorf("readlink: %q", got)
	}
	if got := ok(t, root, "getfattr", "-n", "user.foo", "--only-values", "bin/cap"); got != "bar" {
		t.Errorf("getfattr user.foo: %q", got)
	}
	// The 5 MiB file, read through the layer index, is the bytes written.
	data, err := os.ReadFile(filepath.Join(root, "big", "5m"))
	if err != nil || !bytes.Equal(data, bigFile) {
		t.Errorf("rootfs/big/5m: %d bytes, %v; want the 5 MiB written", len(data), err)
	}
	// tar of the whole rootfs, as `docker export` gives, lists the same tree.
	r := runIn(t, "", "sh", "-c", "tar -cf - -C "+root+" . | tar -tf - | wc -l")
	if r.code != 0 || strings.TrimSpace(r.stdout) != "21" {
		t.Errorf("tar -c rootfs | tar -t: %+v, want 21 entries", r)
	}
	if got := strings.Fields(ok(t, root, "du", "-s", "--block-size=512", "big")); got[0] != "10240" {
		t.Errorf("du -s rootfs/big: %v", got)
	}
	// No whiteout ever shows.
	if got := ok(t, root, "find", ".", "-name", ".wh.*"); got != "" {
		t.Errorf("whiteouts in rootfs: %q", got)
	}
}
