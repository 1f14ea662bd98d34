package overlay

import (
	"archive/tar"
	"bytes"
	"fmt"
	"math/rand/v2"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imgfs/imgfs/layerindex"
)

type E = layerindex.Entry

func layer(es ...E) *layerindex.Index { return &layerindex.Index{TOC: layerindex.NewTOC(es)} }

func dir(name string) E { return E{Name: name, Type: tar.TypeDir, Mode: 0o755} }

// file's size tags it, so that dumps show which entry a node shows.
func file(name string, size int64) E {
	return E{Name: name, Type: tar.TypeReg, Mode: 0o644, Size: size}
}

func link(name, target string) E { return E{Name: name, Type: tar.TypeLink, Linkname: target} }

func sym(name, target string) E { return E{Name: name, Type: tar.TypeSymlink, Linkname: target} }

func wh(name string) E { return file(name, 0) }

func merge(t *testing.T, layers ...*layerindex.Index) *Tree {
	t.Helper()
	tr, err := Merge(layers)
	if err != nil {
		t.Fatal(err)
	}
	check(t, tr)
	return tr
}

// dump lists the tree depth first: "path type layer size", synthetic directories as "d -1".
func dump(tr *Tree) string {
	var lines []string
	var walk func(n Node)
	walk = func(n Node) {
		for _, c := range tr.Children(n) {
			l, e := tr.Entry(c)
			switch {
			case l < 0:
				lines = append(lines, fmt.Sprintf("%s d -1", tr.Path(c)))
			case e.Type == tar.TypeDir:
				lines = append(lines, fmt.Sprintf("%s d %d", tr.Path(c), l))
			default:
				lines = append(lines, fmt.Sprintf("%s %c %d %d", tr.Path(c), e.Type, l, e.Size))
			}
			walk(c)
		}
	}
	walk(Root)
	return strings.Join(lines, "\n")
}

func expect(t *testing.T, tr *Tree, want ...string) {
	t.Helper()
	if got := dump(tr); got != strings.Join(want, "\n") {
		t.Errorf("tree:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
}

// check verifies the invariants every merged tree must hold.
func check(t *testing.T, tr *Tree) {
	t.Helper()
	checkTree(t, tr, false)
}

// checkTree verifies the invariants of a tree; raw is Layer's, which shows ".wh." names.
func checkTree(t *testing.T, tr *Tree, raw bool) {
	t.Helper()
	if tr.Parent(Root) != Root || tr.Name(Root) != "" || !tr.IsDir(Root) || tr.Path(Root) != "" {
		t.Fatalf("bad root")
	}
	seen := 1
	inodes := map[Node]uint32{}
	for i := range tr.Len() {
		n := Node(i)
		l, e := tr.Entry(n)
		if l < -1 {
			t.Fatalf("%q: entry (%d, %v)", tr.Path(n), l, e)
		}
		if tr.IsDir(n) != (e.Type == tar.TypeDir) {
			t.Errorf("%q: IsDir %v, entry type %c", tr.Path(n), tr.IsDir(n), e.Type)
		}
		if l < 0 && (e.Type != tar.TypeDir || e.Mode != 0o755 || e.UID != 0 || e.GID != 0 || e.ModTime.Unix() != 0) {
			t.Errorf("%q: bad synthetic entry %+v", tr.Path(n), e)
		}
		if toc, j := tr.Source(n); l < 0 && (toc != nil || j != -1) ||
			l >= 0 && (toc != tr.layers[l].TOC || j < 0 || j >= toc.Len() || !reflect.DeepEqual(toc.At(j), e)) {
			t.Errorf("%q: Source gives entry %d of %p, not the entry shown", tr.Path(n), j, toc)
		}
		if n != Root {
			name := tr.Name(n)
			if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") || !raw && strings.HasPrefix(name, ".wh.") {
				t.Errorf("%q: bad name %q", tr.Path(n), name)
			}
			if p := tr.Parent(n); !strings.HasSuffix(tr.Path(n), name) || p != Root && tr.Path(n) != tr.Path(p)+"/"+name {
				t.Errorf("%q: path does not match parent %q", tr.Path(n), tr.Path(p))
			}
		}
		kids := tr.Children(n)
		if !tr.IsDir(n) {
			if kids != nil {
				t.Errorf("%q: non-directory has children", tr.Path(n))
			}
			if _, ok := tr.Lookup(n, "x"); ok {
				t.Errorf("%q: Lookup in a non-directory", tr.Path(n))
			}
			inodes[tr.Inode(n)]++
			continue
		}
		seen += len(kids)
		dirs := uint32(0)
		for j, c := range kids {
			if tr.Parent(c) != n {
				t.Errorf("%q: child %q has parent %q", tr.Path(n), tr.Path(c), tr.Path(tr.Parent(c)))
			}
			if j > 0 && tr.Name(kids[j-1]) >= tr.Name(c) {
				t.Errorf("%q: children not sorted: %q, %q", tr.Path(n), tr.Name(kids[j-1]), tr.Name(c))
			}
			if got, ok := tr.Lookup(n, tr.Name(c)); !ok || got != c {
				t.Errorf("%q: Lookup(%q) = %d, %v; want %d", tr.Path(n), tr.Name(c), got, ok, c)
			}
			if tr.IsDir(c) {
				dirs++
			}
		}
		if tr.Nlink(n) != 2+dirs {
			t.Errorf("%q: dir nlink %d, want %d", tr.Path(n), tr.Nlink(n), 2+dirs)
		}
		if tr.Inode(n) != n {
			t.Errorf("%q: dir inode %d", tr.Path(n), tr.Inode(n))
		}
		if _, ok := tr.Lookup(n, "\xff-missing"); ok {
			t.Errorf("%q: found a missing name", tr.Path(n))
		}
	}
	if seen != tr.Len() {
		t.Errorf("%d nodes reachable, Len %d", seen, tr.Len())
	}
	for i := range tr.Len() {
		n := Node(i)
		if tr.IsDir(n) {
			continue
		}
		ino := tr.Inode(n)
		if tr.Inode(ino) != ino || tr.IsDir(ino) {
			t.Errorf("%q: inode %d is not its own inode", tr.Path(n), ino)
		}
		if tr.Nlink(n) != inodes[ino] {
			t.Errorf("%q: nlink %d, group of %d", tr.Path(n), tr.Nlink(n), inodes[ino])
		}
		l1, e1 := tr.Entry(n)
		l2, e2 := tr.Entry(ino)
		if l1 != l2 || !reflect.DeepEqual(e1, e2) {
			t.Errorf("%q: shows another entry than its inode %q", tr.Path(n), tr.Path(ino))
		}
	}
}

func find(t *testing.T, tr *Tree, p string) Node {
	t.Helper()
	n := Root
	for _, name := range strings.Split(p, "/") {
		c, ok := tr.Lookup(n, name)
		if !ok {
			t.Fatalf("%q: no %q", p, name)
		}
		n = c
	}
	return n
}

func TestLaterEntryWinsSameLayer(t *testing.T) {
	tr := merge(t, layer(dir("a/"), file("a/f", 1), file("a/f", 2), sym("a/s", "x"), file("a/s", 3)))
	expect(t, tr, "a d 0", "a/f 0 0 2", "a/s 0 0 3")
}

func TestLaterEntryWinsAcrossLayers(t *testing.T) {
	d := dir("a/")
	d.Mode, d.UID = 0o700, 7
	tr := merge(t,
		layer(dir("a/"), file("a/f", 1), file("a/g", 1)),
		layer(d, file("a/f", 2)),
		layer(sym("a/g", "f")))
	expect(t, tr, "a d 1", "a/f 0 1 2", "a/g 2 2 0")
	if _, e := tr.Entry(find(t, tr, "a")); e.Mode != 0o700 || e.UID != 7 {
		t.Errorf("a: %+v", e)
	}
}

func TestWhiteoutFile(t *testing.T) {
	tr := merge(t,
		layer(dir("a/"), file("a/f", 1), file("a/g", 1)),
		layer(wh("a/.wh.f"), wh("a/.wh.nothing")))
	expect(t, tr, "a d 0", "a/g 0 0 1")
}

func TestWhiteoutDirSubtree(t *testing.T) {
	tr := merge(t,
		layer(dir("a/"), dir("a/b/"), dir("a/b/c/"), file("a/b/c/f", 1), file("a/x", 1)),
		layer(file("a/b/c/g", 2)),
		layer(wh("a/.wh.b")))
	expect(t, tr, "a d 0", "a/x 0 0 1")
	if tr.Len() != 3 {
		t.Errorf("Len %d", tr.Len())
	}
}

func TestWhiteoutThenReadd(t *testing.T) {
	tr := merge(t,
		layer(dir("a/"), dir("a/b/"), file("a/b/old", 1), file("a/f", 1)),
		layer(wh("a/.wh.b"), dir("a/b/"), file("a/b/new", 2), wh("a/.wh.f"), file("a/f", 2)))
	expect(t, tr, "a d 0", "a/b d 1", "a/b/new 0 1 2", "a/f 0 1 2")

	// The same layer's entries stay when the whiteout comes after them in the tar.
	tr = merge(t,
		layer(dir("a/"), dir("a/b/"), file("a/b/old", 1), file("a/f", 1)),
		layer(file("a/b/new", 2), file("a/f", 2), wh("a/.wh.b"), wh("a/.wh.f")))
	expect(t, tr, "a d 0", "a/b d -1", "a/b/new 0 1 2", "a/f 0 1 2")
}

func TestOpaque(t *testing.T) {
	tr := merge(t,
		layer(dir("a/"), dir("a/d/"), file("a/d/f", 1), file("a/g", 1), file("keep", 1)),
		layer(file("a/early", 2), wh("a/.wh..wh..opq"), file("a/late", 2), dir("a/d/")),
		layer(file("a/top", 3)))
	expect(t, tr, "a d 0", "a/d d 1", "a/early 0 1 2", "a/late 0 1 2", "a/top 0 2 3", "keep 0 0 1")

	// An opaque marker in a directory no layer gave creates it.
	tr = merge(t, layer(file("x", 1)), layer(wh("n/.wh..wh..opq")))
	expect(t, tr, "n d -1", "x 0 0 1")
}

func TestTypeChanges(t *testing.T) {
	// file -> dir -> file, across layers.
	tr := merge(t, layer(file("p", 1)), layer(dir("p/"), file("p/in", 2)), layer(file("p", 3)))
	expect(t, tr, "p 0 2 3")

	// A directory over a file is a fresh directory; over a directory it keeps the children.
	tr = merge(t,
		layer(file("p", 1), dir("q/"), file("q/old", 1)),
		layer(dir("p/"), dir("q/"), file("q/new", 2)))
	expect(t, tr, "p d 1", "q d 1", "q/new 0 1 2", "q/old 0 0 1")

	// A file over a directory removes its subtree, within a layer too.
	tr = merge(t, layer(dir("d/"), dir("d/e/"), file("d/e/f", 1), sym("d", "elsewhere"), dir("x/"), file("x/f", 1), file("x", 2)))
	expect(t, tr, "d 2 0 0", "x 0 0 2")

	// An entry below a file replaces it with a synthetic directory; below a symlink it
	// goes where the symlink leads.
	tr = merge(t, layer(file("f", 1), sym("s", "/etc")), layer(file("f/g", 2), file("s/h", 2)))
	expect(t, tr, "etc d -1", "etc/h 0 1 2", "f d -1", "f/g 0 1 2", "s 2 0 0")
}

// TestSymlinkParents: symlinks in parent paths are followed inside the root, as an
// extractor chrooted into it follows them.
func TestSymlinkParents(t *testing.T) {
	// Merged /usr: a later layer adds lib/x, which is usr/lib/x.
	tr := merge(t,
		layer(dir("usr/"), dir("usr/lib/"), sym("lib", "usr/lib")),
		layer(file("lib/x", 2)))
	expect(t, tr, "lib 2 0 0", "usr d 0", "usr/lib d 0", "usr/lib/x 0 1 2")

	// Absolute targets start at the root, ".." stops at it, chains are followed, and a
	// missing target directory is created.
	tr = merge(t,
		layer(dir("etc/"), sym("abs", "/etc"), sym("up", "../../.."), sym("chain", "abs/"),
			sym("a/rel", "../new/./dir")),
		layer(file("abs/x", 2), file("up/owned", 2), file("chain/y", 2), file("a/rel/z", 2)))
	expect(t, tr, "a d -1", "a/rel 2 0 0", "abs 2 0 0", "chain 2 0 0", "etc d 0", "etc/x 0 1 2",
		"etc/y 0 1 2", "new d -1", "new/dir d -1", "new/dir/z 0 1 2", "owned 0 1 2", "up 2 0 0")

	// A loop drops the entry; a target naming a whiteout drops it too.
	tr = merge(t, layer(sym("l1", "l2"), sym("l2", "l1/"), sym("w", ".wh.x")), layer(file("l1/f", 2), file("w/f", 2)))
	expect(t, tr, "l1 2 0 0", "l2 2 0 0", "w 2 0 0")
	if tr.Dropped() != 2 {
		t.Errorf("dropped %d, want 2", tr.Dropped())
	}

	// Whiteouts and hard-link targets resolve their parents the same way.
	tr = merge(t,
		layer(dir("usr/"), dir("usr/lib/"), file("usr/lib/gone", 1), file("usr/lib/t", 1), sym("lib", "usr/lib")),
		layer(wh("lib/.wh.gone"), link("h", "lib/t")))
	expect(t, tr, "h 0 0 1", "lib 2 0 0", "usr d 0", "usr/lib d 0", "usr/lib/t 0 0 1")

	// A symlink replaced within a layer is not followed by a stale lookup.
	tr = merge(t, layer(dir("one/"), dir("two/"), sym("s", "one"), file("s/a", 1), sym("s", "two"), file("s/b", 1)))
	expect(t, tr, "one d 0", "one/a 0 0 1", "s 2 0 0", "two d 0", "two/b 0 0 1")
}

func TestHardLinkSameLayer(t *testing.T) {
	tr := merge(t, layer(dir("bin/"), file("bin/a", 5), link("bin/b", "bin/a"), link("./c", "./bin/b"), file("bin/z", 1)))
	expect(t, tr, "bin d 0", "bin/a 0 0 5", "bin/b 0 0 5", "bin/z 0 0 1", "c 0 0 5")
	a, b, c, z := find(t, tr, "bin/a"), find(t, tr, "bin/b"), find(t, tr, "c"), find(t, tr, "bin/z")
	for _, n := range []Node{a, b, c} {
		if tr.Inode(n) != a || tr.Nlink(n) != 3 {
			t.Errorf("%s: inode %d nlink %d, want %d, 3", tr.Path(n), tr.Inode(n), tr.Nlink(n), a)
		}
	}
	if tr.Inode(z) != z || tr.Nlink(z) != 1 {
		t.Errorf("z: inode %d nlink %d", tr.Inode(z), tr.Nlink(z))
	}
	if _, e := tr.Entry(b); e.Type != tar.TypeReg || e.Size != 5 {
		t.Errorf("b shows %+v", e)
	}
}

func TestHardLinkLowerLayer(t *testing.T) {
	tr := merge(t,
		layer(dir("usr/"), file("usr/x", 7), sym("usr/s", "x")),
		layer(link("y", "usr/x"), link("t", "/usr/s"), link("bad", "usr/missing"), link("bad2", "usr"), link("bad3", "./")))
	expect(t, tr, "t 2 0 0", "usr d 0", "usr/s 2 0 0", "usr/x 0 0 7", "y 0 0 7")
	if tr.Dropped() != 3 {
		t.Errorf("Dropped %d, want 3", tr.Dropped())
	}
	x, y := find(t, tr, "usr/x"), find(t, tr, "y")
	if tr.Inode(y) != x || tr.Nlink(x) != 2 || tr.Nlink(y) != 2 {
		t.Errorf("inode %d nlink %d/%d", tr.Inode(y), tr.Nlink(x), tr.Nlink(y))
	}
	if l, _ := tr.Entry(y); l != 0 {
		t.Errorf("y shows layer %d", l)
	}
}

func TestHardLinkTargetRemoved(t *testing.T) {
	// The target is whited out: the links keep its content and share an inode.
	tr := merge(t,
		layer(file("a", 1)),
		layer(link("b", "a"), link("c", "a")),
		layer(wh(".wh.a")))
	expect(t, tr, "b 0 0 1", "c 0 0 1")
	b, c := find(t, tr, "b"), find(t, tr, "c")
	if tr.Inode(b) != b || tr.Inode(c) != b || tr.Nlink(b) != 2 {
		t.Errorf("inodes %d %d nlink %d", tr.Inode(b), tr.Inode(c), tr.Nlink(b))
	}

	// The target is replaced: it leaves the group; the link keeps the old content.
	tr = merge(t, layer(file("a", 1), link("b", "a")), layer(file("a", 2)))
	expect(t, tr, "a 0 1 2", "b 0 0 1")
	a, b := find(t, tr, "a"), find(t, tr, "b")
	if tr.Inode(a) != a || tr.Inode(b) != b || tr.Nlink(a) != 1 || tr.Nlink(b) != 1 {
		t.Errorf("inodes %d %d nlinks %d %d", tr.Inode(a), tr.Inode(b), tr.Nlink(a), tr.Nlink(b))
	}

	// The target's directory is removed after the link; a link to a removed path is dropped.
	tr = merge(t, layer(dir("d/"), file("d/a", 1), link("b", "d/a")), layer(wh(".wh.d"), link("c", "d/a")))
	expect(t, tr, "b 0 0 1")
	if tr.Dropped() != 1 {
		t.Errorf("Dropped %d", tr.Dropped())
	}
}

func TestHostileNames(t *testing.T) {
	tr := merge(t, layer(
		file("../x", 1),
		file("/abs", 2),
		file("a/../../b", 3),
		file("../../../../etc/passwd", 4),
		file("//double//slash", 5),
		file("./.", 6), // a file as the root: dropped
		file("", 7),    // dropped
		file("nul\x00", 8),
		file("w/.wh.x/y", 9), // a whiteout as a directory: dropped
		wh("w/.wh."),         // dropped
		file(".wh..wh.plnk/123.4", 10),
		file(".wh..wh.aufs", 11),
		E{Name: "pax", Type: tar.TypeXGlobalHeader},
		E{Name: "vol", Type: tar.TypeGNUSparse},
		dir("."),
		dir("..")))
	expect(t, tr, "abs 0 0 2", "b 0 0 3", "double d -1", "double/slash 0 0 5", "etc d -1", "etc/passwd 0 0 4", "x 0 0 1")
	if tr.Dropped() != 6 {
		t.Errorf("Dropped %d, want 6", tr.Dropped())
	}
	for _, p := range []string{"../x", "/abs", "a/../../b", "./", "/", ".", "..", "a/..", "//a//b/", "./a/./b/", "a/b/..", "..a", ".../x"} {
		c := CleanPath(p)
		if strings.HasPrefix(c, "/") || c == ".." || strings.HasPrefix(c, "../") || strings.Contains(c, "//") || c == "." {
			t.Errorf("CleanPath(%q) = %q", p, c)
		}
	}
	if c := CleanPath("..a"); c != "..a" {
		t.Errorf("CleanPath(..a) = %q", c)
	}
}

func TestRoot(t *testing.T) {
	tr := merge(t, layer(file("f", 1)))
	if l, e := tr.Entry(Root); l != -1 || e.Type != tar.TypeDir || e.Mode != 0o755 || !e.ModTime.Equal(time.Unix(0, 0)) {
		t.Errorf("root: %d %+v", l, e)
	}
	r := dir("./")
	r.Mode, r.UID = 0o711, 3
	r2 := dir("/")
	r2.Mode = 0o700
	tr = merge(t, layer(r, file("f", 1)), layer(file("g", 1)))
	if l, e := tr.Entry(Root); l != 0 || e.Mode != 0o711 || e.UID != 3 {
		t.Errorf("root: %d %+v", l, e)
	}
	tr = merge(t, layer(r, file("f", 1)), layer(r2, wh(".wh..wh..opq"), file("g", 2)))
	expect(t, tr, "g 0 1 2")
	if l, e := tr.Entry(Root); l != 1 || e.Mode != 0o700 {
		t.Errorf("root: %d %+v", l, e)
	}
	if tr.Nlink(Root) != 2 {
		t.Errorf("root nlink %d", tr.Nlink(Root))
	}
}

func TestSyntheticDirs(t *testing.T) {
	tr := merge(t, layer(file("a/b/c/f", 1), dir("a/b/")), layer(wh("x/y/.wh.z")))
	expect(t, tr, "a d -1", "a/b d 0", "a/b/c d -1", "a/b/c/f 0 0 1", "x d -1", "x/y d -1")
	for _, p := range []string{"a", "a/b/c", "x/y"} {
		if l, e := tr.Entry(find(t, tr, p)); l != -1 || e.Mode != 0o755 || e.UID != 0 || e.GID != 0 {
			t.Errorf("%s: %d %+v", p, l, e)
		}
	}
	// A whiteout below a non-directory does nothing.
	tr = merge(t, layer(file("f", 1)), layer(wh("f/.wh.x"), wh("f/g/.wh..wh..opq")))
	expect(t, tr, "f 0 0 1")

	// A lower directory whited out while its own layer puts something below it stays,
	// without the lower layer's attributes.
	tr = merge(t, layer(dir("d/"), file("d/old", 1)), layer(file("d/new", 2), wh(".wh.d")))
	expect(t, tr, "d d -1", "d/new 0 1 2")
}

func TestChildrenLookupNlink(t *testing.T) {
	tr := merge(t, layer(file("z", 1), dir("b/"), file("B", 1), file("a", 1), dir("é/"), file("a.b", 1), dir("b/c/"), dir("b/d/"), file("b/e", 1)))
	var names []string
	for _, c := range tr.Children(Root) {
		names = append(names, tr.Name(c))
	}
	if want := []string{"B", "a", "a.b", "b", "z", "é"}; !slices.Equal(names, want) {
		t.Errorf("children %q, want %q", names, want)
	}
	b := find(t, tr, "b")
	if tr.Nlink(Root) != 4 || tr.Nlink(b) != 4 || tr.Nlink(find(t, tr, "b/c")) != 2 {
		t.Errorf("nlink root %d b %d", tr.Nlink(Root), tr.Nlink(b))
	}
	if _, ok := tr.Lookup(Root, "c"); ok {
		t.Error("found c")
	}
	if _, ok := tr.Lookup(find(t, tr, "z"), "x"); ok {
		t.Error("found z/x")
	}
	if c := tr.Children(find(t, tr, "é")); c == nil || len(c) != 0 {
		t.Errorf("empty dir children %v", c)
	}
	if tr.Path(find(t, tr, "b/e")) != "b/e" {
		t.Error(tr.Path(find(t, tr, "b/e")))
	}
}

// TestFromTar runs a tar written by archive/tar through layerindex.Build.
func TestFromTar(t *testing.T) {
	build := func(hs ...*tar.Header) *layerindex.Index {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, h := range hs {
			if h.Typeflag == tar.TypeReg {
				h.Size = int64(len(h.Name))
			}
			if err := tw.WriteHeader(h); err != nil {
				t.Fatal(err)
			}
			if h.Typeflag == tar.TypeReg {
				tw.Write([]byte(h.Name))
			}
		}
		tw.Close()
		ix, err := layerindex.Build(&buf, layerindex.BuildOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return ix
	}
	mt := time.Unix(1700000000, 0)
	l0 := build(
		&tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mt},
		&tar.Header{Name: "./bin/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mt},
		&tar.Header{Name: "./bin/sh", Typeflag: tar.TypeReg, Mode: 0o755, ModTime: mt,
			PAXRecords: map[string]string{"SCHILY.xattr.security.capability": "cap"}},
		&tar.Header{Name: "./bin/bash", Typeflag: tar.TypeLink, Linkname: "./bin/sh", ModTime: mt},
		&tar.Header{Name: "./etc/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mt},
		&tar.Header{Name: "./etc/old", Typeflag: tar.TypeReg, Mode: 0o644, ModTime: mt},
	)
	l1 := build(
		&tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o750, ModTime: mt},
		&tar.Header{Name: "etc/.wh..wh..opq", Typeflag: tar.TypeReg, ModTime: mt},
		&tar.Header{Name: "etc/new", Typeflag: tar.TypeReg, Mode: 0o644, ModTime: mt},
		&tar.Header{Name: "dev/null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3, ModTime: mt},
	)
	tr := merge(t, l0, l1)
	expect(t, tr, "bin d 0", "bin/bash 0 0 8", "bin/sh 0 0 8", "dev d -1", "dev/null 3 1 0", "etc d 1", "etc/new 0 1 7")
	sh := find(t, tr, "bin/sh")
	if tr.Inode(find(t, tr, "bin/bash")) != sh || tr.Nlink(sh) != 2 {
		t.Error("bash is not sh")
	}
	if _, e := tr.Entry(find(t, tr, "bin/bash")); len(e.Xattrs()) != 1 || e.Xattrs()[0].Value != "cap" {
		t.Errorf("bash xattrs %v", e.Xattrs())
	}
	if l, e := tr.Entry(Root); l != 0 || !e.ModTime.Equal(mt) {
		t.Errorf("root %d %v", l, e.ModTime)
	}
}

// TestRandom merges random layers of hostile names and checks the invariants.
func TestRandom(t *testing.T) {
	parts := []string{"a", "b", "c", "..", ".", "", ".wh.a", ".wh.b", ".wh..wh..opq", ".wh..wh.plnk", "/"}
	types := []byte{tar.TypeReg, tar.TypeDir, tar.TypeDir, tar.TypeSymlink, tar.TypeLink, tar.TypeLink, tar.TypeFifo}
	rng := rand.New(rand.NewPCG(1, 2))
	randPath := func() string {
		var b strings.Builder
		for range 1 + rng.IntN(4) {
			b.WriteString(parts[rng.IntN(len(parts))])
			if rng.IntN(3) > 0 {
				b.WriteByte('/')
			}
		}
		return b.String()
	}
	for range 300 {
		var layers []*layerindex.Index
		for range 1 + rng.IntN(4) {
			var es []E
			for range rng.IntN(30) {
				es = append(es, E{Name: randPath(), Type: types[rng.IntN(len(types))], Linkname: randPath(), Size: rng.Int64N(100)})
			}
			layers = append(layers, layer(es...))
		}
		merge(t, layers...)
		if t.Failed() {
			for i, l := range layers {
				for _, e := range l.TOC.All() {
					t.Logf("layer %d: %q %c %q", i, e.Name, e.Type, e.Linkname)
				}
			}
			return
		}
	}
}

// image generates a 3-layer image of about n entries: a base layer, an update with
// whiteouts and replacements, and a small top layer.
func image(n int) []*layerindex.Index {
	rng := rand.New(rand.NewPCG(7, 7))
	mt := time.Unix(1700000000, 0).UTC()
	var base, upd, top []E
	add := func(l *[]E, e E) {
		e.ModTime = mt
		e.Mode |= 0o644
		*l = append(*l, e)
	}
	var files []string
	add(&base, dir("./"))
	for d := 0; len(base) < n*2/3; d++ {
		dp := fmt.Sprintf("./usr/lib/pkg%03d/sub%d/", d/8, d%8)
		if d%8 == 0 {
			add(&base, dir(fmt.Sprintf("./usr/lib/pkg%03d/", d/8)))
		}
		add(&base, dir(dp))
		for f := range 10 + rng.IntN(20) {
			name := fmt.Sprintf("%sfile-%d.so", dp, f)
			switch rng.IntN(20) {
			case 0:
				add(&base, sym(name, "file-0.so"))
			case 1:
				if len(files) > 0 {
					add(&base, link(name, files[rng.IntN(len(files))]))
					continue
				}
				fallthrough
			default:
				add(&base, file(name, rng.Int64N(1<<20)))
				files = append(files, name)
			}
		}
	}
	for len(upd) < n/4 {
		f := files[rng.IntN(len(files))]
		i := strings.LastIndexByte(f, '/')
		switch rng.IntN(10) {
		case 0:
			add(&upd, wh(f[:i+1]+".wh."+f[i+1:]))
		case 1:
			add(&upd, link(f+".bak", f))
		default:
			add(&upd, file(f, 1))
		}
	}
	for len(top) < n-len(base)-len(upd) {
		add(&top, file(fmt.Sprintf("app/%d/f%d", len(top)/50, len(top)), 1))
	}
	return []*layerindex.Index{layer(base...), layer(upd...), layer(top...)}
}

func TestImage(t *testing.T) {
	layers := image(18000)
	tr := merge(t, layers...)
	if tr.Len() < 12000 || tr.Dropped() > 100 {
		t.Errorf("Len %d Dropped %d", tr.Len(), tr.Dropped())
	}
}

func BenchmarkMerge(b *testing.B) {
	layers := image(18000)
	entries := 0
	for _, l := range layers {
		entries += l.TOC.Len()
	}
	b.ReportAllocs()
	var tr *Tree
	for b.Loop() {
		var err error
		if tr, err = Merge(layers); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	// Heap the tree keeps, beyond the layers.
	tr = nil
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	tr, _ = Merge(layers)
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(tr.Len()), "bytes/node")
	b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/float64(tr.Len()), "alloc-bytes/node")
	b.ReportMetric(float64(tr.Len()), "nodes")
	b.ReportMetric(float64(entries), "entries")
	runtime.KeepAlive(tr)
}
