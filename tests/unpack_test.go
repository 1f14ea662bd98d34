package tests

import (
	"archive/tar"
	"encoding/base64"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// unpackBase is the mtime base of the unpack test images.
var unpackBase = time.Unix(1600000000, 0)

// big64 is the 64 MiB file: a 1 MiB pseudo-random block repeated, each copy stamped with
// its index so a read from the wrong offset shows.
func big64() []byte {
	block := make([]byte, 1<<20)
	r := rand.New(rand.NewChaCha8([32]byte{64}))
	for i := 0; i < len(block); i += 8 {
		v := r.Uint64()
		for j := range 8 {
			block[i+j] = byte(v >> (8 * j))
		}
	}
	b := make([]byte, 0, 64<<20)
	for i := range 64 {
		b = append(b, block...)
		copy(b[i<<20:], "block "+strconv.Itoa(i))
	}
	return b
}

var (
	long100   = "long/" + strings.Repeat("a", 120)                                           // name over 100 bytes
	long255   = "long/" + strings.Repeat("b", 255)                                           // a 255-byte component
	longPath  = "long/" + strings.Repeat("c", 200) + "/" + strings.Repeat("d", 200) + ".txt" // path over 255 bytes
	longDir   = "long/" + strings.Repeat("c", 200)
	longLinkT = "/" + strings.Repeat("t", 150) + "/" + strings.Repeat("u", 150) // symlink target over 255
)

// unpackLayers are the layers of the image compared with umoci's unpack.
func unpackLayers() [][]lent {
	capFile := lfile("bin/cap", 0o755, "#!/bin/sh\necho cap\n")
	capFile.hdr.PAXRecords = map[string]string{
		"SCHILY.xattr.user.foo":            "bar",
		"SCHILY.xattr.user.empty":          "",
		"SCHILY.xattr.security.capability": string(capability),
	}
	xdir := ldir("etc/xdir/", 0o750)
	xdir.hdr.PAXRecords = map[string]string{"SCHILY.xattr.user.dir": "on a directory"}
	owned := lfile("etc/owned", 0o640, "owned by 1000:1001\n")
	owned.hdr.Uid, owned.hdr.Gid = 1000, 1001
	nobody := lfile("etc/nobody", 0o600, "big ids\n")
	nobody.hdr.Uid, nobody.hdr.Gid = 65534, 100000
	ownedDir := ldir("home/user/", 0o700)
	ownedDir.hdr.Uid, ownedDir.hdr.Gid = 1000, 1000
	big := big64()
	// The root's own entry: without one, the root's mtime is the unpacker's choice (umoci
	// leaves it at 0).
	root := ldir("./", 0o751)
	root.hdr.ModTime = unpackBase.Add(-12345 * time.Second)
	l0 := []lent{
		root,
		ldir("bin/", 0o755),
		lfile("bin/tool", 0o755, "#!/bin/sh\necho tool\n"),
		llink("bin/tool2", "bin/tool"), // hard link in the same layer
		lsym("bin/link", "tool"),
		lfile("bin/su", 0o4755, "setuid\n"),
		lfile("bin/sg", 0o2755, "setgid\n"),
		lfile("bin/all", 0o7755, "setuid setgid sticky\n"),
		lfile("bin/sticky-file", 0o1644, "sticky file\n"),
		capFile,
		ldir("big/", 0o755),
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "big/64m", Mode: 0o644, Size: int64(len(big))}, body: big},
		ldir("dev/", 0o755),
		{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "dev/null", Mode: 0o666, Devmajor: 1, Devminor: 3}},
		{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "dev/tty300", Mode: 0o620, Devmajor: 4, Devminor: 300}},
		{hdr: tar.Header{Typeflag: tar.TypeBlock, Name: "dev/sda1", Mode: 0o660, Gid: 6, Devmajor: 8, Devminor: 1}},
		{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "dev/fifo", Mode: 0o644}},
		ldir("etc/", 0o755),
		xdir,
		lfile("etc/xdir/f", 0o644, "in xdir\n"),
		owned,
		nobody,
		ldir("home/", 0o755),
		ownedDir,
		lfile("home/user/.profile", 0o600, "export PS1=x\n"),
		ldir("empty/", 0o755),
		ldir("modes/", 0o755),
		ldir("modes/private/", 0o700),
		lfile("modes/private/secret", 0o400, "secret\n"),
		ldir("modes/ro/", 0o555),
		ldir("modes/ro/inner/", 0o511),
		lfile("modes/ro/inner/f", 0o444, "read only\n"),
		ldir("modes/odd/", 0o3750),
		ldir("tmp/", 0o1777),
		// a directory replaced by a file in layer 1, and a directory again in layer 2
		ldir("dirfile/", 0o755),
		ldir("dirfile/sub/", 0o755),
		lfile("dirfile/sub/deep", 0o644, "deep\n"),
		lfile("dirfile/inner", 0o644, "inner\n"),
		// opaque directories in layer 1
		ldir("opq/", 0o755),
		lfile("opq/old1", 0o644, "old1\n"),
		ldir("opq/sub/", 0o755),
		lfile("opq/sub/old2", 0o644, "old2\n"),
		ldir("opq2/", 0o755),
		lfile("opq2/old", 0o644, "old\n"),
		// whiteouts in layer 1
		ldir("wh/", 0o755),
		lfile("wh/gone", 0o644, "gone\n"),
		lfile("wh/readd", 0o644, "old readd\n"),
		ldir("wh/gonedir/", 0o755),
		lfile("wh/gonedir/f", 0o644, "f\n"),
		// hard link targets for layer 1
		ldir("lower/", 0o755),
		lfile("lower/target", 0o644, "lower target\n"),
		lfile("lower/replaced", 0o644, "lower replaced, old\n"),
		lfile("swap", 0o644, "a file, a symlink in layer 2\n"),
		// long names, long link targets
		ldir("long/", 0o755),
		lfile(long100, 0o644, "over 100\n"),
		lfile(long255, 0o644, "255\n"),
		ldir(longDir+"/", 0o755),
		lfile(longPath, 0o644, "over 255\n"),
		lsym("long/to-long-target", longLinkT),
		lsym("long/to-long-path", strings.TrimPrefix(longPath, "long/")),
		llink("long/hl-long", longPath),
		// non-ASCII and odd names
		ldir("unicode/", 0o755),
		lfile("unicode/héllo wörld.txt", 0o644, "latin\n"),
		ldir("unicode/日本語/", 0o755),
		lfile("unicode/日本語/ファイル", 0o644, "japanese\n"),
		lfile("unicode/emoji 🎉", 0o644, "party\n"),
		lsym("unicode/ссылка", "héllo wörld.txt"),
		lfile("unicode/tab\there", 0o644, "tab\n"),
		lsym("abs-link", "/etc/passwd"),
		lsym("dangling", "no/such/file"),
	}
	replaced := lfile("dup/f", 0o600, "second, wins\n")
	replaced.hdr.Uid, replaced.hdr.Gid = 7, 8
	l1 := []lent{
		// duplicate path in one layer: the later wins
		ldir("dup/", 0o755),
		lfile("dup/f", 0o644, "first\n"),
		replaced,
		ldir("dup/d/", 0o700),
		ldir("dup/d/", 0o755),
		// directory replaced by a file
		lfile("dirfile", 0o640, "now a file\n"),
		// opaque directory, marker first, then same-layer additions
		ldir("opq/", 0o755),
		lfile("opq/.wh..wh..opq", 0o644, ""),
		lfile("opq/new1", 0o644, "new1\n"),
		ldir("opq/sub/", 0o711),
		lfile("opq/sub/new2", 0o644, "new2\n"),
		// opaque directory with the additions before the marker
		ldir("opq2/", 0o755),
		lfile("opq2/new", 0o644, "new\n"),
		lfile("opq2/.wh..wh..opq", 0o644, ""),
		// whiteouts; a whiteout then a re-add in the same layer
		ldir("wh/", 0o755),
		lfile("wh/.wh.gone", 0o644, ""),
		lfile("wh/.wh.gonedir", 0o644, ""),
		lfile("wh/.wh.readd", 0o644, ""),
		lfile("wh/readd", 0o600, "new readd\n"),
		// hard links into the lower layer
		ldir("hl/", 0o755),
		llink("hl/to-lower", "lower/target"),
		llink("hl/to-replaced", "lower/replaced"),
		llink("hl/to-tool", "bin/tool"),
		lfile("etc/owned", 0o644, "owned, layer 1\n"),
	}
	l2 := []lent{
		// the file dirfile is a directory again
		ldir("dirfile/", 0o750),
		lfile("dirfile/again", 0o644, "again\n"),
		// a file replaced by a symlink
		lsym("swap", "bin/tool"),
		// a hard-linked lower file replaced: its link keeps the old content
		lfile("lower/replaced", 0o644, "lower replaced, new\n"),
		ldir("late/", 0o755),
		ldir("late/a/", 0o755),
		ldir("late/a/b/", 0o700),
		lfile("late/a/b/c", 0o644, "c\n"),
	}
	return [][]lent{l0, l1, l2}
}

// TestUnpackMatchesUmoci: the rootfs/ of an image with every rare case is the tree umoci
// unpacks from the same OCI layout, entry by entry, and so is a cp -a copy of it.
func TestUnpackMatchesUmoci(t *testing.T) {
	umoci, err := exec.LookPath("umoci")
	if err != nil {
		t.Fatal("umoci not found, the reference unpacker of this test: apt-get install umoci (or scripts/install-deps.sh)")
	}
	tmp := t.TempDir()
	layout := filepath.Join(tmp, "layout")
	if err := writeLayout(layout, "v1", unpackBase, unpackLayers()...); err != nil {
		t.Fatal(err)
	}
	store := filepath.Join(tmp, "store")
	imgfsOK(t, store, "import", "-q", "--name", "test/unpack", layout)
	mnt, _ := mountStore(t, store)
	rootfs := filepath.Join(mnt, "test", "unpack", "v1", "rootfs")

	ref := filepath.Join(tmp, "umoci")
	ok(t, "", umoci, "raw", "unpack", "--image", layout+":v1", ref)

	// umoci restores each directory's mtime after writing into it, so directory mtimes
	// compare. umoci 0.4.7 drops xattrs whose value is empty (bin/cap's user.empty), which
	// GNU tar --xattrs and imgfs keep: those are left out here and checked below.
	opts := cmpOpts{dirMtime: true, rootMeta: true, skipEmptyXattrs: true}
	diffs, err := compareTrees(rootfs, ref, opts)
	if err != nil {
		t.Fatal(err)
	}
	reportDiffs(t, "rootfs/ vs umoci raw unpack", diffs)

	// As a user would copy it.
	copyDir := filepath.Join(tmp, "copy")
	ok(t, "", "cp", "-a", rootfs+"/.", copyDir)
	diffs, err = compareTrees(copyDir, ref, opts)
	if err != nil {
		t.Fatal(err)
	}
	reportDiffs(t, "cp -a rootfs/. vs umoci raw unpack", diffs)

	// du --apparent-size counts directories at their st_size, which is the filesystem's
	// business (4096 on ext4); everything else must add up the same, hard links once.
	if got, want := duApparent(t, rootfs), duApparent(t, ref); got != want {
		t.Errorf("du -s --apparent-size less directory sizes: rootfs %d, umoci %d", got, want)
	}

	out := ok(t, rootfs, "getfattr", "-d", "-m", "-", "bin/cap")
	for _, want := range []string{`user.foo="bar"`, `user.empty=""`, "security.capability=0s" + base64.StdEncoding.EncodeToString(capability)} {
		if !strings.Contains(out, want) {
			t.Errorf("getfattr -d -m - rootfs/bin/cap: %q, want %s in it", out, want)
		}
	}
}

// duApparent is du -s -b --apparent-size of root, less the st_size of its directories.
func duApparent(t *testing.T, root string) int64 {
	t.Helper()
	f := strings.Fields(ok(t, "", "du", "-s", "-b", "--apparent-size", root))
	n, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		t.Fatalf("du: %q", f)
	}
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.IsDir() {
			n -= fi.Size()
		}
		return nil
	})
	return n
}

func reportDiffs(t *testing.T, what string, diffs []string) {
	t.Helper()
	if len(diffs) == 0 {
		return
	}
	if len(diffs) > 100 {
		diffs = append(diffs[:100], "...")
	}
	t.Errorf("%s: %d differences:\n%s", what, len(diffs), strings.Join(diffs, "\n"))
}

// TestHostileLayer: names that climb out of the root or are absolute land inside the image
// root, and symlinks pointing out of it are only symlinks.
func TestHostileLayer(t *testing.T) {
	tmp := t.TempDir()
	layout := filepath.Join(tmp, "layout")
	// A canary next to the layout: an escaping entry would land around here.
	if err := writeLayout(layout, "v1", unpackBase, []lent{
		lfile("../escape", 0o644, "escape\n"),
		lfile("/abs/file", 0o644, "abs\n"),
		lfile("a/../../b", 0o644, "b\n"),
		lfile("../../../../../../../../../tmp/imgfs-hostile-escape", 0o644, "deep escape\n"),
		lsym("passwd", "/etc/passwd"),
		lsym("up", "../../.."),
		lfile("ok", 0o644, "ok\n"),
	}); err != nil {
		t.Fatal(err)
	}
	store := filepath.Join(tmp, "store")
	imgfsOK(t, store, "import", "-q", "--name", "test/hostile", layout)
	mnt, _ := mountStore(t, store)
	img := filepath.Join(mnt, "test", "hostile", "v1")
	rootfs := filepath.Join(img, "rootfs")

	for name, want := range map[string]string{"escape": "escape\n", "abs/file": "abs\n", "b": "b\n",
		"tmp/imgfs-hostile-escape": "deep escape\n", "ok": "ok\n"} {
		got, err := os.ReadFile(filepath.Join(rootfs, name))
		if err != nil || string(got) != want {
			t.Errorf("rootfs/%s: %q, %v; want %q", name, got, err, want)
		}
	}
	for name, want := range map[string]string{"passwd": "/etc/passwd", "up": "../../.."} {
		fi, err := os.Lstat(filepath.Join(rootfs, name))
		if err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Errorf("rootfs/%s: %v, %v; want a symlink", name, fi, err)
			continue
		}
		if got, err := os.Readlink(filepath.Join(rootfs, name)); err != nil || got != want {
			t.Errorf("readlink rootfs/%s: %q, %v; want %q", name, got, err, want)
		}
	}
	if _, err := os.Stat("/tmp/imgfs-hostile-escape"); err == nil {
		t.Errorf("/tmp/imgfs-hostile-escape exists on the host")
	}
	for _, dir := range []string{tmp, filepath.Dir(tmp), mnt, img, filepath.Dir(img), "/"} {
		for _, name := range []string{"escape", "b"} {
			if _, err := os.Lstat(filepath.Join(dir, name)); err == nil {
				t.Errorf("%s exists outside the image root", filepath.Join(dir, name))
			}
		}
	}
	if _, err := os.Lstat("/abs/file"); err == nil {
		t.Error("/abs/file exists on the host")
	}
	// Nothing in the rootfs reads as the host's files, other than through the symlinks,
	// which a reader follows on its own side.
	passwd, _ := os.ReadFile("/etc/passwd")
	out := ok(t, rootfs, "find", ".", "-type", "f")
	for p := range strings.FieldsSeq(out) {
		data, err := os.ReadFile(filepath.Join(rootfs, p))
		if err != nil {
			t.Errorf("rootfs/%s: %v", p, err)
		} else if string(data) == string(passwd) {
			t.Errorf("rootfs/%s reads as the host's /etc/passwd", p)
		}
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(filepath.Join(rootfs, "up"), &st); err == nil && st.Mode&syscall.S_IFMT != syscall.S_IFLNK {
		t.Errorf("rootfs/up is not a symlink")
	}
	t.Logf("find rootfs:\n%s", ok(t, rootfs, "find", ".", "-printf", "%y %p -> %l\n"))
}

// TestUnpackThroughSymlinkMatchesUmoci: an entry whose parent path is a symlink is
// written where the symlink leads, resolved inside the image root, and the symlink stays,
// as umoci does (and docker, which extracts layers chrooted into the root). Merged-/usr
// images (lib -> usr/lib) with a later layer adding lib/x are the common case; symlinks to
// absolute paths or climbing out by .. resolve within the root.
func TestUnpackThroughSymlinkMatchesUmoci(t *testing.T) {
	umoci, err := exec.LookPath("umoci")
	if err != nil {
		t.Fatal("umoci not found, the reference unpacker of this test: apt-get install umoci (or scripts/install-deps.sh)")
	}
	tmp := t.TempDir()
	layout := filepath.Join(tmp, "layout")
	if err := writeLayout(layout, "v1", unpackBase, []lent{
		ldir("usr/", 0o755),
		ldir("usr/lib/", 0o755),
		ldir("usr/share/", 0o755),
		ldir("etc/", 0o755),
		lsym("lib", "usr/lib"),
		lsym("abs", "/etc"),
		lsym("up", "../../.."),
	}, []lent{
		lfile("lib/added", 0o644, "added through lib\n"),
		lfile("abs/x", 0o644, "through an absolute symlink\n"),
		lfile("up/owned", 0o644, "through a symlink climbing out\n"),
		lsym("share", "usr/share"),
		lfile("share/y", 0o644, "through a symlink of the same layer\n"),
	}); err != nil {
		t.Fatal(err)
	}
	store := filepath.Join(tmp, "store")
	imgfsOK(t, store, "import", "-q", "--name", "test/through", layout)
	mnt, _ := mountStore(t, store)
	rootfs := filepath.Join(mnt, "test", "through", "v1", "rootfs")
	ref := filepath.Join(tmp, "umoci")
	ok(t, "", umoci, "raw", "unpack", "--image", layout+":v1", ref)
	diffs, err := compareTrees(rootfs, ref, cmpOpts{dirMtime: true})
	if err != nil {
		t.Fatal(err)
	}
	reportDiffs(t, "entries below a symlinked parent (rootfs/ vs umoci raw unpack)", diffs)
	for _, p := range []string{"/owned", "/etc/x"} {
		if data, err := os.ReadFile(p); err == nil && strings.HasPrefix(string(data), "through") {
			t.Errorf("%s written on the host", p)
		}
	}
}

// TestUnpackToolBuiltImage: an image whose layers umoci itself generates (umoci unpack,
// changes on disk, umoci repack: its own tar writer and its own whiteouts for removals),
// then converted by skopeo to a docker-archive; both imported forms show a rootfs/ equal
// to umoci's unpack of the image.
func TestUnpackToolBuiltImage(t *testing.T) {
	umoci, err := exec.LookPath("umoci")
	if err != nil {
		t.Fatal("umoci not found, the image builder of this test: apt-get install umoci (or scripts/install-deps.sh)")
	}
	skopeo, err := exec.LookPath("skopeo")
	if err != nil {
		t.Fatal("skopeo not found: apt-get install skopeo (or scripts/install-deps.sh)")
	}
	tmp := t.TempDir()
	layout := filepath.Join(tmp, "layout")
	img := layout + ":v1"
	ok(t, "", umoci, "init", "--layout", layout)
	ok(t, "", umoci, "new", "--image", img)

	// Layer 1: a small system from the host's own files, and the rare kinds.
	b1 := filepath.Join(tmp, "b1")
	ok(t, "", umoci, "unpack", "--image", img, b1)
	r := filepath.Join(b1, "rootfs")
	script := `set -e
mkdir -p usr/bin usr/lib usr/share etc/app var/empty tmp dev
cp -a /usr/share/common-licenses usr/share/ 2>/dev/null || cp -a /etc/skel usr/share/common-licenses
cp -a /etc/passwd /etc/group etc/
cp -a "$(command -v tar)" usr/bin/tar
ln usr/bin/tar usr/bin/hardtar
ln -s usr/bin bin
ln -s usr/lib lib
ln -s /etc/passwd etc/app/abs-link
chmod 4755 usr/bin/tar
chmod 1777 tmp
chmod 0700 var/empty
mkfifo usr/share/fifo
mknod dev/null c 1 3
mknod dev/loop9 b 7 9
printf 'gone soon\n' > etc/app/old
mkdir etc/app/olddir && printf x > etc/app/olddir/f
printf 'é\n' > 'usr/share/naïve ✓'
setfattr -n user.note -v hello etc/app/old
setfattr -n user.dir -v yes etc/app
chown -R 1000:2000 etc/app
touch -h -d @1700000000 bin lib etc/app/abs-link
`
	ok(t, r, "sh", "-c", script)
	ok(t, "", umoci, "repack", "--image", img, b1)

	// Layer 2: removals (umoci writes whiteouts), a type change, a new file through the
	// merged-/usr symlink, a changed mode.
	b2 := filepath.Join(tmp, "b2")
	ok(t, "", umoci, "unpack", "--image", img, b2)
	r = filepath.Join(b2, "rootfs")
	script = `set -e
rm etc/app/old
rm -r etc/app/olddir
printf 'now a file\n' > etc/app/olddir
rm usr/share/fifo && mkdir usr/share/fifo
printf 'new lib\n' > lib/added
chmod 0600 etc/passwd
touch -d @1700000100 lib/added
`
	ok(t, r, "sh", "-c", script)
	ok(t, "", umoci, "repack", "--image", img, b2)

	ref := filepath.Join(tmp, "umoci")
	ok(t, "", umoci, "raw", "unpack", "--image", img, ref)
	archive := filepath.Join(tmp, "docker.tar")
	ok(t, "", skopeo, "copy", "-q", "oci:"+img, "docker-archive:"+archive+":test/built:v1")

	store := filepath.Join(tmp, "store")
	imgfsOK(t, store, "import", "-q", "--name", "test/built:oci", layout)
	imgfsOK(t, store, "import", "-q", archive)
	mnt, _ := mountStore(t, store)
	for _, tag := range []string{"oci", "v1"} {
		rootfs := filepath.Join(mnt, "test", "built", tag, "rootfs")
		diffs, err := compareTrees(rootfs, ref, cmpOpts{dirMtime: true, skipEmptyXattrs: true})
		if err != nil {
			t.Fatal(err)
		}
		reportDiffs(t, "rootfs/ of the umoci-built image ("+tag+") vs umoci raw unpack", diffs)
	}
	// The tree is not trivially equal: the removals and the additions are there.
	rootfs := filepath.Join(mnt, "test", "built", "oci", "rootfs")
	for p, want := range map[string]string{"usr/lib/added": "new lib\n", "etc/app/olddir": "now a file\n"} {
		if data, err := os.ReadFile(filepath.Join(rootfs, p)); err != nil || string(data) != want {
			t.Errorf("%s: %q %v, want %q", p, data, err, want)
		}
	}
	if _, err := os.Lstat(filepath.Join(rootfs, "etc/app/old")); !os.IsNotExist(err) {
		t.Errorf("etc/app/old: removed in layer 2, Lstat says %v", err)
	}
}
