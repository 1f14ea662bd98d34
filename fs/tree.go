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
	// entry gives n's attributes and data: the layer (of the image) holding it, and the
	// tar entry. A nil entry (layer -1) is a directory no entry describes.
	entry(n uint32) (layer int, e *layerindex.Entry)
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
}

type rawNode struct {
	name     string
	entry    int32    // index in ix.Entries; -1: a made-up directory
	link     uint32   // the node whose inode and data this one has: itself, or a hard link's target
	nlink    uint32   // of the inode, for non-directories; of the directory, for directories
	children []uint32 // sorted by name
}

func newRawTree(ix *layerindex.Index, layer int) *rawTree {
	t := &rawTree{ix: ix, layer: layer, nodes: []rawNode{{entry: -1}}}
	kids := []map[string]uint32{nil}
	isDir := func(n uint32) bool {
		e := t.nodes[n].entry
		return e < 0 || ix.Entries[e].Type == tar.TypeDir
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
		t.nodes = append(t.nodes, rawNode{name: name, entry: -1, link: c})
		kids = append(kids, nil)
		kids[dir][name] = c
		return c, false
	}
	for i := range ix.Entries {
		e := &ix.Entries[i]
		p := overlay.CleanPath(e.Name)
		if p == "" {
			if e.Type == tar.TypeDir {
				t.nodes[0].entry = int32(i)
			}
			continue
		}
		dir := uint32(0)
		parts := strings.Split(p, "/")
		for _, c := range parts[:len(parts)-1] {
			d, existed := child(dir, c, true)
			if existed && !isDir(d) {
				t.nodes[d].entry = -1 // a file where a directory must be: the directory wins
			}
			dir = d
		}
		n, _ := child(dir, parts[len(parts)-1], true)
		t.nodes[n].entry = int32(i)
		if e.Type != tar.TypeDir {
			kids[n] = nil
		}
	}
	// Children in name order.
	for n, m := range kids {
		if len(m) == 0 {
			continue
		}
		cs := make([]uint32, 0, len(m))
		for _, c := range m {
			cs = append(cs, c)
		}
		slices.SortFunc(cs, func(a, b uint32) int { return strings.Compare(t.nodes[a].name, t.nodes[b].name) })
		t.nodes[n].children = cs
	}
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
			if e < 0 || ix.Entries[e].Type != tar.TypeLink {
				break
			}
			target, ok := resolve(ix.Entries[e].Linkname)
			if !ok || target == cur || isDir(target) {
				break
			}
			cur = target
		}
		if e := t.nodes[cur].entry; e >= 0 && ix.Entries[e].Type != tar.TypeLink {
			t.nodes[n].link = cur
		}
	}
	links := make(map[uint32]uint32)
	for n := range t.nodes {
		if !isDir(uint32(n)) {
			links[t.nodes[n].link]++
		}
	}
	for n := range t.nodes {
		if isDir(uint32(n)) {
			sub := uint32(0)
			for _, c := range t.nodes[n].children {
				if isDir(c) {
					sub++
				}
			}
			t.nodes[n].nlink = 2 + sub
		} else {
			t.nodes[n].nlink = links[t.nodes[n].link]
		}
	}
	return t
}

func (t *rawTree) lookup(dir uint32, name string) (uint32, bool) {
	cs := t.nodes[dir].children
	i, ok := slices.BinarySearchFunc(cs, name, func(c uint32, name string) int {
		return strings.Compare(t.nodes[c].name, name)
	})
	if !ok {
		return 0, false
	}
	return cs[i], true
}

func (t *rawTree) child(dir uint32, i int) (uint32, bool) {
	cs := t.nodes[dir].children
	if i < 0 || i >= len(cs) {
		return 0, false
	}
	return cs[i], true
}

func (t *rawTree) name(n uint32) string        { return t.nodes[n].name }
func (t *rawTree) inode(n uint32) uint32       { return t.nodes[n].link }
func (t *rawTree) nlink(n uint32) uint32       { return t.nodes[n].nlink }
func (t *rawTree) index(int) *layerindex.Index { return t.ix }

func (t *rawTree) entry(n uint32) (int, *layerindex.Entry) {
	e := t.nodes[t.nodes[n].link].entry
	if e < 0 {
		return -1, nil
	}
	return t.layer, &t.ix.Entries[e]
}

// treeIno is the inode number of a tree's inode in the mount: base (the tree's root's
// number, unique to the tree's place in the mount) for the root.
func treeIno(base uint64, inode uint32) uint64 {
	if inode == 0 {
		return base
	}
	return ino(base, inode)
}

// typeBits is the file type of a tar entry.
func typeBits(e *layerindex.Entry) uint32 {
	if e == nil {
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

// treeNode is a node of a tree: a file, directory, symlink, device or FIFO of a layer or
// of an image's rootfs. There is one per entry looked up (a walk looks up every entry): its
// fields are ordered to fit the 192-byte allocation class.
type treeNode struct {
	gofs.Inode
	im          *image
	t           tree
	n           uint32
	isLayerRoot bool   // layers/N itself, which has the layer's digests as xattrs
	base        uint64 // inode number of the tree's root
	path        string // in the mount, for messages: set on a tree's root only (see where)
	layer       int    // the layer, for layers/N's root
}

var (
	_ gofs.NodeLookuper       = (*treeNode)(nil)
	_ gofs.NodeReaddirer      = (*treeNode)(nil)
	_ gofs.NodeOpendirHandler = (*treeNode)(nil)
	_ gofs.NodeGetattrer      = (*treeNode)(nil)
	_ gofs.NodeOpener         = (*treeNode)(nil)
	_ gofs.NodeFlusher        = (*treeNode)(nil)
	_ gofs.NodeReader         = (*treeNode)(nil)
	_ gofs.NodeReadlinker     = (*treeNode)(nil)
	_ gofs.NodeGetxattrer     = (*treeNode)(nil)
	_ gofs.NodeListxattrer    = (*treeNode)(nil)
)

// where is n's path in the mount, for messages.
func (n *treeNode) where() string {
	if n.path != "" {
		return n.path
	}
	return n.Path(nil)
}

func (n *treeNode) inode() uint64 { return treeIno(n.base, n.t.inode(n.n)) }

func (n *treeNode) attr(a *fuse.Attr) {
	_, e := n.t.entry(n.n)
	a.Nlink = n.t.nlink(n.n)
	a.Blksize = 4096
	if e == nil {
		a.Mode = syscall.S_IFDIR | 0o755
		setTimes(a, n.im.createdTime())
		return
	}
	a.Mode = typeBits(e) | uint32(e.Mode)&0o7777
	a.Uid, a.Gid = uint32(e.UID), uint32(e.GID)
	setTimes(a, e.ModTime)
	switch typeBits(e) {
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

func (n *treeNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.attr(&out.Attr)
	out.SetTimeout(n.im.fs.opts.ImageTimeout)
	return 0
}

func (n *treeNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	c, ok := n.t.lookup(n.n, name)
	if !ok {
		return nil, syscall.ENOENT
	}
	layer, e := n.t.entry(c)
	if e != nil && e.Size > 0 && typeBits(e) == syscall.S_IFREG {
		// Open the layer now, so that a file looked up (and so any file opened) before its
		// image is removed reads on. A failure shows when the file is read.
		n.im.fs.reader(n.t.index(layer))
	}
	child := &treeNode{im: n.im, t: n.t, n: c, base: n.base}
	child.attr(&out.Attr)
	setTimeouts(out, n.im.fs.opts.ImageTimeout)
	return n.NewInode(ctx, child, gofs.StableAttr{Mode: typeBits(e), Ino: child.inode()}), 0
}

// OpendirHandle opens a directory for reading: its entries come straight from the tree as
// the kernel asks for them, and the kernel keeps them (FOPEN_CACHE_DIR): what is inside an
// image never changes, so a directory listed once is listed again without a round trip.
func (n *treeNode) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	return &treeDir{n: n}, fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE, 0
}

// Readdir serves the directories go-fuse lists without opening them first.
func (n *treeNode) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	return &treeDir{n: n}, 0
}

// treeDir is an open directory of a tree: a position in ".", "..", then its children.
// Entry i has offset i+1 (where the next read starts).
type treeDir struct {
	n  *treeNode
	i  int
	de fuse.DirEntry // the last entry returned, reused: go-fuse copies it
}

var (
	_ gofs.DirStream        = (*treeDir)(nil)
	_ gofs.FileReaddirenter = (*treeDir)(nil)
	_ gofs.FileSeekdirer    = (*treeDir)(nil)
	_ gofs.FileReleasedirer = (*treeDir)(nil)
)

func (d *treeDir) HasNext() bool {
	if d.i < 2 {
		return true
	}
	_, ok := d.n.t.child(d.n.n, d.i-2)
	return ok
}

func (d *treeDir) Next() (fuse.DirEntry, syscall.Errno) {
	de, errno := d.Readdirent(context.Background())
	if de == nil {
		return fuse.DirEntry{}, syscall.ENOENT
	}
	return *de, errno
}

// Readdirent returns "." and ".." (positions 0 and 1), then the children in name order.
func (d *treeDir) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if d.i < 2 {
		d.i++
		d.de = dotEntry(&d.n.Inode, d.i-1, d.n.inode())
		d.de.Off = uint64(d.i)
		return &d.de, 0
	}
	c, ok := d.n.t.child(d.n.n, d.i-2)
	if !ok {
		return nil, 0
	}
	d.i++
	t := d.n.t
	_, e := t.entry(c)
	d.de = fuse.DirEntry{Name: t.name(c), Mode: typeBits(e), Ino: treeIno(d.n.base, t.inode(c)), Off: uint64(d.i)}
	return &d.de, 0
}

func (d *treeDir) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if off > math.MaxInt32 {
		return syscall.EINVAL
	}
	if _, ok := d.n.t.child(d.n.n, int(off)-3); off > 2 && !ok {
		return syscall.EINVAL
	}
	d.i = int(off)
	return 0
}

func (d *treeDir) Releasedir(ctx context.Context, releaseFlags uint32) {}
func (d *treeDir) Close()                                              {}

func (n *treeNode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	_, e := n.t.entry(n.n)
	if e == nil || e.Type != tar.TypeSymlink {
		return nil, syscall.EINVAL
	}
	return []byte(e.Linkname), 0
}

// Open answers ENOSYS: the kernel then opens every file of the mount without asking (the
// "no open" mode of FUSE, with the page cache kept across opens as FOPEN_KEEP_CACHE
// would), so a file read costs no OPEN nor RELEASE round trip. Nothing is lost: a file
// has no per-open state, and its layer was opened when the file was looked up, which every
// open follows. Writing is refused by the kernel already (the mount is read-only).
func (n *treeNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC) != 0 {
		return nil, 0, syscall.EROFS
	}
	return nil, 0, syscall.ENOSYS
}

// Flush answers ENOSYS: the kernel then sends no FLUSH on close for the rest of the mount.
// There is nothing to flush on a read-only filesystem.
func (n *treeNode) Flush(ctx context.Context, f gofs.FileHandle) syscall.Errno {
	return syscall.ENOSYS
}

func (n *treeNode) Read(ctx context.Context, f gofs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	layer, e := n.t.entry(n.n)
	if e == nil || off >= e.Size {
		return fuse.ReadResultData(nil), 0
	}
	want := min(int64(len(dest)), e.Size-off)
	r, err := n.im.fs.reader(n.t.index(layer))
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

func (n *treeNode) readError(layer int, err error) {
	var d digest.Digest
	if layer >= 0 && layer < len(n.im.img.Manifest.Layers) {
		d = n.im.img.Manifest.Layers[layer].Digest
	}
	n.im.fs.readFailed(d, "read failed", "image", n.im.label, "path", n.where(), "err", err)
}

// xattrs are n's extended attributes: the entry's, and on layers/N the layer's digests.
func (n *treeNode) xattrs() []layerindex.Record {
	_, e := n.t.entry(n.n)
	var out []layerindex.Record
	if e != nil {
		out = e.Xattrs()
	}
	if n.isLayerRoot {
		d := n.im.img.Manifest.Layers[n.layer]
		out = append(out, layerindex.Record{Key: "user.imgfs.digest", Value: d.Digest.String()},
			layerindex.Record{Key: "user.imgfs.mediatype", Value: d.MediaType})
		if ix, err := n.im.layerIndex(n.layer); err == nil {
			out = append(out, layerindex.Record{Key: "user.imgfs.diffid", Value: ix.DiffID.String()})
		}
	}
	return out
}

func (n *treeNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
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

func (n *treeNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	var b []byte
	for _, r := range n.xattrs() {
		b = append(append(b, r.Key...), 0)
	}
	if len(dest) < len(b) {
		return uint32(len(b)), syscall.ERANGE
	}
	return uint32(copy(dest, b)), 0
}
