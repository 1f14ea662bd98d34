package fs

import (
	"context"
	"io"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/distribution/reference"
	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/imgfs/imgfs/layerindex"
	"github.com/imgfs/imgfs/layerindex/overlay"
	"github.com/imgfs/imgfs/store"
)

// image is the state of one image (by manifest digest) that every directory showing it
// shares: its blobs, layer trees and rootfs, made on first use and kept (images never
// change).
type image struct {
	fs    *FS
	img   store.Image
	label string // for messages: busybox:latest, or the ID

	mu       sync.Mutex
	manifest []byte
	config   []byte
	created  time.Time
	layers   []*overlay.Tree // by layer, nil until built

	exports map[string]*exportPlan // by name ("" untagged), made on first use; under mu

	rootfsMu sync.Mutex    // rootfs is merged once, outside mu: indexing a layer may take a while
	rootfs   *overlay.Tree // nil until merged
}

func newImage(f *FS, img store.Image) *image {
	label := img.ID.String()
	if img.Name != nil {
		label = reference.FamiliarString(img.Name)
	}
	return &image{fs: f, img: img, label: label, layers: make([]*overlay.Tree, len(img.Manifest.Layers))}
}

// meta reads the manifest and config bytes, once.
func (im *image) meta() error {
	im.mu.Lock()
	defer im.mu.Unlock()
	if im.config != nil {
		return nil
	}
	m, err := im.fs.readBlob(im.img.Descriptor.Digest, store.MaxManifestSize)
	if err != nil {
		return err
	}
	// A config that does not parse is still served as it is.
	c, cfg, err := im.fs.readConfig(im.img.Manifest.Config.Digest)
	if c == nil {
		return err
	}
	im.created = store.Created(cfg)
	im.manifest, im.config = m, c
	return nil
}

// createdTime is the image's creation date (zero if unknown), the mtime of the directories
// imgfs makes up inside it.
func (im *image) createdTime() time.Time {
	if err := im.meta(); err != nil {
		im.fs.log.Error("reading image", "image", im.label, "err", err)
	}
	im.mu.Lock()
	defer im.mu.Unlock()
	return im.created
}

// layerIndex returns the layer index of layer i.
func (im *image) layerIndex(i int) (*layerindex.Index, error) {
	return im.fs.layers.LayerIndex(im.img.Manifest.Layers[i])
}

// layerTree returns layer i's own tree, built on first use.
func (im *image) layerTree(i int) (*overlay.Tree, error) {
	im.mu.Lock()
	t := im.layers[i]
	im.mu.Unlock()
	if t != nil {
		return t, nil
	}
	ix, err := im.layerIndex(i)
	if err != nil {
		return nil, err
	}
	if t, err = overlay.Layer(ix); err != nil {
		return nil, err
	}
	im.mu.Lock()
	if im.layers[i] == nil {
		im.layers[i] = t
	}
	t = im.layers[i]
	im.mu.Unlock()
	return t, nil
}

// layer returns the uncompressed stream of layer i.
func (im *image) layer(i int) (io.ReaderAt, error) {
	r, _, err := im.fs.layers.Layer(im.img.Manifest.Layers[i])
	return r, err
}

// Kinds of the nodes inside an image, for inode numbers.
const (
	kindManifest byte = iota + 1
	kindConfig
	kindLayers
	kindLayer
	kindRootfs
	kindExport
	kindLayerTar
)

// exportPlan returns the plan holder of the export of img (this image under img.Name).
func (im *image) exportPlan(img store.Image) *exportPlan {
	key := ""
	if img.Name != nil {
		key = img.Name.String()
	}
	im.mu.Lock()
	defer im.mu.Unlock()
	if im.exports == nil {
		im.exports = make(map[string]*exportPlan)
	}
	p := im.exports[key]
	if p == nil {
		p = new(exportPlan)
		im.exports[key] = p
	}
	return p
}

// imageNode is an image's directory.
type imageNode struct {
	gofs.Inode
	im   *image
	ref  store.Image // the image as this directory names it (Name nil under sha256:<id>)
	path string      // in the mount, for messages
	ino  uint64
}

var (
	_ gofs.NodeLookuper  = (*imageNode)(nil)
	_ gofs.NodeReaddirer = (*imageNode)(nil)
	_ gofs.NodeGetattrer = (*imageNode)(nil)
)

// imageEntries are the names in an image directory, sorted.
var imageEntries = []string{"config.json", exportName, "layers", "manifest.json", "rootfs"}

func (n *imageNode) attr(a *fuse.Attr) {
	dirAttr(a, n.im.createdTime(), 4)
}

func (n *imageNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.attr(&out.Attr)
	out.SetTimeout(n.im.fs.opts.ImageTimeout)
	return 0
}

func (n *imageNode) childIno(kind byte) uint64 { return newIno().u64(n.ino).bytes(kind).sum() }

func (n *imageNode) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	return gofs.NewListDirStream(n.entries()), 0
}

// OpendirHandle lists the directory without attributes in READDIRPLUS (see listDir):
// rootfs/ is a tree's root, which rawFS must see looked up.
func (n *imageNode) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	return &listDir{list: n.entries()}, 0, 0
}

func (n *imageNode) entries() []fuse.DirEntry {
	list := make([]fuse.DirEntry, 0, len(imageEntries))
	for _, name := range imageEntries {
		e := fuse.DirEntry{Name: name, Mode: syscall.S_IFDIR}
		switch name {
		case "config.json":
			e.Mode, e.Ino = syscall.S_IFREG, n.childIno(kindConfig)
		case "manifest.json":
			e.Mode, e.Ino = syscall.S_IFREG, n.childIno(kindManifest)
		case exportName:
			e.Mode, e.Ino = syscall.S_IFREG, n.childIno(kindExport)
		case "layers":
			e.Ino = n.childIno(kindLayers)
		case "rootfs":
			e.Ino = n.childIno(kindRootfs)
		}
		list = append(list, e)
	}
	return withDots(&n.Inode, n.ino, list)
}

func (n *imageNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	im := n.im
	setTimeouts(out, im.fs.opts.ImageTimeout)
	switch name {
	case "manifest.json", "config.json":
		if err := im.meta(); err != nil {
			im.fs.log.Error("reading image", "image", im.label, "path", n.path+"/"+name, "err", err)
			return nil, syscall.EIO
		}
		kind := kindConfig
		im.mu.Lock()
		data := im.config
		if name == "manifest.json" {
			kind, data = kindManifest, im.manifest
		}
		im.mu.Unlock()
		node := &bytesNode{data: data, mtime: im.created}
		node.attr(&out.Attr)
		return n.NewInode(ctx, node, gofs.StableAttr{Mode: syscall.S_IFREG, Ino: n.childIno(kind)}), 0
	case exportName:
		return lookupExport(ctx, &n.Inode, im.fs, im.exportPlan(n.ref), []store.Image{n.ref},
			n.path+"/"+name, im.createdTime(), n.childIno(kindExport), out)
	case "layers":
		node := &layersNode{im: im, path: n.path + "/layers", ino: n.childIno(kindLayers)}
		node.attr(&out.Attr)
		return n.NewInode(ctx, node, gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: node.ino}), 0
	case "rootfs":
		t, err := im.rootfsTree()
		if err != nil {
			im.fs.log.Error("building rootfs", "image", im.label, "path", n.path+"/rootfs", "err", err)
			return nil, syscall.EIO
		}
		r := &treeRoot{im: im, t: t, base: n.childIno(kindRootfs), dotdot: n.ino, path: n.path + "/rootfs"}
		return im.fs.lookupRoot(ctx, &n.Inode, r, out), 0
	}
	return nil, syscall.ENOENT
}

// layersNode is an image's layers/ directory: 0 to N-1, bottom to top, each layer's tree,
// and 0.tar to N-1.tar, each layer's uncompressed tar.
type layersNode struct {
	gofs.Inode
	im   *image
	path string
	ino  uint64
}

var (
	_ gofs.NodeLookuper  = (*layersNode)(nil)
	_ gofs.NodeReaddirer = (*layersNode)(nil)
	_ gofs.NodeGetattrer = (*layersNode)(nil)
)

func (n *layersNode) attr(a *fuse.Attr) {
	dirAttr(a, n.im.createdTime(), 2+uint32(len(n.im.img.Manifest.Layers)))
}

func (n *layersNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.attr(&out.Attr)
	out.SetTimeout(n.im.fs.opts.ImageTimeout)
	return 0
}

func (n *layersNode) layerBase(i int) uint64 {
	return newIno().u64(n.ino).bytes(kindLayer).u32(uint32(i)).sum()
}

func (n *layersNode) tarIno(i int) uint64 {
	return newIno().u64(n.ino).bytes(kindLayerTar).u32(uint32(i)).sum()
}

func (n *layersNode) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	return gofs.NewListDirStream(n.entries()), 0
}

// OpendirHandle lists the directory without attributes in READDIRPLUS (see listDir):
// every entry is a tree's root, which rawFS must see looked up.
func (n *layersNode) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	return &listDir{list: n.entries()}, 0, 0
}

func (n *layersNode) entries() []fuse.DirEntry {
	count := len(n.im.img.Manifest.Layers)
	list := make([]fuse.DirEntry, 0, 2*count)
	for i := range count {
		name := strconv.Itoa(i)
		list = append(list, fuse.DirEntry{Name: name, Mode: syscall.S_IFDIR, Ino: treeIno(n.layerBase(i), 0)},
			fuse.DirEntry{Name: name + tarSuffix, Mode: syscall.S_IFREG, Ino: n.tarIno(i)})
	}
	return withDots(&n.Inode, n.ino, list)
}

// tarSuffix names a layer's tar in layers/.
const tarSuffix = ".tar"

// layerNumber returns the layer a name of layers/ (N or N.tar) names, and whether it is
// the tar; -1 when it names none.
func (n *layersNode) layerNumber(name string) (int, bool) {
	num, isTar := strings.CutSuffix(name, tarSuffix)
	i, err := strconv.Atoi(num)
	if err != nil || i < 0 || i >= len(n.im.img.Manifest.Layers) || strconv.Itoa(i) != num {
		return -1, false
	}
	return i, isTar
}

func (n *layersNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	i, isTar := n.layerNumber(name)
	if i < 0 {
		return nil, syscall.ENOENT
	}
	if isTar {
		return n.lookupTar(ctx, i, name, out)
	}
	t, err := n.im.layerTree(i)
	if err != nil {
		n.im.fs.log.Error("reading layer", "image", n.im.label, "path", n.path+"/"+name,
			"layer", n.im.img.Manifest.Layers[i].Digest, "err", err)
		return nil, syscall.EIO
	}
	r := &treeRoot{im: n.im, t: t, base: n.layerBase(i), dotdot: n.ino, path: n.path + "/" + name, layer: i, isLayer: true}
	return n.im.fs.lookupRoot(ctx, &n.Inode, r, out), 0
}

// lookupTar makes the node of layers/N.tar. Its size is the layer index's, so the layer is
// indexed (once) here, not read.
func (n *layersNode) lookupTar(ctx context.Context, i int, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	im := n.im
	ix, err := im.layerIndex(i)
	if err != nil {
		im.fs.log.Error("reading layer", "image", im.label, "path", n.path+"/"+name,
			"layer", im.img.Manifest.Layers[i].Digest, "err", err)
		return nil, syscall.EIO
	}
	node := &layerTarNode{im: im, layer: i, size: ix.Size, path: n.path + "/" + name, mtime: im.createdTime()}
	node.attr(&out.Attr)
	setTimeouts(out, im.fs.opts.ImageTimeout)
	// As for export.tar: the file opened next, read whole and in order, reads ahead more.
	im.fs.opts.ReadAhead.Raise()
	return n.NewInode(ctx, node, gofs.StableAttr{Mode: syscall.S_IFREG, Ino: n.tarIno(i)}), 0
}

// bytesNode is a small file held in memory (manifest.json, config.json). They are 0444
// for everyone the mount lets in, even under AllowOther: they hold no file's bytes, only
// digests and the image's config, which whoever may use rootfs/ needs to run it.
type bytesNode struct {
	gofs.Inode
	data  []byte
	mtime time.Time
}

var (
	_ gofs.NodeGetattrer = (*bytesNode)(nil)
	_ gofs.NodeOpener    = (*bytesNode)(nil)
	_ gofs.NodeReader    = (*bytesNode)(nil)
)

func (n *bytesNode) attr(a *fuse.Attr) { fileAttr(a, int64(len(n.data)), 4096, n.mtime) }

// fileAttr fills the attributes of a file imgfs makes up (not from a layer).
func fileAttr(a *fuse.Attr, size int64, blksize uint32, mtime time.Time) {
	a.Mode = syscall.S_IFREG | 0o444
	a.Size = uint64(size)
	a.Nlink = 1
	a.Blksize = blksize
	a.Blocks = (a.Size + 511) / 512
	setTimes(a, mtime)
}

func (n *bytesNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.attr(&out.Attr)
	return 0
}

func (n *bytesNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	return openMadeUp(flags)
}

// openMadeUp opens a file imgfs makes up: for reading only, its pages kept (it never changes).
func openMadeUp(flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC) != 0 {
		return nil, 0, syscall.EROFS
	}
	return nil, fuse.FOPEN_KEEP_CACHE, 0
}

func (n *bytesNode) Read(ctx context.Context, f gofs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off >= int64(len(n.data)) {
		return fuse.ReadResultData(nil), 0
	}
	end := min(off+int64(len(dest)), int64(len(n.data)))
	return fuse.ReadResultData(n.data[off:end]), 0
}
