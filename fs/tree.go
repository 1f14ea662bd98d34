package fs

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"math"
	"slices"
	"strings"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/imgfs/imgfs/layerindex"
	"github.com/imgfs/imgfs/layerindex/overlay"
	"github.com/opencontainers/go-digest"
)

// tree is a directory tree of tar entries: one layer's own (rawTree) or an image's
// overlaid layers (rootfs). Node 0 is the root; a node's inode is itself, or for a hard
// link the node it is a link to.
type tree interface {
	lookup(dir uint32, name string) (uint32, bool)
	// child returns dir's i-th child in name order, false past the last one (or if dir is
	// not a directory).
	child(dir uint32, i int) (uint32, bool)
	name(n uint32) string
	// parent is n's directory; the root is its own.
	parent(n uint32) uint32
	// entry gives n's attributes and data: the layer (of the image) holding it, and the
	// tar entry. Layer -1 (and a zero entry) is a directory no entry describes.
	entry(n uint32) (layer int, e layerindex.Entry)
	inode(n uint32) uint32
	nlink(n uint32) uint32
	// index is the index of the image's layer i, which entry's layers refer to.
	index(layer int) *layerindex.Index
}

// rawTree is one layer's tar as a tree, whiteouts as the plain files they are: names
// cleaned (./a, /a, a/ are all a), a later entry for a name replacing an earlier one,
// directories a path implies but no entry describes made up, hard links resolved within
// the layer.
type rawTree struct {
	ix    *layerindex.Index
	layer int
	nodes []rawNode
	kids  []uint32 // the children of every directory, each directory's sorted by name
}

// rawNode is 40 bytes.
type rawNode struct {
	name   string
	entry  int32  // index in ix.TOC; -1: a made-up directory
	link   uint32 // the node whose inode and data this one has: itself, or a hard link's target
	nlink  uint32 // of the inode, for non-directories; of the directory, for directories
	parent uint32
	kids   uint32 // the node's children: kids[kids:kids+nkids]
	nkids  uint32
}

func newRawTree(ix *layerindex.Index, layer int) *rawTree {
	toc := ix.TOC
	t := &rawTree{ix: ix, layer: layer, nodes: make([]rawNode, 1, toc.Len()+1)}
	t.nodes[0].entry = -1
	kids := make([]map[string]uint32, 1, toc.Len()+1)
	isDir := func(n uint32) bool {
		e := t.nodes[n].entry
		return e < 0 || toc.Type(int(e)) == tar.TypeDir
	}
	child := func(dir uint32, name string, create bool) (uint32, bool) {
		if c, ok := kids[dir][name]; ok {
			return c, true
		}
		if !create {
			return 0, false
		}
		if kids[dir] == nil {
			kids[dir] = map[string]uint32{}
		}
		c := uint32(len(t.nodes))
		t.nodes = append(t.nodes, rawNode{name: name, entry: -1, link: c, parent: dir})
		kids = append(kids, nil)
		kids[dir][name] = c
		return c, false
	}
	for i := range toc.Len() {
		typ := toc.Type(i)
		p := overlay.CleanPath(toc.Name(i))
		if p == "" {
			if typ == tar.TypeDir {
				t.nodes[0].entry = int32(i)
			}
			continue
		}
		dir := uint32(0)
		for {
			k := strings.IndexByte(p, '/')
			if k < 0 {
				break
			}
			d, existed := child(dir, p[:k], true)
			if existed && !isDir(d) {
				t.nodes[d].entry = -1 // a file where a directory must be: the directory wins
			}
			dir, p = d, p[k+1:]
		}
		n, _ := child(dir, p, true)
		t.nodes[n].entry = int32(i)
		if typ != tar.TypeDir {
			kids[n] = nil
		}
	}
	// Children in name order, every directory's in one slice.
	total := 0
	for _, m := range kids {
		total += len(m)
	}
	t.kids = make([]uint32, 0, total)
	for n, m := range kids {
		if len(m) == 0 {
			continue
		}
		start := len(t.kids)
		for _, c := range m {
			t.kids = append(t.kids, c)
		}
		cs := t.kids[start:]
		slices.SortFunc(cs, func(a, b uint32) int { return strings.Compare(t.nodes[a].name, t.nodes[b].name) })
		t.nodes[n].kids, t.nodes[n].nkids = uint32(start), uint32(len(cs))
		kids[n] = nil
	}
	kids = nil
	// Hard links: to the node the link names, if it is in this layer and not a directory.
	resolve := func(name string) (uint32, bool) {
		n := uint32(0)
		for c := range strings.SplitSeq(overlay.CleanPath(name), "/") {
			var ok bool
			if n, ok = t.lookup(n, c); !ok {
				return 0, false
			}
		}
		return n, true
	}
	for n := range t.nodes {
		t.nodes[n].link = uint32(n)
	}
	for n := range t.nodes {
		cur := uint32(n)
		for hops := 0; hops < 16; hops++ {
			e := t.nodes[cur].entry
			if e < 0 || toc.Type(int(e)) != tar.TypeLink {
				break
			}
			target, ok := resolve(toc.Linkname(int(e)))
			if !ok || target == cur || isDir(target) {
				break
			}
			cur = target
		}
		if e := t.nodes[cur].entry; e >= 0 && toc.Type(int(e)) != tar.TypeLink {
			t.nodes[n].link = cur
		}
	}
	// Link counts: of each inode (in its nlink until every node has been counted), then
	// of each node.
	for n := range t.nodes {
		if !isDir(uint32(n)) {
			t.nodes[t.nodes[n].link].nlink++
		}
	}
	for n := range t.nodes {
		nd := &t.nodes[n]
		if isDir(uint32(n)) {
			sub := uint32(0)
			for _, c := range t.children(uint32(n)) {
				if isDir(c) {
					sub++
				}
			}
			nd.nlink = 2 + sub
		}
	}
	for n := range t.nodes {
		if nd := &t.nodes[n]; !isDir(uint32(n)) && nd.link != uint32(n) {
			nd.nlink = t.nodes[nd.link].nlink
		}
	}
	return t
}

func (t *rawTree) children(dir uint32) []uint32 {
	d := &t.nodes[dir]
	return t.kids[d.kids : d.kids+d.nkids : d.kids+d.nkids]
}

func (t *rawTree) lookup(dir uint32, name string) (uint32, bool) {
	cs := t.children(dir)
	i, ok := slices.BinarySearchFunc(cs, name, func(c uint32, name string) int {
		return strings.Compare(t.nodes[c].name, name)
	})
	if !ok {
		return 0, false
	}
	return cs[i], true
}

func (t *rawTree) child(dir uint32, i int) (uint32, bool) {
	cs := t.children(dir)
	if i < 0 || i >= len(cs) {
		return 0, false
	}
	return cs[i], true
}

func (t *rawTree) name(n uint32) string        { return t.nodes[n].name }
func (t *rawTree) parent(n uint32) uint32      { return t.nodes[n].parent }
func (t *rawTree) inode(n uint32) uint32       { return t.nodes[n].link }
func (t *rawTree) nlink(n uint32) uint32       { return t.nodes[n].nlink }
func (t *rawTree) index(int) *layerindex.Index { return t.ix }

func (t *rawTree) entry(n uint32) (int, layerindex.Entry) {
	e := t.nodes[t.nodes[n].link].entry
	if e < 0 {
		return -1, layerindex.Entry{}
	}
	return t.layer, t.ix.TOC.At(int(e))
}

// treeIno is the inode number of a tree's inode in the mount: base (the tree's root's
// number, unique to the tree's place in the mount) for the root.
func treeIno(base uint64, inode uint32) uint64 {
	if inode == 0 {
		return base
	}
	return newIno().u64(base).u32(inode).sum()
}

// typeBits is the file type of the node of entry e of layer (-1: a made-up directory).
func typeBits(layer int, e *layerindex.Entry) uint32 {
	if layer < 0 {
		return syscall.S_IFDIR
	}
	switch e.Type {
	case tar.TypeDir:
		return syscall.S_IFDIR
	case tar.TypeSymlink:
		return syscall.S_IFLNK
	case tar.TypeChar:
		return syscall.S_IFCHR
	case tar.TypeBlock:
		return syscall.S_IFBLK
	case tar.TypeFifo:
		return syscall.S_IFIFO
	}
	return syscall.S_IFREG
}

// treeRoot is a tree as it shows in the mount: rootfs/ of an image, or layers/N/.
type treeRoot struct {
	im      *image
	t       tree
	base    uint64 // inode number of the tree's root
	dotdot  uint64 // inode number of the directory holding the root
	path    string // of the root in the mount, for messages
	layer   int    // the layer, for layers/N
	isLayer bool   // layers/N, whose root has the layer's digests as xattrs
	id      uint32 // the tree's number in rawFS's node IDs, once rawFS has taken it over
}

// tnode is a node of a tree: a file, directory, symlink, device or FIFO of a layer or of
// an image's rootfs. The kernel knows every node it looked up by a node ID made of the
// node's number and its tree's (see rawFS): the daemon keeps nothing per node.
type tnode struct {
	r *treeRoot
	n uint32
}

// where is n's path in the mount, for messages.
func (n tnode) where() string {
	if n.n == 0 {
		return n.r.path
	}
	var parts []string
	for m := n.n; m != 0; m = n.r.t.parent(m) {
		parts = append(parts, n.r.t.name(m))
	}
	slices.Reverse(parts)
	return n.r.path + "/" + strings.Join(parts, "/")
}

func (n tnode) inode() uint64 { return treeIno(n.r.base, n.r.t.inode(n.n)) }

func (n tnode) attr(a *fuse.Attr) {
	layer, e := n.r.t.entry(n.n)
	a.Ino = n.inode()
	a.Nlink = n.r.t.nlink(n.n)
	a.Blksize = 4096
	if layer < 0 {
		a.Mode = syscall.S_IFDIR | 0o755
		setTimes(a, n.r.im.createdTime())
		return
	}
	typ := typeBits(layer, &e)
	a.Mode = typ | uint32(e.Mode)&0o7777
	a.Uid, a.Gid = uint32(e.UID), uint32(e.GID)
	setTimes(a, e.ModTime)
	switch typ {
	case syscall.S_IFREG:
		a.Size = uint64(e.Size)
		a.Blocks = (a.Size + 511) / 512
	case syscall.S_IFLNK:
		a.Size = uint64(len(e.Linkname))
	case syscall.S_IFCHR, syscall.S_IFBLK:
		major, minor := uint32(e.Devmajor), uint32(e.Devminor)
		// The kernel's new_encode_dev, which FUSE's 32-bit rdev carries.
		a.Rdev = minor&0xff | major<<8 | (minor&^0xff)<<12
	}
}

func (n tnode) isDir() bool {
	layer, e := n.r.t.entry(n.n)
	return typeBits(layer, &e) == syscall.S_IFDIR
}

// lookup finds n's child called name: the node whose inode it shows (a hard link shows
// its target's).
func (n tnode) lookup(name string) (tnode, bool) {
	c, ok := n.r.t.lookup(n.n, name)
	if !ok {
		return tnode{}, false
	}
	cn := tnode{n.r, n.r.t.inode(c)}
	cn.openLayer()
	return cn, true
}

// openLayer opens the layer of a file with data as it is looked up, so that a file looked
// up (and so any file opened) before its image is removed reads on. A failure shows when
// the file is read.
func (n tnode) openLayer() {
	layer, e := n.r.t.entry(n.n)
	if e.Size > 0 && typeBits(layer, &e) == syscall.S_IFREG {
		n.r.im.layer(layer)
	}
}

// dirent is n's i-th directory entry: ".", "..", then its children in name order, and the
// node of a child (n itself for "." and "..").
func (n tnode) dirent(i int) (fuse.DirEntry, tnode, bool) {
	switch i {
	case 0:
		return fuse.DirEntry{Name: ".", Mode: syscall.S_IFDIR, Ino: n.inode()}, n, true
	case 1:
		ino := n.r.dotdot
		if n.n != 0 {
			ino = tnode{n.r, n.r.t.parent(n.n)}.inode()
		}
		return fuse.DirEntry{Name: "..", Mode: syscall.S_IFDIR, Ino: ino}, n, true
	}
	c, ok := n.r.t.child(n.n, i-2)
	if !ok {
		return fuse.DirEntry{}, tnode{}, false
	}
	layer, e := n.r.t.entry(c)
	return fuse.DirEntry{Name: n.r.t.name(c), Mode: typeBits(layer, &e), Ino: treeIno(n.r.base, n.r.t.inode(c)), Off: uint64(i + 1)},
		tnode{n.r, n.r.t.inode(c)}, true
}

func (n tnode) readlink() ([]byte, syscall.Errno) {
	layer, e := n.r.t.entry(n.n)
	if layer < 0 || e.Type != tar.TypeSymlink {
		return nil, syscall.EINVAL
	}
	return []byte(e.Linkname), 0
}

func (n tnode) read(dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	layer, e := n.r.t.entry(n.n)
	if layer < 0 || off >= e.Size {
		return fuse.ReadResultData(nil), 0
	}
	want := min(int64(len(dest)), e.Size-off)
	r, err := n.r.im.layer(layer)
	if err != nil {
		n.readError(layer, err)
		return nil, syscall.EIO
	}
	got, err := r.ReadAt(dest[:want], e.Offset+off)
	if err != nil && !(errors.Is(err, io.EOF) && int64(got) == want) {
		n.readError(layer, err)
		return nil, syscall.EIO
	}
	return fuse.ReadResultData(dest[:got]), 0
}

func (n tnode) readError(layer int, err error) {
	im := n.r.im
	var d digest.Digest
	if layer >= 0 && layer < len(im.img.Manifest.Layers) {
		d = im.img.Manifest.Layers[layer].Digest
	}
	im.fs.readFailed(d, "read failed", "image", im.label, "path", n.where(), "err", err)
}

// xattrs are n's extended attributes: the entry's, and on layers/N the layer's digests.
func (n tnode) xattrs() []layerindex.Record {
	layer, e := n.r.t.entry(n.n)
	var out []layerindex.Record
	if layer >= 0 {
		out = e.Xattrs()
	}
	if n.n == 0 && n.r.isLayer {
		im := n.r.im
		d := im.img.Manifest.Layers[n.r.layer]
		out = append(out, layerindex.Record{Key: "user.imgfs.digest", Value: d.Digest.String()},
			layerindex.Record{Key: "user.imgfs.mediatype", Value: d.MediaType})
		if ix, err := im.layerIndex(n.r.layer); err == nil {
			out = append(out, layerindex.Record{Key: "user.imgfs.diffid", Value: ix.DiffID.String()})
		}
	}
	return out
}

func (n tnode) getxattr(attr string, dest []byte) (uint32, syscall.Errno) {
	for _, r := range n.xattrs() {
		if r.Key == attr {
			if len(dest) < len(r.Value) {
				return uint32(len(r.Value)), syscall.ERANGE
			}
			return uint32(copy(dest, r.Value)), 0
		}
	}
	return 0, syscall.ENODATA
}

func (n tnode) listxattr(dest []byte) (uint32, syscall.Errno) {
	var b []byte
	for _, r := range n.xattrs() {
		b = append(append(b, r.Key...), 0)
	}
	if len(dest) < len(b) {
		return uint32(len(b)), syscall.ERANGE
	}
	return uint32(copy(dest, b)), 0
}

// openFlags answers an open of n: ENOSYS, so that the kernel opens every file of the mount
// without asking (the "no open" mode of FUSE, with the page cache kept across opens as
// FOPEN_KEEP_CACHE would), and a file read costs no OPEN nor RELEASE round trip. Nothing
// is lost: a file has no per-open state, and its layer was opened when the file was looked
// up, which every open follows. Writing is refused by the kernel already (the mount is
// read-only).
func openFlags(flags uint32) syscall.Errno {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC) != 0 {
		return syscall.EROFS
	}
	return syscall.ENOSYS
}

// treeNode is the root of a tree as go-fuse's node API shows it, only until rawFS takes
// the tree over (in the reply to the LOOKUP that made it): from then on the kernel knows
// the root, and every node below it, by rawFS's node IDs. It serves the whole tree through
// the node API when the filesystem is mounted without rawFS.
type treeNode struct {
	gofs.Inode
	node tnode
}

var (
	_ gofs.NodeLookuper       = (*treeNode)(nil)
	_ gofs.NodeOpendirHandler = (*treeNode)(nil)
	_ gofs.NodeGetattrer      = (*treeNode)(nil)
	_ gofs.NodeOpener         = (*treeNode)(nil)
	_ gofs.NodeFlusher        = (*treeNode)(nil)
	_ gofs.NodeReader         = (*treeNode)(nil)
	_ gofs.NodeReadlinker     = (*treeNode)(nil)
	_ gofs.NodeGetxattrer     = (*treeNode)(nil)
	_ gofs.NodeListxattrer    = (*treeNode)(nil)
)

func (n *treeNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.node.attr(&out.Attr)
	out.SetTimeout(n.node.r.im.fs.opts.ImageTimeout)
	return 0
}

func (n *treeNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	c, ok := n.node.lookup(name)
	if !ok {
		return nil, syscall.ENOENT
	}
	c.attr(&out.Attr)
	setTimeouts(out, c.r.im.fs.opts.ImageTimeout)
	return n.NewInode(ctx, &treeNode{node: c}, gofs.StableAttr{Mode: out.Attr.Mode & syscall.S_IFMT, Ino: c.inode()}), 0
}

// OpendirHandle opens a directory for reading: its entries come straight from the tree as
// the kernel asks for them, and the kernel keeps them (FOPEN_CACHE_DIR): what is inside an
// image never changes, so a directory listed once is listed again without a round trip.
func (n *treeNode) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	return &treeDir{n: n.node}, fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE, 0
}

// treeDir is an open directory of a tree: a position in its entries (tnode.dirent).
type treeDir struct {
	n  tnode
	i  int
	de fuse.DirEntry // the last entry returned, reused: go-fuse copies it
}

var (
	_ gofs.FileReaddirenter = (*treeDir)(nil)
	_ gofs.FileSeekdirer    = (*treeDir)(nil)
	_ gofs.FileReleasedirer = (*treeDir)(nil)
)

func (d *treeDir) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	de, _, ok := d.n.dirent(d.i)
	if !ok {
		return nil, 0
	}
	d.i++
	d.de = de
	d.de.Off = uint64(d.i)
	return &d.de, 0
}

func (d *treeDir) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if off > math.MaxInt32 {
		return syscall.EINVAL
	}
	if _, _, ok := d.n.dirent(int(off) - 1); off > 2 && !ok {
		return syscall.EINVAL
	}
	d.i = int(off)
	return 0
}

func (d *treeDir) Releasedir(ctx context.Context, releaseFlags uint32) {}

func (n *treeNode) Readlink(ctx context.Context) ([]byte, syscall.Errno) { return n.node.readlink() }

func (n *treeNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	return nil, 0, openFlags(flags)
}

// Flush answers ENOSYS: the kernel then sends no FLUSH on close for the rest of the mount.
// There is nothing to flush on a read-only filesystem.
func (n *treeNode) Flush(ctx context.Context, f gofs.FileHandle) syscall.Errno {
	return syscall.ENOSYS
}

func (n *treeNode) Read(ctx context.Context, f gofs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	return n.node.read(dest, off)
}

func (n *treeNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	return n.node.getxattr(attr, dest)
}

func (n *treeNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	return n.node.listxattr(dest)
}
