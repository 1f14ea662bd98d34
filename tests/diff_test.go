package tests

import (
	"archive/tar"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/imgfs/imgfs/store"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// changes is the top layer of test/diff:changed: one of every kind of change to what
// layer0 and layer1 give.
func changes() []entry {
	xattr := file("bin/cap", 0o755, "#!/bin/sh\necho cap\n")
	xattr.hdr.PAXRecords = map[string]string{
		"SCHILY.xattr.user.foo":            "baz",
		"SCHILY.xattr.security.capability": string(capability),
	}
	owner := file("etc/hello.txt", 0o644, "hello again\n")
	owner.hdr.Uid = 1234
	return []entry{
		file("added.txt", 0o644, "new\n"),
		dir("newdir/", 0o750), dir("newdir/sub/", 0o755), file("newdir/sub/f", 0o600, "deep\n"),
		file(".wh.tmp", 0o644, ""),                         // a directory deleted
		file("bin/.wh.su", 0o644, ""),                      // a file deleted
		file("bin/tool", 0o755, "#!/bin/sh\necho TOOL\n"),  // contents only (same size)
		file("bin/tool2", 0o700, "#!/bin/sh\necho tool\n"), // mode only (out of its link group)
		owner,                                                    // owner only
		xattr,                                                    // an xattr only
		dir("old/b/", 0o755), file("old/b/inside", 0o644, "i\n"), // file -> directory
		file("big", 0o644, "no longer a directory\n"),                                                      // directory -> file
		{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/link", Linkname: "cap", Mode: 0o777}},       // link target
		{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/tool3", Linkname: "tool", Mode: 0o777}},     // file -> symlink
		{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "dev/null", Mode: 0o666, Devmajor: 1, Devminor: 5}}, // device numbers
		dir("etc/", 0o700), // a directory's mode
		{hdr: tar.Header{Typeflag: tar.TypeLink, Name: "hard", Linkname: "dev/fifo"}}, // a hard link into a lower layer
		dir("opq/", 0o755), file("opq/.wh..wh..opq", 0o644, ""), file("opq/z", 0o644, "z\n"), // opaque
	}
}

// TestDiff: imgfs diff lists exactly what a comparison of the two mounted rootfs/ trees
// finds with real tools (find and stat for type, mode, owner, size, link target and device
// numbers; getfattr for xattrs; diff -r for contents), by docker diff's rules: all of an
// added directory, only the top of a deleted one. Three pairs: an image and the same with
// one of every kind of change on top (shared layers: nothing of them is compared by
// contents); two images of the same files in different layers (every file compared by
// contents, one differs); and one argument, an image against its parent.
func TestDiff(t *testing.T) {
	getfattr := needProgram(t, "getfattr", "attr")
	diff := needProgram(t, "diff", "diffutils")
	tmp := t.TempDir()
	dir := filepath.Join(tmp, "store")
	s, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	gz := ocispec.MediaTypeImageLayerGzip
	write := func(name, mt string, layers ...[]entry) image {
		img, err := writeImageAs(s, name, mt, layers...)
		if err != nil {
			t.Fatal(err)
		}
		return img
	}
	write("test/diff:base", gz, layer0(), layer1())
	write("test/diff:changed", gz, layer0(), layer1(), changes())
	// The same files in one zstd layer after a file that shifts every offset, one file's
	// contents changed (same size, mode, owner).
	moved := append([]entry{file("first", 0o644, "shift\n")}, layer0()...)
	for i, e := range moved {
		if e.hdr.Name == "old/a" {
			moved[i] = file("old/a", 0o644, "A\n")
		}
	}
	write("test/diff:moved", ocispec.MediaTypeImageLayerZstd, moved)
	write("test/diff:layer0", gz, layer0())

	mnt, _ := mountStore(t, dir)
	rootfs := func(tag string) string { return filepath.Join(mnt, "test", "diff", tag, "rootfs") }

	for _, c := range []struct {
		args       []string
		base, next string
		want       []string // a few lines the list must have, to keep the test honest
	}{
		{[]string{"test/diff:base", "test/diff:changed"}, "base", "changed",
			[]string{"A /newdir/sub/f", "D /tmp", "C /bin/tool", "C /etc", "A /hard", "C /bin/tool3", "D /opq/y", "A /opq/z"}},
		{[]string{"test/diff:layer0", "test/diff:moved"}, "layer0", "moved", []string{"A /first", "C /old/a"}},
		{[]string{"test/diff:changed"}, "base", "changed", nil},
	} {
		want := treeDiff(t, getfattr, diff, rootfs(c.base), rootfs(c.next))
		for _, w := range c.want {
			if !slices.Contains(want, w) {
				t.Errorf("the tree comparison of %s and %s lacks %q: the fixture or the comparison is wrong", c.base, c.next, w)
			}
		}
		got := strings.Split(strings.TrimSuffix(imgfsOK(t, dir, append([]string{"diff"}, c.args...)...), "\n"), "\n")
		if !slices.Equal(got, want) {
			t.Errorf("imgfs diff %s:\n%s\nthe trees' comparison:\n%s", strings.Join(c.args, " "), strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
	// Parent of changed is base: the same image without its top layer.
	if a, b := imgfsOK(t, dir, "diff", "test/diff:changed"), imgfsOK(t, dir, "diff", "test/diff:base", "test/diff:changed"); a != b {
		t.Errorf("imgfs diff REF differs from imgfs diff PARENT REF:\n%s\n%s", a, b)
	}
	if got := imgfsOK(t, dir, "diff", "test/diff:base", "test/diff:base"); got != "" {
		t.Errorf("imgfs diff of an image with itself: %q", got)
	}
	js := imgfsOK(t, dir, "diff", "--format", "json", "test/diff:base", "test/diff:changed")
	if !strings.Contains(js, `"kind": "A",
    "path": "/newdir/sub/f",
    "size": 5`) {
		t.Errorf("imgfs diff --format json lacks /newdir/sub/f with its size:\n%s", js)
	}
	if r := imgfs(t, dir, "diff", "test/diff:base", "test/nothing:here"); r.code != 1 || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("imgfs diff with an unknown image: exit %d, stderr %q", r.code, r.stderr)
	}
}

// nodeMeta is what the tree comparison compares of a path: type, mode, owner, size (not
// for directories), link target, device numbers, xattrs.
type nodeMeta struct{ stat, xattrs string }

// treeMeta reads every path under root with find, stat and getfattr.
func treeMeta(t *testing.T, getfattr, root string) map[string]nodeMeta {
	t.Helper()
	out := map[string]nodeMeta{}
	list := ok(t, root, "find", ".", "-mindepth", "1", "-exec", "stat", "-c", "%n|%F|%a|%u|%g|%s|%t|%T|%N", "{}", "+")
	for _, l := range strings.Split(strings.TrimSpace(list), "\n") {
		f := strings.SplitN(l, "|", 9)
		p := strings.TrimPrefix(f[0], ".")
		if f[1] == "directory" {
			f[5] = "-" // a directory's size is imgfs's choice, not the image's
		}
		if f[1] != "symbolic link" {
			f[8] = "-"
		} else {
			f[8] = f[8][strings.Index(f[8], "->"):]
		}
		if f[1] != "character special file" && f[1] != "block special file" {
			f[6], f[7] = "-", "-"
		}
		out[p] = nodeMeta{stat: strings.Join(f[1:], "|")}
	}
	attrs := ok(t, root, "find", ".", "-mindepth", "1", "-exec", getfattr, "-h", "-d", "-m", "-", "-e", "hex", "{}", "+")
	for _, block := range strings.Split(attrs, "\n\n") {
		lines := strings.Split(strings.TrimSpace(block), "\n")
		if len(lines) < 2 {
			continue
		}
		// getfattr names "./x" as "x".
		p := "/" + strings.TrimPrefix(strings.TrimPrefix(lines[0], "# file: "), "./")
		m := out[p]
		m.xattrs = strings.Join(lines[1:], ",")
		out[p] = m
	}
	return out
}

// treeDiff is what real tools find between the trees at a and b, as docker diff lists it.
func treeDiff(t *testing.T, getfattr, diff, a, b string) []string {
	t.Helper()
	ma, mb := treeMeta(t, getfattr, a), treeMeta(t, getfattr, b)
	// diff -rq names the regular files whose contents differ.
	r := runIn(t, "", diff, "-rq", "--no-dereference", a, b)
	if r.code > 1 {
		t.Fatalf("diff -r: %+v", r)
	}
	differ := map[string]bool{}
	for _, l := range strings.Split(r.stdout, "\n") {
		if rest, ok := strings.CutPrefix(l, "Files "+a); ok {
			differ[rest[:strings.Index(rest, " and ")]] = true
		}
	}
	isDir := func(m map[string]nodeMeta, p string) bool {
		return p == "" || strings.HasPrefix(m[p].stat, "directory|")
	}
	var out []string
	for _, p := range slices.Sorted(maps.Keys(mb)) {
		old, ok := ma[p]
		switch {
		case !ok:
			out = append(out, "A "+p)
		case old != mb[p] || differ[p]:
			out = append(out, "C "+p)
		}
	}
	for p := range ma {
		parent := filepath.Dir(p)
		if parent == "/" {
			parent = ""
		}
		if _, ok := mb[p]; !ok && isDir(ma, parent) && isDir(mb, parent) {
			if _, inB := mb[parent]; inB || parent == "" {
				out = append(out, "D "+p)
			}
		}
	}
	slices.SortFunc(out, func(x, y string) int { return strings.Compare(x[2:], y[2:]) })
	return out
}
