package tests

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imgfs/imgfs/store"
	"github.com/opencontainers/go-digest"
)

func TestNames(t *testing.T) {
	f := sharedFixture(t)
	// Repositories by familiar name, host and path components as directories; images
	// by ID are not listed.
	if got, want := ok(t, f.mnt, "ls"), "ghcr.io\ntest\n"; got != want {
		t.Errorf("ls of the root: %q, want %q", got, want)
	}
	if got := ok(t, f.mnt, "find", ".", "-maxdepth", "4", "-name", "v*"); got != "./ghcr.io/acme/app/v2\n./test/app/v1\n" &&
		got != "./test/app/v1\n./ghcr.io/acme/app/v2\n" {
		t.Errorf("find the tags: %q", got)
	}
	want := "config.json\nexport.tar\nlayers\nmanifest.json\nrootfs\n"
	if got := ok(t, f.appDir(), "ls"); got != want {
		t.Errorf("ls of an image: %q, want %q", got, want)
	}
	if got, want := ok(t, filepath.Dir(f.appDir()), "ls"), "export.tar\nv1\n"; got != want {
		t.Errorf("ls of a repository: %q, want %q", got, want)
	}
	// Every directory lists "." and "..", as on a local disk.
	for _, d := range []string{f.mnt, f.appDir(), filepath.Join(f.appDir(), "layers"), filepath.Join(f.appDir(), "rootfs"),
		filepath.Join(f.appDir(), "layers", "0")} {
		if got := ok(t, d, "ls", "-a"); !strings.HasPrefix(got, ".\n..\n") {
			t.Errorf("ls -a %s: %q, want . and .. first", d, got)
		}
	}
	// An untagged image, by ID prefix and by whole ID; not by a prefix under 12 digits.
	for _, name := range []string{f.helloID[:7+12], f.helloID} {
		if got := ok(t, f.mnt, "ls", name+"/layers/0"); got != "hello\n" {
			t.Errorf("ls %s/layers/0: %q", name, got)
		}
	}
	if r := runIn(t, f.mnt, "ls", f.helloID[:7+11]); r.code == 0 {
		t.Errorf("ls of an 11-digit ID prefix worked: %q", r.stdout)
	}
	if r := runIn(t, f.mnt, "ls", "nope"); r.code == 0 || !strings.Contains(r.stderr, "No such file") {
		t.Errorf("ls nope: %+v", r)
	}
	// The same image by name and by ID.
	if ok(t, f.appDir(), "ls", "-lR", "layers") != ok(t, filepath.Join(f.mnt, f.app.id.String()), "ls", "-lR", "layers") {
		t.Error("test/app/v1 and its image ID list differently")
	}
}

// TestNameCollisions: names that docker allows but that meet a path the tree already
// gives: the tree wins, the image is reached by ID, and the daemon logs each such name once.
func TestNameCollisions(t *testing.T) {
	st := filepath.Join(t.TempDir(), "store")
	s, err := store.Open(st)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]digest.Digest{}
	for _, name := range []string{
		"test/coll:latest",
		"test/coll:export.tar",      // the repository's export.tar wins
		"test/coll/latest:x",        // test/coll/latest is test/coll:latest's directory
		"test/coll/export.tar:v1",   // test/coll/export.tar is the repository's export.tar
		"test/coll/latest/deeper:y", // below a hidden repository
	} {
		img, err := writeImage(s, name, []entry{file("name", 0o644, name+"\n")})
		if err != nil {
			t.Fatal(err)
		}
		ids[name] = img.id
	}
	mnt, _ := mountStore(t, st)
	coll := filepath.Join(mnt, "test", "coll")
	if got, want := ok(t, coll, "ls"), "export.tar\nlatest\n"; got != want {
		t.Errorf("ls test/coll: %q, want %q", got, want)
	}
	if got := ok(t, coll, "stat", "-c", "%F", "export.tar"); got != "regular file\n" {
		t.Errorf("test/coll/export.tar: %q, want the repository's export, a regular file", got)
	}
	// The repository's export has every tag, the hidden one too (docker save test/coll).
	manifest := ok(t, coll, "tar", "-xOf", "export.tar", "manifest.json")
	for _, tag := range []string{`"test/coll:latest"`, `"test/coll:export.tar"`} {
		if !strings.Contains(manifest, tag) {
			t.Errorf("test/coll/export.tar: manifest.json %s has no %s", manifest, tag)
		}
	}
	if got, want := ok(t, coll, "ls", "latest"), "config.json\nexport.tar\nlayers\nmanifest.json\nrootfs\n"; got != want {
		t.Errorf("ls test/coll/latest: %q, want the image's %q", got, want)
	}
	if got := ok(t, coll, "cat", "latest/layers/0/name"); got != "test/coll:latest\n" {
		t.Errorf("test/coll/latest is %q, want test/coll:latest", got)
	}
	if r := runIn(t, coll, "ls", "latest/x"); r.code == 0 {
		t.Errorf("ls test/coll/latest/x: %q, want no such file", r.stdout)
	}
	for name, id := range ids {
		if got := ok(t, mnt, "cat", id.String()+"/layers/0/name"); got != name+"\n" {
			t.Errorf("%s by ID: %q", name, got)
		}
	}

	// Logged once each, though index.json is read again.
	if _, err := writeImage(s, "test/other:v1", []entry{file("name", 0o644, "other\n")}); err != nil {
		t.Fatal(err)
	}
	if !waitFor(3*time.Second, func() bool { return runIn(t, mnt, "ls", "test").stdout == "coll\nother\n" }) {
		t.Fatalf("test/other not listed after import: %q", runIn(t, mnt, "ls", "test").stdout)
	}
	ok(t, coll, "ls", "-R")
	log, err := os.ReadFile(filepath.Join(st, ".imgfs", "mount.log"))
	if err != nil {
		t.Fatal(err)
	}
	for name, id := range ids {
		line := "name=" + name + " "
		want := 1
		if name == "test/coll:latest" {
			want = 0
		}
		if n := strings.Count(string(log), line); n != want {
			t.Errorf("mount.log has %q %d times, want %d:\n%s", line, n, want, log)
		} else if want == 1 && !strings.Contains(string(log), line+"path=") || want == 1 && !strings.Contains(string(log), "id="+id.String()) {
			t.Errorf("mount.log: no path and id for %s:\n%s", name, log)
		}
	}
}

func TestManifestAndConfig(t *testing.T) {
	f := sharedFixture(t)
	s, err := store.Open(f.store)
	if err != nil {
		t.Fatal(err)
	}
	for name, d := range map[string]string{"manifest.json": f.app.manifest.Digest.String(), "config.json": f.app.id.String()} {
		got, err := os.ReadFile(filepath.Join(f.appDir(), name))
		if err != nil {
			t.Fatal(err)
		}
		want, err := os.ReadFile(s.BlobPath(digest.Digest(d)))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from its blob", name)
		}
		if got := ok(t, f.appDir(), "stat", "-c", "%s %A", name); got != strconv.Itoa(len(want))+" -r--r--r--\n" {
			t.Errorf("stat %s: %q", name, got)
		}
	}
}

func TestLayerTree(t *testing.T) {
	f := sharedFixture(t)
	l0 := filepath.Join(f.appDir(), "layers", "0")
	got := strings.Split(strings.TrimSpace(ok(t, l0, "find", ".")), "\n")
	slices.Sort(got)
	want := []string{".", "./big", "./big/5m", "./bin", "./bin/cap", "./bin/link", "./bin/su", "./bin/tool",
		"./bin/tool2", "./dev", "./dev/fifo", "./dev/null", "./dev/tty300", "./etc", "./etc/hello.txt",
		"./gone.txt", "./old", "./old/a", "./old/b", "./opq", "./opq/x", "./tmp"}
	if !slices.Equal(got, want) {
		t.Errorf("find in layers/0:\n%q\nwant\n%q", got, want)
	}
	// What tar sees of it, as a user would copy the layer.
	r := runIn(t, "", "sh", "-c", "tar -cf - -C "+l0+" . | tar -tf - | LC_ALL=C sort")
	if r.code != 0 {
		t.Fatalf("tar of layers/0: %+v", r)
	}
	var tarWant []string
	for _, w := range want {
		if w == "." {
			tarWant = append(tarWant, "./")
			continue
		}
		if fi, err := os.Lstat(filepath.Join(l0, w)); err == nil && fi.IsDir() {
			w += "/"
		}
		tarWant = append(tarWant, w)
	}
	slices.Sort(tarWant)
	if got := strings.Split(strings.TrimSpace(r.stdout), "\n"); !slices.Equal(got, tarWant) {
		t.Errorf("tar -t of layers/0:\n%q\nwant\n%q", got, tarWant)
	}

	// Whiteouts show in layers/1 as the files they are.
	l1 := filepath.Join(f.appDir(), "layers", "1")
	got = strings.Split(strings.TrimSpace(ok(t, l1, "find", ".")), "\n")
	slices.Sort(got)
	want = []string{".", "./.wh.gone.txt", "./bin", "./bin/tool3", "./etc", "./etc/hello.txt", "./old", "./old/.wh.a", "./opq",
		"./opq/.wh..wh..opq", "./opq/y"}
	if !slices.Equal(got, want) {
		t.Errorf("find in layers/1:\n%q\nwant\n%q", got, want)
	}
	if got := ok(t, l1, "cat", "etc/hello.txt"); got != "hello again\n" {
		t.Errorf("layers/1/etc/hello.txt: %q", got)
	}
}

func TestAttributes(t *testing.T) {
	f := sharedFixture(t)
	l0 := filepath.Join(f.appDir(), "layers", "0")
	for _, c := range []struct{ path, want string }{
		{"bin/tool", "-rwxr-xr-x 0:0 20 2 1700000000 regular file 1"},
		{"bin/tool2", "-rwxr-xr-x 0:0 20 2 1700000000 regular file 1"},
		{"bin/su", "-rwsr-xr-x 0:0 7 1 1700000000 regular file 1"},
		{"bin/link", "lrwxrwxrwx 0:0 4 1 1700000000 symbolic link 0"},
		{"etc/hello.txt", "-rw-r----- 1000:1001 6 1 1700000000 regular file 1"},
		{"dev/fifo", "prw-r--r-- 0:0 0 1 1700000000 fifo 0"},
		{"dev/null", "crw-rw-rw- 0:0 0 1 1700000000 character special file 0"},
		{"tmp", "drwxrwxrwt 0:0 0 2 1700000000 directory 0"},
		{"big/5m", "-rw-r--r-- 0:0 5242880 1 1700000000 regular file 10240"},
	} {
		got := strings.TrimSpace(ok(t, l0, "stat", "-c", "%A %u:%g %s %h %Y %F %b", c.path))
		if got != c.want {
			t.Errorf("stat %s: %q, want %q", c.path, got, c.want)
		}
	}
	// Devices: major and minor (hex), the big minor too.
	if got := ok(t, l0, "stat", "-c", "%t %T", "dev/null", "dev/tty300"); got != "1 3\n4 12c\n" {
		t.Errorf("device numbers: %q", got)
	}
	// Hard links: one inode, two links; other files their own inode.
	inodes := strings.Fields(ok(t, l0, "stat", "-c", "%i", "bin/tool", "bin/tool2", "bin/su", "bin/cap"))
	if inodes[0] != inodes[1] || inodes[0] == inodes[2] || inodes[2] == inodes[3] {
		t.Errorf("inodes of tool, tool2, su, cap: %v", inodes)
	}
	// Stable: the same numbers again, and after the kernel forgot them.
	if again := strings.Fields(ok(t, l0, "stat", "-c", "%i", "bin/tool", "bin/tool2", "bin/su", "bin/cap")); !slices.Equal(again, inodes) {
		t.Errorf("inodes changed: %v then %v", inodes, again)
	}
	if got := ok(t, l0, "readlink", "bin/link"); got != "tool\n" {
		t.Errorf("readlink bin/link: %q", got)
	}
	// du counts the blocks of the files.
	if got := strings.Fields(ok(t, l0, "du", "-s", "--block-size=512", "big")); got[0] != "10240" {
		t.Errorf("du -s big: %v", got)
	}
}

func TestReads(t *testing.T) {
	f := sharedFixture(t)
	l0 := filepath.Join(f.appDir(), "layers", "0")
	for _, e := range layer0() {
		if e.hdr.Typeflag != '0' {
			continue
		}
		got, err := os.ReadFile(filepath.Join(l0, e.hdr.Name))
		if err != nil {
			t.Errorf("%s: %v", e.hdr.Name, err)
			continue
		}
		if !bytes.Equal(got, e.body) {
			t.Errorf("%s: %d bytes read differ from the %d written", e.hdr.Name, len(got), len(e.body))
		}
	}
	// Through a hard link, and with cmp (another program, other read sizes).
	if got := ok(t, l0, "cat", "bin/tool2"); got != "#!/bin/sh\necho tool\n" {
		t.Errorf("cat bin/tool2: %q", got)
	}
	big := filepath.Join(t.TempDir(), "5m")
	if err := os.WriteFile(big, bigFile, 0o644); err != nil {
		t.Fatal(err)
	}
	ok(t, l0, "cmp", "big/5m", big)
	// Random reads across the span boundary.
	fh, err := os.Open(filepath.Join(l0, "big/5m"))
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	for _, off := range []int64{4<<20 - 100, 17, 5<<20 - 10, 3 << 20} {
		buf := make([]byte, 200)
		n, _ := fh.ReadAt(buf, off)
		if want := bigFile[off:min(off+200, int64(len(bigFile)))]; !bytes.Equal(buf[:n], want) {
			t.Errorf("ReadAt %d: %d bytes, differ", off, n)
		}
	}
	// hello-world's binary, from a docker save archive.
	if got := ok(t, f.mnt, "sh", "-c", "head -c 4 "+f.helloID[:7+12]+"/layers/0/hello | od -An -c"); !strings.Contains(got, "E   L   F") {
		t.Errorf("hello is no ELF: %q", got)
	}
}

func TestXattrs(t *testing.T) {
	f := sharedFixture(t)
	l0 := filepath.Join(f.appDir(), "layers", "0")
	got := ok(t, l0, "getfattr", "-d", "-m", "-", "-e", "hex", "bin/cap")
	for _, want := range []string{
		"user.foo=0x626172",
		"security.capability=0x0100000200040000000000000000000000000000",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("getfattr bin/cap: %q lacks %q", got, want)
		}
	}
	if got := ok(t, l0, "getfattr", "-d", "-m", "-", "bin/tool"); got != "" {
		t.Errorf("getfattr bin/tool: %q, want none", got)
	}
	got = ok(t, f.appDir(), "getfattr", "-d", "-m", "-", "layers/1")
	for _, want := range []string{
		`user.imgfs.digest="` + f.app.layers[1].Digest.String() + `"`,
		`user.imgfs.diffid="` + f.app.diffIDs[1].String() + `"`,
		`user.imgfs.mediatype="application/vnd.oci.image.layer.v1.tar+gzip"`,
		fmt.Sprintf(`user.imgfs.fetched="%d/%d"`, f.app.layers[1].Size, f.app.layers[1].Size), // in blobs/
	} {
		if !strings.Contains(got, want) {
			t.Errorf("getfattr layers/1: %q lacks %q", got, want)
		}
	}
}

func TestReadOnly(t *testing.T) {
	f := sharedFixture(t)
	l0 := filepath.Join(f.appDir(), "layers", "0")
	for _, cmd := range []string{
		"touch bin/tool", "touch newfile", "mkdir newdir", "echo x > etc/hello.txt", "echo x >> etc/hello.txt",
		"rm bin/tool", "mv bin/tool bin/t", "chmod 600 bin/tool", "ln -s a b", "setfattr -n user.x -v 1 bin/tool",
	} {
		r := runIn(t, l0, "sh", "-c", cmd)
		if r.code == 0 || !strings.Contains(r.stderr, "Read-only file system") {
			t.Errorf("%s: exit %d, stderr %q; want Read-only file system", cmd, r.code, r.stderr)
		}
	}
	if r := runIn(t, f.mnt, "mkdir", "x"); r.code == 0 || !strings.Contains(r.stderr, "Read-only file system") {
		t.Errorf("mkdir at the root: %+v", r)
	}
}

func TestMountinfo(t *testing.T) {
	f := sharedFixture(t)
	opts, fstype, source, superOpts := mountinfo(f.mnt)
	for _, o := range []string{"ro", "nosuid", "nodev"} {
		if !slices.Contains(strings.Split(opts, ","), o) {
			t.Errorf("mount options %q lack %s", opts, o)
		}
	}
	if fstype != "fuse.imgfs" || source != "imgfs" {
		t.Errorf("mounted as type %q from %q, want fuse.imgfs from imgfs", fstype, source)
	}
	if !strings.HasPrefix(superOpts, "ro") {
		t.Errorf("superblock options %q", superOpts)
	}
	if got := ok(t, "", "mount"); !strings.Contains(got, "imgfs on "+f.mnt+" type fuse.imgfs (ro,nosuid,nodev") {
		t.Errorf("mount does not show %s: %q", f.mnt, got)
	}
}

// The kernel reads ahead 1 MiB in an export.tar, a request of max_read, but keeps its own
// read-ahead for the rest of the mount. It copies a file's read-ahead from the mount when it
// opens the file, which on an imgfs mount it does without asking the daemon once a file of
// rootfs/ has been opened; so the daemon raises the mount's value when it answers the
// lookup of an export.tar, and lowers it at the first read of one, or a second later.
func TestExportReadAhead(t *testing.T) {
	f := sharedFixture(t)
	ok(t, "", "cat", filepath.Join(f.mnt, "test/app/v1/rootfs/etc/hello.txt")) // no OPEN from here on
	dev := strings.TrimSpace(ok(t, "", "mountpoint", "-d", f.mnt))
	bdi := "/sys/class/bdi/" + dev + "/read_ahead_kb"
	idle := "128" // the kernel's
	back := func(what string) {
		t.Helper()
		for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			now := strings.TrimSpace(ok(t, "", "cat", bdi))
			if now == idle {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("read_ahead_kb is %s %s, want %s back", now, what, idle)
			}
		}
	}
	back("a second after the tests before looked at an export.tar")
	tarPath := filepath.Join(f.mnt, "test/app/v1/export.tar")
	// Opened: raised. The kernel's page cache may answer the read without the daemon, so
	// the value comes back by the read or the second after.
	if got := ok(t, "", "sh", "-c", `exec 3<"$1"; cat "$2"; head -c 1 <&3 >/dev/null`, "sh", tarPath, bdi); got != "1024\n" {
		t.Errorf("read_ahead_kb while export.tar is open: %q, want 1024", got)
	}
	back("after export.tar was read")
	ok(t, "", "stat", tarPath)
	if got := strings.TrimSpace(ok(t, "", "cat", bdi)); got != "1024" {
		t.Errorf("read_ahead_kb right after a stat of export.tar: %s, want 1024", got)
	}
	back("a second after a stat of export.tar")
}
