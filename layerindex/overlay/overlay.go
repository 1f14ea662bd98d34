// Package overlay merges the tables of contents of an image's layers into the tree that an
// image's rootfs/ shows: layers applied bottom to top, later entries winning, whiteouts and
// opaque directories done, hard links resolved (Merge). It also builds one layer's tar as
// the tree it is, which layers/N/ shows (Layer). It works on layerindex.Index values only.
//
// The rules are those of the OCI image layer specification, with docker's extractor as the
// reference where the specification is silent:
//
//   - Names are cleaned: leading "/" and "./" stripped, path.Clean'ed, and a name that would
//     climb out of the root ("../x", "a/../../b") is cleaned into it ("x", "b"). A name that
//     cleans to the root gives the root its attributes if it is a directory.
//   - A later entry for a path replaces an earlier one, in the same layer or a higher one. A
//     directory over a directory only updates its attributes; a non-directory over a
//     directory removes the directory and everything below it; a directory over a
//     non-directory is a fresh, empty directory.
//   - Directories implied by a path (including the parents of whiteouts) but never given an
//     entry are synthetic: mode 0755, uid/gid 0, mtime the Unix epoch. A path component that
//     is a non-directory (a file, a symlink: symlinks are never followed) is replaced by a
//     synthetic directory when a later entry needs it as a parent (not when a whiteout
//     does: a whiteout below a non-directory does nothing).
//   - "dir/.wh.name" removes dir/name and its subtree as the layers below give it; what the
//     whiteout's own layer puts there stays, whether it comes before or after the whiteout
//     in the tar (a directory of that layer kept this way loses the attributes a lower layer
//     gave it: it becomes synthetic unless the layer has an entry for it). "dir/.wh..wh..opq"
//     does the same to every child of dir. Other ".wh..wh." names (aufs metadata) and
//     everything below them are ignored; no ".wh." name ever shows in the tree.
//   - A hard link names a target (cleaned the same way) as the tree stands when the link is
//     applied, in its own layer or a lower one. The link shows the target's entry and shares
//     its inode. The link captures the content: if the target is later replaced or removed,
//     the link (and any other link of its group) keeps showing what it linked to, and the
//     group's remaining members still share one inode. A link to a missing path or to a
//     directory is dropped.
//
// Entries dropped as malformed (empty names, names with NUL, bad hard links, a non-directory
// named as the root, ".wh." used as a directory, unknown tar types) are counted by Dropped.
//
// Layer shows a layer's tar itself rather than what extracting it makes, so its rules are
// those of Merge except where an extractor acts on what it reads:
//
//   - ".wh." names are the plain files (or directories) they are: nothing is whited out,
//     made opaque or ignored.
//   - Symlinks are never followed: a path component that is a non-directory (a symlink
//     too) is replaced by a synthetic directory.
//   - Every entry is a node, whatever its type: a PAX global header or an unknown type is a
//     non-directory. The only entry dropped is a non-directory named as the root; an empty
//     name is the root's.
//   - Hard links are resolved once the whole tar is read, in the finished tree and without
//     following symlinks, so a link may come before its target and shows what its target
//     ends up showing; a link to a link is followed (up to maxLinkChain links). A link to
//     nothing, to a directory or to itself, or along a longer chain, is left as its own
//     entry: a non-directory with no other links.
package overlay

import (
	"archive/tar"
	"fmt"
	"math"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/imgfs/imgfs/layerindex"
)

// Node is a node of a Tree: an index in [0, Len()).
type Node uint32

// Root is the root directory.
const Root Node = 0

// noKids marks a non-directory in node.kids.
const noKids = ^uint32(0)

// node is 48 bytes. A directory's children are consecutive nodes (kids .. kids+nkids-1),
// sorted by name: the tree is numbered breadth first.
type node struct {
	name   string // a substring of an Entry's name (or of its cleaned form)
	parent Node
	layer  int32  // layer of the entry shown; -1 for a synthetic directory
	entry  uint32 // index in layers[layer].TOC
	kids   uint32 // first child; noKids for non-directories
	nkids  uint32
	inode  Node
	nlink  uint32
}

// Tree is the merged filesystem of an image (Merge), or one layer's tar as it is (Layer).
// It is immutable and safe for concurrent use. It refers to the layers' entries (names
// included) rather than copying them, so the layers must not be modified while it is in use.
type Tree struct {
	layers  []*layerindex.Index
	nodes   []node
	ids     []Node // ids[i] == i: what Children slices
	dropped int
	synth   layerindex.Entry
}

// Len returns the number of nodes.
func (t *Tree) Len() int { return len(t.nodes) }

// Dropped returns the number of entries left out of the tree as malformed.
func (t *Tree) Dropped() int { return t.dropped }

// IsDir reports whether n is a directory.
func (t *Tree) IsDir(n Node) bool { return t.nodes[n].kids != noKids }

// Lookup returns the child of dir called name.
func (t *Tree) Lookup(dir Node, name string) (Node, bool) {
	d := &t.nodes[dir]
	if d.kids == noKids {
		return 0, false
	}
	lo, hi := d.kids, d.kids+d.nkids
	for lo < hi {
		m := lo + (hi-lo)/2
		if t.nodes[m].name < name {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo < d.kids+d.nkids && t.nodes[lo].name == name {
		return Node(lo), true
	}
	return 0, false
}

// Children returns dir's children sorted by name (byte order), nil if dir is not a
// directory. The slice is shared: it must not be modified.
func (t *Tree) Children(dir Node) []Node {
	d := &t.nodes[dir]
	if d.kids == noKids {
		return nil
	}
	return t.ids[d.kids : d.kids+d.nkids : d.kids+d.nkids]
}

// Name returns n's base name, "" for the root.
func (t *Tree) Name(n Node) string { return t.nodes[n].name }

// Parent returns n's parent directory; the root is its own parent.
func (t *Tree) Parent(n Node) Node { return t.nodes[n].parent }

// Entry returns the layer and the entry whose attributes and data n shows. For a hard
// link it is the entry the link's target showed when the link was applied (a regular file,
// a symlink, ...), not the link's own entry; in a Layer tree it is what the target shows in
// the end, and the link's own entry only for a link naming nothing it can show. For a
// directory without an entry of its own (implied by a path, or the root when no layer has
// "./"), it is (-1, e) with e a synthetic directory entry: Type '5', Mode 0755, uid/gid 0,
// ModTime the Unix epoch, Name "". The entry's slices and strings are shared and must not
// be modified; its Name is as the tar gave it: use Path.
func (t *Tree) Entry(n Node) (layer int, e layerindex.Entry) {
	nd := &t.nodes[n]
	if nd.layer < 0 {
		return -1, t.synth
	}
	return int(nd.layer), t.layers[nd.layer].TOC.At(int(nd.entry))
}

// Source returns where the entry n shows (see Entry) is: its layer's TOC and its position
// in it, for what is kept per entry of a layer (whether its tar header was checked); nil
// and -1 for a directory without an entry.
func (t *Tree) Source(n Node) (*layerindex.TOC, int) {
	nd := &t.nodes[n]
	if nd.layer < 0 {
		return nil, -1
	}
	return t.layers[nd.layer].TOC, int(nd.entry)
}

// Inode returns the node whose identity n shares: for the members of a hard-link group,
// the link target if it is still in the tree (else the group's first node); else n itself.
func (t *Tree) Inode(n Node) Node { return t.nodes[n].inode }

// Nlink returns n's link count: for a directory 2 plus the number of its child
// directories, else the number of nodes of its hard-link group (1 if it has none).
func (t *Tree) Nlink(n Node) uint32 { return t.nodes[n].nlink }

// Path returns n's path from the root ("usr/bin/ls"; "" for the root).
func (t *Tree) Path(n Node) string {
	size := -1
	for m := n; m != Root; m = t.nodes[m].parent {
		size += len(t.nodes[m].name) + 1
	}
	if size <= 0 {
		return ""
	}
	b := make([]byte, size)
	end := size
	for m := n; m != Root; m = t.nodes[m].parent {
		name := t.nodes[m].name
		copy(b[end-len(name):end], name)
		end -= len(name)
		if end > 0 {
			end--
			b[end] = '/'
		}
	}
	return string(b)
}

// Merge builds the tree of layers, bottom layer first. It fails only on a nil layer or a
// tree too big to number.
func Merge(layers []*layerindex.Index) (*Tree, error) { return build(layers, false) }

// Layer builds the tree of one layer's tar as it is (see the package doc), its entries
// those of the tree's layer 0. It fails only on a nil layer or a tree too big to number.
func Layer(ix *layerindex.Index) (*Tree, error) {
	return build([]*layerindex.Index{ix}, true)
}

func build(layers []*layerindex.Index, raw bool) (*Tree, error) {
	total := 0
	for i, l := range layers {
		if l == nil {
			return nil, fmt.Errorf("overlay: layer %d is nil", i)
		}
		total += l.TOC.Len()
	}
	// Every entry makes at most one node plus its implied parents; keep every count below
	// what an int32 holds.
	if total >= math.MaxInt32/64 || len(layers) >= math.MaxInt32 {
		return nil, fmt.Errorf("overlay: %d entries in %d layers: too many", total, len(layers))
	}
	b := &builder{
		layers: layers,
		raw:    raw,
		nodes:  make([]tnode, 1, total+total/8+16),
		index:  newNodeIndex(total),
	}
	b.nodes[0] = tnode{layer: -1, own: -1, stamp: -1, grp: -1, first: -1, next: -1, dir: true}
	for li, l := range layers {
		b.cached = -1 // stamps are per layer
		for ei := range l.TOC.Len() {
			b.apply(int32(li), int32(ei), l.TOC)
		}
	}
	if raw {
		b.resolveLinks(layers[0].TOC)
	}
	b.index = nodeIndex{} // finish needs none of it
	return b.finish(layers), nil
}

// tnode is a node while merging. Removed nodes stay in their parent's child list (marked
// dead); their descendants are merely unreachable.
type tnode struct {
	name   string
	parent int32
	layer  int32 // layer of the entry shown, -1 if synthetic
	entry  int32
	own    int32 // layer that gave this node its entry (or created it, if synthetic)
	stamp  int32 // latest layer that gave an entry to this node or to one below it
	grp    int32 // hard-link group, -1 if none
	first  int32 // first child, -1 if none
	next   int32 // next sibling, -1 if none
	dir    bool
	dead   bool
}

// group is a hard-link group: the content its members show, and the node that was the
// target of the first link.
type group struct {
	origin, layer, entry int32
}

type builder struct {
	layers  []*layerindex.Index
	raw     bool // Layer's rules
	nodes   []tnode
	index   nodeIndex // live nodes by parent and name
	groups  []group
	dropped int
	stack   []int32
	links   []int32 // raw: the nodes given a hard link's entry, resolved at the end

	// The directory last found by a stamping ensureDir in this layer (-1: none); reset by
	// every removal.
	cached    int32
	cachedDir string
}

// apply applies entry ei of toc, the TOC of layer li.
func (b *builder) apply(li, ei int32, toc *layerindex.TOC) {
	typ, name := toc.Type(int(ei)), toc.Name(int(ei))
	isDir := typ == tar.TypeDir
	if !b.raw {
		switch typ {
		case tar.TypeReg, tar.TypeRegA, tar.TypeCont, tar.TypeSymlink, tar.TypeChar, tar.TypeBlock, tar.TypeFifo, tar.TypeLink, tar.TypeDir:
		case tar.TypeXGlobalHeader:
			return // PAX global header: not a file (docker ignores it too)
		default:
			b.dropped++
			return
		}
		if name == "" || strings.IndexByte(name, 0) >= 0 {
			b.dropped++
			return
		}
	}
	p := CleanPath(name)
	if p == "" {
		if !isDir {
			b.dropped++
			return
		}
		r := &b.nodes[0]
		r.layer, r.entry, r.own = li, ei, li
		return
	}
	dir, base := "", p
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		dir, base = p[:i], p[i+1:]
	}
	if !b.raw && (strings.HasPrefix(dir, ".wh.") || strings.Contains(dir, "/.wh.")) {
		if !strings.HasPrefix(dir, whMeta) && !strings.Contains(dir, "/"+whMeta) {
			b.dropped++ // a whiteout is never a directory
		}
		return
	}
	if !b.raw && strings.HasPrefix(base, whPrefix) {
		switch name := base[len(whPrefix):]; {
		case base == whOpaque:
			d := b.ensureDir(dir, li, false)
			if d < 0 {
				break
			}
			for c := b.nodes[d].first; c >= 0; c = b.nodes[c].next {
				if !b.nodes[c].dead {
					b.pruneLower(c, li)
				}
			}
		case strings.HasPrefix(base, whMeta):
			// aufs metadata (.wh..wh.plnk, .wh..wh.aufs): ignored
		case name == "" || name == "." || name == "..":
			b.dropped++
		default:
			if d := b.ensureDir(dir, li, false); d < 0 {
				break
			} else if c, ok := b.index.find(b.nodes, d, name); ok {
				b.pruneLower(c, li)
			}
		}
		return
	}

	layer, entry, grp := li, ei, int32(-1)
	if typ == tar.TypeLink && !b.raw {
		target, ok := b.lookup(CleanPath(toc.Linkname(int(ei))))
		if !ok || b.nodes[target].dir {
			b.dropped++
			return
		}
		tn := &b.nodes[target]
		if tn.grp < 0 {
			tn.grp = int32(len(b.groups))
			b.groups = append(b.groups, group{origin: target, layer: tn.layer, entry: tn.entry})
		}
		layer, entry, grp = tn.layer, tn.entry, tn.grp
	}
	d := b.ensureDir(dir, li, true)
	if d < 0 {
		b.dropped++ // its parent path loops through symlinks
		return
	}
	c, ok := b.index.find(b.nodes, d, base)
	if ok && b.nodes[c].dir && !isDir {
		b.remove(c) // a non-directory over a directory: the subtree goes
		ok = false
	}
	if ok {
		n := &b.nodes[c]
		if !n.dir {
			b.cached = -1 // it may have been a symlink the cached path went through
		}
		n.layer, n.entry, n.own, n.stamp, n.grp, n.dir = layer, entry, li, li, grp, isDir
	} else {
		c = b.add(d, base, layer, entry, li, isDir)
		b.nodes[c].grp = grp
	}
	if typ == tar.TypeLink && b.raw {
		b.links = append(b.links, c)
	}
}

// maxLinkChain bounds the hard links followed from one link in a lone layer.
const maxLinkChain = 16

// resolveLinks gives the hard links of a lone layer (Layer) the entry and the group of
// what they name in the finished tree, following links to links. The targets are all
// found before any link is changed: a link's own entry must still say where it points
// when another link's chain passes through it.
func (b *builder) resolveLinks(toc *layerindex.TOC) {
	isLink := func(id int32) bool {
		n := &b.nodes[id]
		return n.layer >= 0 && toc.Type(int(n.entry)) == tar.TypeLink
	}
	targets := make([]int32, len(b.links))
	for i, id := range b.links {
		targets[i] = -1
		if b.nodes[id].dead || !isLink(id) { // replaced since
			continue
		}
		cur := id
		for range maxLinkChain {
			if !isLink(cur) {
				break
			}
			t, ok := b.findRaw(CleanPath(toc.Linkname(int(b.nodes[cur].entry))))
			if !ok || t == cur || b.nodes[t].dir {
				break
			}
			cur = t
		}
		if !isLink(cur) {
			targets[i] = cur
		}
	}
	for i, id := range b.links {
		t := targets[i]
		if t < 0 {
			continue
		}
		tn := &b.nodes[t]
		if tn.grp < 0 {
			tn.grp = int32(len(b.groups))
			b.groups = append(b.groups, group{origin: t, layer: tn.layer, entry: tn.entry})
		}
		n := &b.nodes[id]
		n.layer, n.entry, n.grp = tn.layer, tn.entry, tn.grp
	}
	b.links = nil
}

// findRaw finds the live node at path p component by component, following no symlink.
func (b *builder) findRaw(p string) (int32, bool) {
	cur := int32(0)
	for name := range strings.SplitSeq(p, "/") {
		c, ok := b.index.find(b.nodes, cur, name)
		if !ok {
			return -1, false
		}
		cur = c
	}
	return cur, true
}

const (
	whPrefix = ".wh."
	whMeta   = ".wh..wh."
	whOpaque = ".wh..wh..opq"
)

// CleanPath cleans a tar name into a path relative to the root, "" for the root itself.
// It allocates only when the name has "//", "." or ".." components inside it.
func CleanPath(name string) string {
	for {
		if strings.HasPrefix(name, "/") {
			name = name[1:]
		} else if strings.HasPrefix(name, "./") {
			name = name[2:]
		} else {
			break
		}
	}
	if name == "" {
		return ""
	}
	p := path.Clean(name)
	if p == "." {
		return ""
	}
	if p == ".." || strings.HasPrefix(p, "../") {
		p = path.Clean("/" + p)[1:]
	}
	return p
}

// maxHops bounds the symlinks followed while resolving one path, as Linux's ELOOP does.
const maxHops = 40

// walkMode says what resolving a directory path does on the way.
type walkMode uint8

const (
	walkLookup   walkMode = iota // find only: a missing component fails
	walkWhiteout                 // create missing directories unstamped; a non-directory fails
	walkCreate                   // create missing directories, replace non-directories, stamp
)

// ensureDir returns the directory at dir, creating synthetic directories for missing
// components and replacing non-directories in the way. With stamp, every directory on the
// way is stamped with layer li (it holds something of that layer). Without (for a
// whiteout), a non-directory in the way is left alone and ensureDir returns -1. Symlinks
// on the way are followed inside the root (by Merge only); it returns -1 for a symlink loop.
func (b *builder) ensureDir(dir string, li int32, stamp bool) int32 {
	if dir == "" {
		return 0
	}
	if !stamp {
		return b.walk(dir, li, walkWhiteout)
	}
	if b.cached >= 0 && dir == b.cachedDir {
		return b.cached
	}
	d := b.walk(dir, li, walkCreate)
	if d >= 0 {
		b.cached, b.cachedDir = d, dir
	}
	return d
}

// walk resolves the directory path dir (relative to the root) as an extractor chrooted
// into the image root would: a symlink met on the way is followed, an absolute target
// from the root and ".." never above the root, up to maxHops symlinks. It returns -1 when
// the path does not resolve to a directory (or loops).
func (b *builder) walk(dir string, li int32, mode walkMode) int32 {
	cur, hops := int32(0), 0
	for rest := dir; rest != ""; {
		name, more, _ := strings.Cut(rest, "/")
		rest = more
		switch {
		case name == "" || name == ".":
			continue
		case name == "..":
			cur = b.nodes[cur].parent // the root is its own parent
			continue
		case strings.HasPrefix(name, whPrefix) && !b.raw:
			return -1 // only a symlink's target leads here; no .wh. name is ever shown
		}
		c, ok := b.index.find(b.nodes, cur, name)
		if ok && !b.nodes[c].dir {
			if target, isLink := b.symlink(c); isLink && !b.raw {
				if hops++; hops > maxHops || target == "" {
					return -1
				}
				if target[0] == '/' {
					cur = 0
				}
				if more != "" {
					target += "/" + more
				}
				rest = target
				continue
			}
			if mode != walkCreate {
				return -1 // nothing below a non-directory to find or white out
			}
			b.remove(c)
			ok = false
		}
		if !ok {
			if mode == walkLookup {
				return -1
			}
			c = b.add(cur, name, -1, -1, li, true)
			if mode != walkCreate {
				b.nodes[c].stamp = -1
			}
		}
		if mode == walkCreate {
			b.nodes[c].stamp = li
		}
		cur = c
	}
	return cur
}

// symlink returns the target of node id if it shows a symlink.
func (b *builder) symlink(id int32) (string, bool) {
	n := &b.nodes[id]
	if n.layer < 0 {
		return "", false
	}
	toc := b.layers[n.layer].TOC
	if toc.Type(int(n.entry)) != tar.TypeSymlink {
		return "", false
	}
	return toc.Linkname(int(n.entry)), true
}

// lookup finds the live node at path p, following symlinks in its parent directories
// (not in its last component, as link(2) does not).
func (b *builder) lookup(p string) (int32, bool) {
	if p == "" {
		return 0, true
	}
	dir, base := "", p
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		dir, base = p[:i], p[i+1:]
	}
	d := int32(0)
	if dir != "" {
		if d = b.walk(dir, -1, walkLookup); d < 0 {
			return -1, false
		}
	}
	return b.index.find(b.nodes, d, base)
}

func (b *builder) add(parent int32, name string, layer, entry, li int32, dir bool) int32 {
	id := int32(len(b.nodes))
	b.nodes = append(b.nodes, tnode{
		name: name, parent: parent, layer: layer, entry: entry, own: li, stamp: li,
		grp: -1, first: -1, next: b.nodes[parent].first, dir: dir,
	})
	b.nodes[parent].first = id
	b.index.insert(b.nodes, id)
	return id
}

func (b *builder) remove(id int32) {
	n := &b.nodes[id]
	n.dead = true
	b.index.remove(b.nodes, id)
	b.cached = -1
}

// pruneLower removes from the subtree at id what the layers below li put there, keeping
// what layer li itself put there (and the directories leading to it).
func (b *builder) pruneLower(id, li int32) {
	b.stack = append(b.stack[:0], id)
	for len(b.stack) > 0 {
		id := b.stack[len(b.stack)-1]
		b.stack = b.stack[:len(b.stack)-1]
		n := &b.nodes[id]
		if n.stamp < li || n.own < li && !n.dir {
			b.remove(id)
			continue
		}
		if n.own < li { // a lower directory kept for what layer li put below it
			n.layer, n.entry, n.own = -1, -1, li
		}
		for c := n.first; c >= 0; c = b.nodes[c].next {
			if !b.nodes[c].dead {
				b.stack = append(b.stack, c)
			}
		}
	}
}

// finish numbers the live tree breadth first, each directory's children sorted by name.
func (b *builder) finish(layers []*layerindex.Index) *Tree {
	t := &Tree{
		layers:  slices.Clone(layers),
		dropped: b.dropped,
		synth:   layerindex.Entry{Type: tar.TypeDir, Mode: 0o755, ModTime: time.Unix(0, 0).UTC()},
	}
	order := make([]int32, 1, len(b.nodes)) // temporary ids in final order
	nodes := make([]node, 1, len(b.nodes))
	newID := make([]int32, len(b.nodes))
	for i := range newID {
		newID[i] = -1
	}
	newID[0] = 0
	r := &b.nodes[0]
	nodes[0] = node{layer: r.layer, entry: uint32(r.entry)}
	var kids []int32
	for i := 0; i < len(order); i++ {
		tn := &b.nodes[order[i]]
		if !tn.dir {
			nodes[i].kids = noKids
			nodes[i].nlink = 1
			continue
		}
		kids = kids[:0]
		for c := tn.first; c >= 0; c = b.nodes[c].next {
			if !b.nodes[c].dead {
				kids = append(kids, c)
			}
		}
		slices.SortFunc(kids, func(x, y int32) int { return strings.Compare(b.nodes[x].name, b.nodes[y].name) })
		nodes[i].kids, nodes[i].nkids, nodes[i].nlink = uint32(len(order)), uint32(len(kids)), 2
		for _, c := range kids {
			cn := &b.nodes[c]
			if cn.dir {
				nodes[i].nlink++
			}
			id := len(order)
			newID[c] = int32(id)
			order = append(order, c)
			nodes = append(nodes, node{name: cn.name, parent: Node(i), layer: cn.layer, entry: uint32(cn.entry), inode: Node(id)})
		}
	}
	if len(nodes) < cap(nodes)*7/8 {
		nodes = slices.Clone(nodes)
	}

	// Hard-link groups: count the members in the tree, pick the inode.
	if len(b.groups) > 0 {
		count := make([]uint32, len(b.groups))
		rep := make([]int32, len(b.groups))
		for g, gr := range b.groups {
			rep[g] = -1
			if id := newID[gr.origin]; id >= 0 && b.nodes[gr.origin].grp == int32(g) {
				rep[g] = id
			}
		}
		for id, tid := range order {
			if g := b.nodes[tid].grp; g >= 0 {
				count[g]++
				if rep[g] < 0 {
					rep[g] = int32(id) // breadth-first order: the smallest
				}
			}
		}
		for id, tid := range order {
			if g := b.nodes[tid].grp; g >= 0 {
				nodes[id].inode, nodes[id].nlink = Node(rep[g]), count[g]
			}
		}
	}

	t.nodes = nodes
	t.ids = make([]Node, len(nodes))
	for i := range t.ids {
		t.ids[i] = Node(i)
	}
	return t
}

// DiffSize is the size docker gives a layer (`docker history`, `docker images`): the sizes
// its tar headers give, added up, but for whiteouts and what lies below aufs metadata
// directories, which unpacking a layer skips.
func DiffSize(ix *layerindex.Index) int64 {
	var n int64
	for _, e := range ix.TOC.All() {
		name := strings.TrimSuffix(e.Name, "/")
		base := name[strings.LastIndexByte(name, '/')+1:]
		if strings.HasPrefix(base, whPrefix) || strings.Contains(name, "/"+whMeta) || strings.HasPrefix(name, whMeta) {
			continue
		}
		n += e.Size
	}
	return n
}
