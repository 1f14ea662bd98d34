package overlay

import (
	"archive/tar"
	"slices"
	"strings"
	"testing"

	"github.com/imgfs/imgfs/layerindex"
	"github.com/opencontainers/go-digest"
)

func withDiffID(ix *layerindex.Index, id string) *layerindex.Index {
	ix.DiffID = digest.FromString(id)
	return ix
}

func diffLines(t *testing.T, old, new *Tree, same SameContents) []string {
	t.Helper()
	cs, err := Diff(old, new, same)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, c := range cs {
		lines = append(lines, string(c.Kind)+" "+c.Path)
	}
	return lines
}

// TestDiff covers every kind of change, docker diff's recursion rules (all of an added
// directory, only the top of a deleted one) and the sort.
func TestDiff(t *testing.T) {
	x := func(e E, k, v string) E {
		e.PAXRecords = []layerindex.Record{{Key: "SCHILY.xattr." + k, Value: v}}
		return e
	}
	owned := func(e E, uid int) E { e.UID = uid; return e }
	moded := func(e E, m int64) E { e.Mode = m; return e }
	dev := func(name string, minor int64) E {
		return E{Name: name, Type: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: minor}
	}
	base := withDiffID(layer(
		dir("etc"), file("etc/same", 10), file("etc/contents", 11), file("etc/mode", 12), file("etc/owner", 13),
		file("etc/size", 14), file("etc/xattr", 15), sym("etc/sym", "a"), dev("dev-null", 3),
		file("file2dir", 16), dir("dir2file"), file("dir2file/kid", 17), sym("sym2file", "x"),
		dir("gone"), file("gone/a", 18), dir("gone/sub"), file("gone/sub/b", 19),
		dir("opq"), file("opq/old", 20), file("opq/kept", 21), file("lower", 22),
	), "base")
	// The same tree as another layer: every regular file is compared by contents.
	top := withDiffID(layer(
		dir("etc"), file("etc/same", 10), file("etc/contents", 11), moded(file("etc/mode", 12), 0o600),
		owned(file("etc/owner", 13), 1000), file("etc/size", 99), x(file("etc/xattr", 15), "user.k", "v"),
		sym("etc/sym", "b"), dev("dev-null", 4),
		dir("file2dir"), file("file2dir/new", 1), file("dir2file", 17), file("sym2file", 5),
		dir("opq"), file("opq/kept", 21), file("lower", 22), link("hard", "lower"),
		dir("new"), dir("new/deep"), file("new/deep/f", 2), file("a-b", 3),
	), "top")
	old := merge(t, base)
	new := merge(t, top)
	var asked []string
	same := func(ol int, o E, nl int, n E) (bool, error) {
		asked = append(asked, n.Name)
		return n.Name != "etc/contents", nil
	}
	got := diffLines(t, old, new, same)
	want := []string{
		"A /a-b", "C /dev-null", "C /dir2file", "C /etc/contents", "C /etc/mode", "C /etc/owner",
		"C /etc/size", "C /etc/sym", "C /etc/xattr", "C /file2dir", "A /file2dir/new", "D /gone",
		"A /hard", "A /new", "A /new/deep", "A /new/deep/f", "D /opq/old", "C /sym2file",
	}
	if !slices.Equal(got, want) {
		t.Errorf("diff:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	slices.Sort(asked)
	if want := []string{"etc/contents", "etc/same", "lower", "opq/kept"}; !slices.Equal(asked, want) {
		t.Errorf("contents compared for %q, want %q (regular files equal in all else)", asked, want)
	}

	// A tree over the same lower layer reads nothing of it: same layer, same offsets.
	upper := withDiffID(layer(file("etc/same", 10), dir("opq"), wh("opq/.wh..wh..opq"), file("opq/y", 1)), "upper")
	asked = nil
	got = diffLines(t, old, merge(t, base, upper), same)
	want = []string{"D /opq/kept", "D /opq/old", "A /opq/y"}
	if !slices.Equal(got, want) {
		t.Errorf("diff over a shared layer:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if len(asked) != 1 || asked[0] != "etc/same" {
		t.Errorf("contents compared for %q, want only etc/same (the upper layer's)", asked)
	}
	if got := diffLines(t, old, old, nil); len(got) != 0 {
		t.Errorf("a tree against itself: %q", got)
	}
}
