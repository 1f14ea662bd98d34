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

// treeIno is the inode number of a tree's inode in the mount: base (the tree's root's
// number, unique to the tree's place in the mount) for the root.
func treeIno(base uint64, inode overlay.Node) uint64 {
	if inode == overlay.Root {
		return base
	}
	return newIno().u64(base).u32(uint32(inode)).sum()
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

// treeRoot is a tree as it shows in the mount: rootfs/ of an image (overlay.Merge of its
// layers), or layers/N/ (overlay.Layer of layer N).
type treeRoot struct {
	im      *image
	t       *overlay.Tree
	base    uint64 // inode number of the tree's root
	dotdot  uint64 // inode number of the directory holding the root
	path    string // of the root in the mount, for messages
	layer   int    // the layer, for layers/N
	isLayer bool   // layers/N, whose root has the layer's digests as xattrs
	id      uint32 // the tree's number in rawFS's node IDs, once rawFS has taken it over
}

// entry gives n's attributes and data: the image's layer holding it, and the tar entry.
// Layer -1 is a directory no entry describes.
func (r *treeRoot) entry(n overlay.Node) (layer int, e layerindex.Entry) {
	layer, e = r.t.Entry(n)
	if layer >= 0 && r.isLayer {
		layer = r.layer // the tree of one layer knows it as its layer 0
	}
	return layer, e
}

// child is dir's i-th child in name order, false past the last one.
func (r *treeRoot) child(dir overlay.Node, i int) (overlay.Node, bool) {
	kids := r.t.Children(dir)
	if i < 0 || i >= len(kids) {
		return 0, false
	}
	return kids[i], true
}

// tnode is a node of a tree: a file, directory, symlink, device or FIFO of a layer or of
// an image's rootfs. The kernel knows every node it looked up by a node ID made of the
// node's number and its tree's (see rawFS): the daemon keeps nothing per node.
type tnode struct {
	r *treeRoot
	n overlay.Node
}

// where is n's path in the mount, for messages.
func (n tnode) where() string {
	if n.n == 0 {
		return n.r.path
	}
	var parts []string
	for m := n.n; m != 0; m = n.r.t.Parent(m) {
		parts = append(parts, n.r.t.Name(m))
	}
	slices.Reverse(parts)
	return n.r.path + "/" + strings.Join(parts, "/")
}

func (n tnode) inode() uint64 { return treeIno(n.r.base, n.r.t.Inode(n.n)) }

func (n tnode) attr(a *fuse.Attr) {
	layer, e := n.r.entry(n.n)
	a.Ino = n.inode()
	a.Nlink = n.r.t.Nlink(n.n)
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
	layer, e := n.r.entry(n.n)
	return typeBits(layer, &e) == syscall.S_IFDIR
}

// lookup finds n's child called name: the node whose inode it shows (a hard link shows
// its target's).
func (n tnode) lookup(name string) (tnode, bool) {
	c, ok := n.r.t.Lookup(n.n, name)
	if !ok {
		return tnode{}, false
	}
	cn := tnode{n.r, n.r.t.Inode(c)}
	cn.openLayer()
	return cn, true
}

// openLayer opens the layer of a file with data as it is looked up, so that a file looked
// up (and so any file opened) before its image is removed reads on. A failure shows when
// the file is read.
func (n tnode) openLayer() {
	layer, e := n.r.entry(n.n)
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
			ino = tnode{n.r, n.r.t.Parent(n.n)}.inode()
		}
		return fuse.DirEntry{Name: "..", Mode: syscall.S_IFDIR, Ino: ino}, n, true
	}
	c, ok := n.r.child(n.n, i-2)
	if !ok {
		return fuse.DirEntry{}, tnode{}, false
	}
	layer, e := n.r.entry(c)
	return fuse.DirEntry{Name: n.r.t.Name(c), Mode: typeBits(layer, &e), Ino: treeIno(n.r.base, n.r.t.Inode(c)), Off: uint64(i + 1)},
		tnode{n.r, n.r.t.Inode(c)}, true
}

func (n tnode) readlink() ([]byte, syscall.Errno) {
	layer, e := n.r.entry(n.n)
	if layer < 0 || e.Type != tar.TypeSymlink {
		return nil, syscall.EINVAL
	}
	return []byte(e.Linkname), 0
}

func (n tnode) read(dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	layer, e := n.r.entry(n.n)
	if layer < 0 || off >= e.Size {
		return fuse.ReadResultData(nil), 0
	}
	want := min(int64(len(dest)), e.Size-off)
	r, err := n.r.im.layer(layer)
	if err == nil {
		err = n.checkHeader(r, &e)
	}
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

// checkHeader checks, at the first read of n's entry in this mount, that the layer's
// stream r holds the entry's own tar header right before the data the index points at
// (layerindex.CheckHeader): an index, perhaps stale or forged, cannot make a file serve
// another file's bytes. Only success is remembered, so a header that could not be read
// (a span failing its checksum, a registry gone) is read again by the next read.
func (n tnode) checkHeader(r io.ReaderAt, e *layerindex.Entry) error {
	toc, i := n.r.t.Source(n.n)
	checked := n.r.im.fs.checkedEntries(toc)
	word, bit := &checked[i/64], uint64(1)<<(i%64)
	if word.Load()&bit != 0 {
		return nil
	}
	if err := layerindex.CheckHeader(r, *e); err != nil {
		return err
	}
	word.Or(bit)
	return nil
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
	layer, e := n.r.entry(n.n)
	var out []layerindex.Record
	if layer >= 0 {
		out = e.Xattrs()
	}
	if n.n == 0 && n.r.isLayer {
		im := n.r.im
		d := im.img.Manifest.Layers[n.r.layer]
		out = append(out, layerindex.Record{Key: "user.imgfs.digest", Value: d.Digest.String()},
			layerindex.Record{Key: "user.imgfs.mediatype", Value: d.MediaType},
			layerindex.Record{Key: "user.imgfs.fetched", Value: im.fs.fetched(d)})
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
