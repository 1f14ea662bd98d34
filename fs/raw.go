package fs

import (
	"context"
	"math"
	"sync"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/imgfs/imgfs/layerindex/overlay"
)

// The trees of an image (rootfs/, layers/N/) are served below go-fuse's node API. The node
// API keeps an Inode, with maps, for every node the kernel holds, and the kernel holds
// every entry looked up until memory pressure or drop_caches makes it forget: the daemon
// would grow with every entry a walk looks up. rawFS serves
// the trees itself, from their nodes' numbers: the node ID the kernel gets for a node is
// rawBit | tree<<32 | node, and the daemon keeps nothing per node. The node API still
// serves everything above the trees, and makes a tree's root (treeNode) in the LOOKUP
// that finds it; rawFS then swaps the root's node ID in the reply for its own and forgets
// the node API's. The directories holding roots (an image's, layers/) give no attributes
// in READDIRPLUS (listDir), so that every root the kernel knows comes from a LOOKUP.
const rawBit = 1 << 63

// rawTreeRef is a tree's root as the kernel holds it: refs is the kernel's lookup count of
// the root, which outlives every node below it (a dentry holds its parent).
type rawTreeRef struct {
	root *treeRoot
	id   uint32
	refs uint64
}

// rawTrees are the trees the kernel holds, by number and by root inode number.
type rawTrees struct {
	mu     sync.RWMutex
	byID   map[uint32]*rawTreeRef
	byBase map[uint64]*rawTreeRef
	offers map[uint64]*treeRoot // roots made by LOOKUPs the raw layer has not seen yet
	next   uint32
}

// lookupRoot answers the lookup of a tree's root: a treeNode, which rawFS takes over.
func (f *FS) lookupRoot(ctx context.Context, parent *gofs.Inode, r *treeRoot, out *fuse.EntryOut) *gofs.Inode {
	n := tnode{r, 0}
	n.attr(&out.Attr)
	setTimeouts(out, f.opts.ImageTimeout)
	f.raw.mu.Lock()
	if f.raw.offers == nil {
		f.raw.offers = make(map[uint64]*treeRoot)
	}
	if _, ok := f.raw.byBase[r.base]; !ok {
		f.raw.offers[r.base] = r
	}
	f.raw.mu.Unlock()
	return parent.NewInode(ctx, &treeNode{node: n}, gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: n.inode()})
}

// take returns the node ID of the root of inode number ino if it is a tree's root,
// counting one more kernel reference to it.
func (t *rawTrees) take(ino uint64) (uint64, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ref := t.byBase[ino]
	if ref == nil {
		r := t.offers[ino]
		if r == nil || t.next >= math.MaxInt32 {
			return 0, false
		}
		delete(t.offers, ino)
		t.next++
		r.id = t.next
		ref = &rawTreeRef{root: r, id: t.next}
		if t.byID == nil {
			t.byID = make(map[uint32]*rawTreeRef)
			t.byBase = make(map[uint64]*rawTreeRef)
		}
		t.byID[ref.id] = ref
		t.byBase[ino] = ref
	}
	ref.refs++
	return rawBit | uint64(ref.id)<<32, true
}

// forget drops n kernel references to the tree of node ID id, if it is the tree's root.
func (t *rawTrees) forget(id, n uint64) {
	if uint32(id) != 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	ref := t.byID[uint32(id>>32)&^(rawBit>>32)]
	if ref == nil {
		return
	}
	ref.refs -= min(n, ref.refs)
	if ref.refs == 0 {
		delete(t.byID, ref.id)
		delete(t.byBase, ref.root.base)
	}
}

func (t *rawTrees) node(id uint64) (tnode, bool) {
	t.mu.RLock()
	ref := t.byID[uint32(id>>32)&^(rawBit>>32)]
	t.mu.RUnlock()
	if ref == nil {
		return tnode{}, false
	}
	return tnode{ref.root, overlay.Node(uint32(id))}, true
}

// Raw returns the filesystem to serve: bridge (go-fuse's node API over Root, made with
// gofs.NewNodeFS) with the images' trees served below it.
func (f *FS) Raw(bridge fuse.RawFileSystem) fuse.RawFileSystem {
	return &rawFS{RawFileSystem: bridge, f: f}
}

type rawFS struct {
	fuse.RawFileSystem
	f *FS
}

func isRaw(id uint64) bool { return id&rawBit != 0 }

func (r *rawFS) node(id uint64) (tnode, fuse.Status) {
	n, ok := r.f.raw.node(id)
	if !ok {
		return n, fuse.Status(syscall.ESTALE)
	}
	return n, fuse.OK
}

func (r *rawFS) entryOut(n tnode, out *fuse.EntryOut) {
	n.attr(&out.Attr)
	out.NodeId = uint64(rawBit) | uint64(n.r.id)<<32 | uint64(n.n)
	setTimeouts(out, r.f.opts.ImageTimeout)
}

func (r *rawFS) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	if !isRaw(h.NodeId) {
		st := r.RawFileSystem.Lookup(cancel, h, name, out)
		if st == fuse.OK && out.Attr.Mode&syscall.S_IFMT == syscall.S_IFDIR {
			if id, ok := r.f.raw.take(out.Ino); ok {
				r.RawFileSystem.Forget(out.NodeId, 1)
				out.NodeId = id
			}
		}
		return st
	}
	n, st := r.node(h.NodeId)
	if !st.Ok() {
		return st
	}
	if !n.isDir() {
		return fuse.Status(syscall.ENOTDIR)
	}
	var c tnode
	switch name {
	case ".":
		c = n
	case "..":
		if n.n == 0 {
			return fuse.ENOENT // above the tree: only NFS asks, and imgfs is not exported
		}
		c = tnode{n.r, n.r.t.Parent(n.n)}
	default:
		var ok bool
		if c, ok = n.lookup(name); !ok {
			return fuse.ENOENT
		}
	}
	r.entryOut(c, out)
	return fuse.OK
}

func (r *rawFS) Forget(id, n uint64) {
	if !isRaw(id) {
		r.RawFileSystem.Forget(id, n)
		return
	}
	r.f.raw.forget(id, n)
}

func (r *rawFS) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	if !isRaw(in.NodeId) {
		return r.RawFileSystem.GetAttr(cancel, in, out)
	}
	n, st := r.node(in.NodeId)
	if st.Ok() {
		n.attr(&out.Attr)
		out.SetTimeout(r.f.opts.ImageTimeout)
	}
	return st
}

func (r *rawFS) Statx(cancel <-chan struct{}, in *fuse.StatxIn, out *fuse.StatxOut) fuse.Status {
	if !isRaw(in.NodeId) {
		return r.RawFileSystem.Statx(cancel, in, out)
	}
	return fuse.ENOSYS // as the node API answers for the nodes above: the kernel asks GETATTR
}

func (r *rawFS) Access(cancel <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	if !isRaw(in.NodeId) {
		return r.RawFileSystem.Access(cancel, in)
	}
	n, st := r.node(in.NodeId)
	if !st.Ok() {
		return st
	}
	var a fuse.Attr
	n.attr(&a)
	if !hasAccess(in.Caller.Uid, in.Caller.Gid, a.Uid, a.Gid, a.Mode, in.Mask) {
		return fuse.EACCES
	}
	return fuse.OK
}

// hasAccess checks a caller against a file's owner and permission bits for access(2)'s
// mask (R_OK 4, W_OK 2, X_OK 1). Root may do anything but execute a file no one may.
func hasAccess(uid, gid, fileUID, fileGID, mode, mask uint32) bool {
	mask &= 7
	if uid == 0 {
		return mask&1 == 0 || mode&0o111 != 0 || mode&syscall.S_IFMT == syscall.S_IFDIR
	}
	perm := mode & 7
	switch {
	case uid == fileUID:
		perm = mode >> 6 & 7
	case gid == fileGID:
		perm = mode >> 3 & 7
	}
	return perm&mask == mask
}

func (r *rawFS) Readlink(cancel <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	if !isRaw(h.NodeId) {
		return r.RawFileSystem.Readlink(cancel, h)
	}
	n, st := r.node(h.NodeId)
	if !st.Ok() {
		return nil, st
	}
	b, errno := n.readlink()
	return b, fuse.ToStatus(errno)
}

func (r *rawFS) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	if !isRaw(h.NodeId) {
		return r.RawFileSystem.GetXAttr(cancel, h, attr, dest)
	}
	n, st := r.node(h.NodeId)
	if !st.Ok() {
		return 0, st
	}
	sz, errno := n.getxattr(attr, dest)
	return sz, fuse.ToStatus(errno)
}

func (r *rawFS) ListXAttr(cancel <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	if !isRaw(h.NodeId) {
		return r.RawFileSystem.ListXAttr(cancel, h, dest)
	}
	n, st := r.node(h.NodeId)
	if !st.Ok() {
		return 0, st
	}
	sz, errno := n.listxattr(dest)
	return sz, fuse.ToStatus(errno)
}

func (r *rawFS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if !isRaw(in.NodeId) {
		return r.RawFileSystem.Open(cancel, in, out)
	}
	if _, st := r.node(in.NodeId); !st.Ok() {
		return st
	}
	return fuse.ToStatus(openFlags(in.Flags))
}

func (r *rawFS) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	if !isRaw(in.NodeId) {
		return r.RawFileSystem.Read(cancel, in, buf)
	}
	n, st := r.node(in.NodeId)
	if !st.Ok() {
		return nil, st
	}
	res, errno := n.read(buf, int64(in.Offset))
	return res, fuse.ToStatus(errno)
}

func (r *rawFS) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	if !isRaw(in.NodeId) {
		r.RawFileSystem.Release(cancel, in)
	}
}

// Flush answers ENOSYS: the kernel then sends no FLUSH on close for the rest of the mount.
// There is nothing to flush on a read-only filesystem.
func (r *rawFS) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	if !isRaw(in.NodeId) {
		return r.RawFileSystem.Flush(cancel, in)
	}
	return fuse.ENOSYS
}

// OpenDir opens a directory of a tree: no handle, as a position in it is all a READDIR
// needs; the kernel keeps what it lists (FOPEN_CACHE_DIR): what is inside an image never
// changes, so a directory listed once is listed again without a round trip.
func (r *rawFS) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if !isRaw(in.NodeId) {
		return r.RawFileSystem.OpenDir(cancel, in, out)
	}
	n, st := r.node(in.NodeId)
	if !st.Ok() {
		return st
	}
	if !n.isDir() {
		return fuse.Status(syscall.ENOTDIR)
	}
	out.OpenFlags = fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE
	return fuse.OK
}

func (r *rawFS) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	if !isRaw(in.NodeId) {
		return r.RawFileSystem.ReadDir(cancel, in, out)
	}
	return r.readDir(in, out, false)
}

func (r *rawFS) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	if !isRaw(in.NodeId) {
		return r.RawFileSystem.ReadDirPlus(cancel, in, out)
	}
	return r.readDir(in, out, true)
}

// readDir lists a directory from in.Offset: entry i (".", "..", then the children in name
// order) has offset i+1, where the next read starts.
func (r *rawFS) readDir(in *fuse.ReadIn, out *fuse.DirEntryList, plus bool) fuse.Status {
	n, st := r.node(in.NodeId)
	if !st.Ok() {
		return st
	}
	if in.Offset > math.MaxInt32 {
		return fuse.EINVAL
	}
	for i := int(in.Offset); ; i++ {
		de, c, ok := n.dirent(i)
		if !ok {
			return fuse.OK
		}
		de.Off = uint64(i + 1)
		if !plus {
			if !out.AddDirEntry(de) {
				return fuse.OK
			}
			continue
		}
		eo := out.AddDirLookupEntry(de)
		if eo == nil {
			return fuse.OK
		}
		if i >= 2 { // the kernel takes no attributes for "." and ".."
			c.openLayer()
			r.entryOut(c, eo)
		}
	}
}

func (r *rawFS) ReleaseDir(in *fuse.ReleaseIn) {
	if !isRaw(in.NodeId) {
		r.RawFileSystem.ReleaseDir(in)
	}
}

func (r *rawFS) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	if isRaw(h.NodeId) {
		root := *h
		root.NodeId = fuse.FUSE_ROOT_ID
		h = &root
	}
	return r.RawFileSystem.StatFs(cancel, h, out)
}

// What follows changes files or locks them: refused in the trees, which are read-only.

func (r *rawFS) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	if isRaw(in.NodeId) {
		return fuse.EROFS
	}
	return r.RawFileSystem.SetAttr(cancel, in, out)
}

func (r *rawFS) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	if isRaw(in.NodeId) {
		return fuse.EROFS
	}
	return r.RawFileSystem.Mknod(cancel, in, name, out)
}

func (r *rawFS) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	if isRaw(in.NodeId) {
		return fuse.EROFS
	}
	return r.RawFileSystem.Mkdir(cancel, in, name, out)
}

func (r *rawFS) Unlink(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	if isRaw(h.NodeId) {
		return fuse.EROFS
	}
	return r.RawFileSystem.Unlink(cancel, h, name)
}

func (r *rawFS) Rmdir(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	if isRaw(h.NodeId) {
		return fuse.EROFS
	}
	return r.RawFileSystem.Rmdir(cancel, h, name)
}

func (r *rawFS) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	if isRaw(in.NodeId) || isRaw(in.Newdir) {
		return fuse.EROFS
	}
	return r.RawFileSystem.Rename(cancel, in, oldName, newName)
}

func (r *rawFS) Link(cancel <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	if isRaw(in.NodeId) || isRaw(in.Oldnodeid) {
		return fuse.EROFS
	}
	return r.RawFileSystem.Link(cancel, in, name, out)
}

func (r *rawFS) Symlink(cancel <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	if isRaw(h.NodeId) {
		return fuse.EROFS
	}
	return r.RawFileSystem.Symlink(cancel, h, target, name, out)
}

func (r *rawFS) SetXAttr(cancel <-chan struct{}, in *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	if isRaw(in.NodeId) {
		return fuse.EROFS
	}
	return r.RawFileSystem.SetXAttr(cancel, in, attr, data)
}

func (r *rawFS) RemoveXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string) fuse.Status {
	if isRaw(h.NodeId) {
		return fuse.EROFS
	}
	return r.RawFileSystem.RemoveXAttr(cancel, h, attr)
}

func (r *rawFS) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	if isRaw(in.NodeId) {
		return fuse.EROFS
	}
	return r.RawFileSystem.Create(cancel, in, name, out)
}

func (r *rawFS) Tmpfile(cancel <-chan struct{}, in *fuse.CreateIn, out *fuse.CreateOut) fuse.Status {
	if isRaw(in.NodeId) {
		return fuse.EROFS
	}
	return r.RawFileSystem.Tmpfile(cancel, in, out)
}

func (r *rawFS) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	if isRaw(in.NodeId) {
		return 0, fuse.EROFS
	}
	return r.RawFileSystem.Write(cancel, in, data)
}

func (r *rawFS) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	if isRaw(in.NodeId) {
		return 0, fuse.EROFS
	}
	return r.RawFileSystem.Writev(cancel, in, data)
}

func (r *rawFS) CopyFileRange(cancel <-chan struct{}, in *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	if isRaw(in.NodeId) || isRaw(in.NodeIdOut) {
		return 0, fuse.EROFS
	}
	return r.RawFileSystem.CopyFileRange(cancel, in)
}

func (r *rawFS) Fallocate(cancel <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	if isRaw(in.NodeId) {
		return fuse.EROFS
	}
	return r.RawFileSystem.Fallocate(cancel, in)
}

func (r *rawFS) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	if isRaw(in.NodeId) {
		return fuse.ENOSYS
	}
	return r.RawFileSystem.Fsync(cancel, in)
}

func (r *rawFS) FsyncDir(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	if isRaw(in.NodeId) {
		return fuse.ENOSYS
	}
	return r.RawFileSystem.FsyncDir(cancel, in)
}

func (r *rawFS) Ioctl(cancel <-chan struct{}, in *fuse.IoctlIn, inbuf []byte, out *fuse.IoctlOut, outbuf []byte) fuse.Status {
	if isRaw(in.NodeId) {
		return fuse.ENOTSUP
	}
	return r.RawFileSystem.Ioctl(cancel, in, inbuf, out, outbuf)
}

func (r *rawFS) Lseek(cancel <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	if isRaw(in.NodeId) {
		return fuse.ENOSYS
	}
	return r.RawFileSystem.Lseek(cancel, in, out)
}

func (r *rawFS) GetLk(cancel <-chan struct{}, in *fuse.LkIn, out *fuse.LkOut) fuse.Status {
	if isRaw(in.NodeId) {
		return fuse.ENOSYS
	}
	return r.RawFileSystem.GetLk(cancel, in, out)
}

func (r *rawFS) SetLk(cancel <-chan struct{}, in *fuse.LkIn) fuse.Status {
	if isRaw(in.NodeId) {
		return fuse.ENOSYS
	}
	return r.RawFileSystem.SetLk(cancel, in)
}

func (r *rawFS) SetLkw(cancel <-chan struct{}, in *fuse.LkIn) fuse.Status {
	if isRaw(in.NodeId) {
		return fuse.ENOSYS
	}
	return r.RawFileSystem.SetLkw(cancel, in)
}

// listDir is an open directory of a fixed list of entries (an image's, layers/) whose
// READDIRPLUS gives no attributes (go-fuse leaves an entry's attributes empty when its
// FileLookuper fails, and the kernel then takes none): the kernel looks each name up
// when it needs it, and rawFS sees every tree root the kernel holds in a LOOKUP reply.
type listDir struct {
	list []fuse.DirEntry
	i    int
}

var (
	_ gofs.FileReaddirenter = (*listDir)(nil)
	_ gofs.FileSeekdirer    = (*listDir)(nil)
	_ gofs.FileLookuper     = (*listDir)(nil)
	_ gofs.FileReleasedirer = (*listDir)(nil)
)

func (d *listDir) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if d.i >= len(d.list) {
		return nil, 0
	}
	de := d.list[d.i]
	d.i++
	de.Off = uint64(d.i)
	return &de, 0
}

func (d *listDir) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if off > uint64(len(d.list)) {
		return syscall.EINVAL
	}
	d.i = int(off)
	return 0
}

func (d *listDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EAGAIN
}

func (d *listDir) Releasedir(ctx context.Context, releaseFlags uint32) {}
