package overlay

import (
	"archive/tar"
	"fmt"
	"testing"

	"github.com/imgfs/imgfs/layerindex"
)

// The rules of Layer are those fs's own builder of layers/N/ (rawTree) had; each test's
// expectation is what rawTree gave for the same entries.

func rawLayer(t *testing.T, es ...E) *Tree {
	t.Helper()
	tr, err := Layer(layer(es...))
	if err != nil {
		t.Fatal(err)
	}
	checkTree(t, tr, true)
	return tr
}

// links lists the paths' link counts and inodes: "path nlink inode-path".
func links(t *testing.T, tr *Tree, paths ...string) []string {
	var out []string
	for _, p := range paths {
		n := find(t, tr, p)
		out = append(out, fmt.Sprintf("%s %d %s", p, tr.Nlink(n), tr.Path(tr.Inode(n))))
	}
	return out
}

func TestLayerNamesCleaned(t *testing.T) {
	tr := rawLayer(t, dir("./"), file("/a", 1), dir("b/"), file("./b/../c", 2), file("../d", 3), file("b//e", 4))
	expect(t, tr, "a 0 0 1", "b d 0", "b/e 0 0 4", "c 0 0 2", "d 0 0 3")
	if l, _ := tr.Entry(Root); l != 0 {
		t.Errorf("root: layer %d, want the entry of ./", l)
	}
}

func TestLayerLaterEntryWins(t *testing.T) {
	f := dir("f/")
	f.Mode = 0o700
	tr := rawLayer(t, file("x", 1), file("x", 2),
		dir("d"), file("d/k", 3), file("d", 4), // a file over a directory: the subtree goes
		file("e", 5), dir("e"), // a directory over a file: empty
		dir("f"), file("f/k", 6), f) // a directory over a directory: its attributes only
	expect(t, tr, "d 0 0 4", "e d 0", "f d 0", "f/k 0 0 6", "x 0 0 2")
	if _, e := tr.Entry(find(t, tr, "f")); e.Mode != 0o700 {
		t.Errorf("f: mode %o, want the later entry's", e.Mode)
	}
}

// A path's missing directories are made up, and so are those where a non-directory
// stands: a symlink is never followed, wherever it points.
func TestLayerMadeUpParents(t *testing.T) {
	tr := rawLayer(t, file("a/b/c", 1), sym("s", "t"), dir("t"), file("s/x", 2),
		file("f", 3), file("f/y", 4), sym("abs", "/t"), file("abs/z", 5), sym("up", ".."), file("up/w", 6))
	expect(t, tr, "a d -1", "a/b d -1", "a/b/c 0 0 1", "abs d -1", "abs/z 0 0 5", "f d -1", "f/y 0 0 4",
		"s d -1", "s/x 0 0 2", "t d 0", "up d -1", "up/w 0 0 6")
}

func TestLayerHardLinks(t *testing.T) {
	tr := rawLayer(t, file("f", 1), link("l1", "f"),
		link("l0", "./g"), file("g", 2), // before its target
		link("chain", "l1"),
		link("dangling", "nope"), link("todir", "d"), dir("d"), link("self", "self"),
		sym("s", "."), link("viasym", "s/f"), // through a symlink: not followed
		file("h", 3), link("lh", "h"), file("h", 4), // the target replaced: the link shows the last
		link("toroot", "./"))
	expect(t, tr, "chain 0 0 1", "d d 0", "dangling 1 0 0", "f 0 0 1", "g 0 0 2", "h 0 0 4",
		"l0 0 0 2", "l1 0 0 1", "lh 0 0 4", "s 2 0 0", "self 1 0 0", "todir 1 0 0", "toroot 1 0 0", "viasym 1 0 0")
	got := fmt.Sprint(links(t, tr, "f", "l1", "chain", "g", "l0", "h", "lh", "dangling", "self", "viasym"))
	want := "[f 3 f l1 3 f chain 3 f g 2 g l0 2 g h 2 h lh 2 h dangling 1 dangling self 1 self viasym 1 viasym]"
	if got != want {
		t.Errorf("links:\n%s\nwant\n%s", got, want)
	}
}

// A link is followed through 16 links to links, no more.
func TestLayerHardLinkChain(t *testing.T) {
	es := []E{file("c00", 1)}
	for i := 1; i <= 17; i++ {
		es = append(es, link(fmt.Sprintf("c%02d", i), fmt.Sprintf("c%02d", i-1)))
	}
	tr := rawLayer(t, es...)
	if l, e := tr.Entry(find(t, tr, "c16")); l != 0 || e.Type != tar.TypeReg {
		t.Errorf("c16: %c, want the file 16 links away", e.Type)
	}
	if _, e := tr.Entry(find(t, tr, "c17")); e.Type != tar.TypeLink || tr.Nlink(find(t, tr, "c17")) != 1 {
		t.Errorf("c17: %c, want its own entry", e.Type)
	}
	if n := tr.Nlink(find(t, tr, "c00")); n != 17 {
		t.Errorf("c00: nlink %d, want 17", n)
	}
}

// Whiteouts are the files they are: nothing is removed, made opaque or ignored.
func TestLayerWhiteoutsAreFiles(t *testing.T) {
	tr := rawLayer(t, file("a", 1), file(".wh.a", 7), file("d/x", 2), file("d/.wh..wh..opq", 3),
		file(".wh..wh.plnk/y", 4), file(".wh.dir/z", 5), file("d/.wh.x", 6))
	expect(t, tr, ".wh..wh.plnk d -1", ".wh..wh.plnk/y 0 0 4", ".wh.a 0 0 7", ".wh.dir d -1", ".wh.dir/z 0 0 5",
		"a 0 0 1", "d d -1", "d/.wh..wh..opq 0 0 3", "d/.wh.x 0 0 6", "d/x 0 0 2")
}

// Every entry is a node, of whatever type: Merge leaves out PAX global headers and
// unknown types, a layer's own tree shows them as the non-directories they are.
func TestLayerOddTypes(t *testing.T) {
	es := []E{{Name: "pax_global_header", Type: tar.TypeXGlobalHeader, Size: 10}, {Name: "odd", Type: 'Z', Size: 3},
		file("f", 1), {Name: "q", Type: 'Z'}, file("q/r", 2)}
	tr := rawLayer(t, es...)
	expect(t, tr, "f 0 0 1", "odd Z 0 3", "pax_global_header g 0 10", "q d -1", "q/r 0 0 2")
	if tr.Dropped() != 0 {
		t.Errorf("Dropped %d", tr.Dropped())
	}
	if m, _ := Merge([]*layerindex.Index{layer(es...)}); m.Len() != 4 {
		t.Errorf("Merge: %d nodes, want the odd types left out", m.Len())
	}
}

func TestLayerRoot(t *testing.T) {
	root := E{Name: "", Type: tar.TypeDir, Mode: 0o711} // an empty name is the root's
	tr := rawLayer(t, dir("./"), file("./", 1), root, file("a", 2))
	if l, e := tr.Entry(Root); l != 0 || e.Mode != 0o711 {
		t.Errorf("root: layer %d mode %o, want the last directory's", l, e.Mode)
	}
	if tr.Dropped() != 1 { // the file named as the root: no node can show it
		t.Errorf("Dropped %d, want 1", tr.Dropped())
	}
	expect(t, tr, "a 0 0 2")
}
