package overlay

import (
	"archive/tar"
	"slices"
	"strings"

	"github.com/imgfs/imgfs/layerindex"
)

// Change is one difference between two trees, as docker diff names it.
type Change struct {
	Path string // from the root, with a leading "/"
	Kind byte   // 'A' added, 'C' changed, 'D' deleted
	Node Node   // in the new tree for A and C, in the old one for D
}

// SameContents says whether two regular files of equal size have the same bytes: the one
// the old tree shows from entry o of its layer ol, and the one the new tree shows from
// entry n of its layer nl.
type SameContents func(ol int, o layerindex.Entry, nl int, n layerindex.Entry) (bool, error)

// Diff lists what new adds, changes and deletes relative to old, sorted by path, by docker
// diff's rules: everything below an added directory is added too, but below a deleted one
// (or one that is no longer a directory) only the directory is deleted. A node changes when
// its type, mode, owner, size, link target, device numbers or extended attributes differ,
// or when the contents of a regular file differ. Contents are compared (with same) only
// where all the rest is equal and the two files come from different bytes: a file both
// trees take from the same layer (by diffID) at the same offset is equal unread. A hard
// link's identity and link count are not compared: each link is a file like any other.
func Diff(old, new *Tree, same SameContents) ([]Change, error) {
	d := differ{old: old, new: new, same: same}
	if err := d.dir(Root, Root); err != nil {
		return nil, err
	}
	slices.SortFunc(d.out, func(a, b Change) int { return strings.Compare(a.Path, b.Path) })
	return d.out, nil
}

type differ struct {
	old, new *Tree
	same     SameContents
	out      []Change
}

func (d *differ) add(t *Tree, n Node, kind byte) {
	d.out = append(d.out, Change{Path: "/" + t.Path(n), Kind: kind, Node: n})
}

// dir compares the children of directory o (old) and n (new).
func (d *differ) dir(o, n Node) error {
	for _, nc := range d.new.Children(n) {
		oc, ok := d.old.Lookup(o, d.new.Name(nc))
		if !ok {
			d.added(nc)
			continue
		}
		changed, err := d.changed(oc, nc)
		if err != nil {
			return err
		}
		if changed {
			d.add(d.new, nc, 'C')
		}
		if !d.new.IsDir(nc) {
			continue
		}
		if !d.old.IsDir(oc) {
			for _, k := range d.new.Children(nc) {
				d.added(k)
			}
			continue
		}
		if err := d.dir(oc, nc); err != nil {
			return err
		}
	}
	for _, oc := range d.old.Children(o) {
		if _, ok := d.new.Lookup(n, d.old.Name(oc)); !ok {
			d.add(d.old, oc, 'D')
		}
	}
	return nil
}

// added lists n and, for a directory, everything below it.
func (d *differ) added(n Node) {
	d.add(d.new, n, 'A')
	for _, k := range d.new.Children(n) {
		d.added(k)
	}
}

// kind is a node's type for comparing: a regular file whatever its typeflag spelling.
func kind(t *Tree, n Node, e *layerindex.Entry) byte {
	if t.IsDir(n) {
		return tar.TypeDir
	}
	switch e.Type {
	case tar.TypeReg, tar.TypeRegA, tar.TypeCont:
		return tar.TypeReg
	}
	return e.Type
}

func (d *differ) changed(o, n Node) (bool, error) {
	ol, oe := d.old.Entry(o)
	nl, ne := d.new.Entry(n)
	if ol >= 0 && nl >= 0 && oe.Offset == ne.Offset && d.old.layers[ol].DiffID == d.new.layers[nl].DiffID {
		return false, nil // the same entry of the same layer
	}
	k := kind(d.old, o, &oe)
	if k != kind(d.new, n, &ne) || oe.Mode&0o7777 != ne.Mode&0o7777 || oe.UID != ne.UID || oe.GID != ne.GID ||
		!slices.Equal(oe.Xattrs(), ne.Xattrs()) {
		return true, nil
	}
	switch k {
	case tar.TypeSymlink:
		return oe.Linkname != ne.Linkname, nil
	case tar.TypeChar, tar.TypeBlock:
		return oe.Devmajor != ne.Devmajor || oe.Devminor != ne.Devminor, nil
	case tar.TypeReg:
		if oe.Size != ne.Size {
			return true, nil
		}
		if oe.Size == 0 {
			return false, nil
		}
		same, err := d.same(ol, oe, nl, ne)
		return !same, err
	}
	return false, nil
}
