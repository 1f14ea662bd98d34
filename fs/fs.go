// Package fs is imgfs's filesystem: go-fuse nodes serving the images of a store as the tree
// DESIGN.md describes ("What a user sees").
//
//	/                              repositories by familiar name, components as directories
//	busybox/latest/                an image: rootfs/, layers/N/, manifest.json, config.json
//	sha256:<id or 12+ hex prefix>/ an image by ID (looked up, never listed)
//
// The directories above the images follow the store: index.json is read again when it
// changed (checked at most every RefreshInterval), and those directories are cached by the
// kernel for NameTimeout only. What is inside an image never changes and is cached for
// ImageTimeout. Every byte of a file is read on demand from its layer blob through a
// layerindex.Reader; nothing is extracted.
package fs

import (
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/imgfs/imgfs/layerindex"
	"github.com/imgfs/imgfs/mount/readahead"
	"github.com/imgfs/imgfs/store"
	"github.com/opencontainers/go-digest"
)

// Options configure an FS. Zero values mean the defaults.
type Options struct {
	// CacheSize bounds the decoded spans kept for the whole mount
	// (layerindex.DefaultCacheSize).
	CacheSize int64
	// NameTimeout is how long the kernel may cache the directories above the images
	// (1 s); RefreshInterval is how often index.json is checked for changes at most
	// (500 ms). Together they bound how late an import or a removal shows.
	NameTimeout     time.Duration
	RefreshInterval time.Duration
	// ImageTimeout is how long the kernel may cache what is inside an image (1 h):
	// images never change.
	ImageTimeout time.Duration
	// Logger gets read errors and store problems (slog.Default()).
	Logger *slog.Logger
	// AllowOther says that users other than the mount's owner are let in, the kernel
	// checking each file's mode and owner (mount.Options.AllowOther). export.tar, which
	// holds the bytes of every file of its images whatever their modes, is then the
	// owner's only: mode 0400, the uid and gid of this process.
	AllowOther bool
	// ReadAhead is the mount's read-ahead switch (nil: none). It is raised when the lookup
	// of an export.tar is answered, which every open of one follows, and lowered at the
	// first read of one: export.tar is read whole and in order, and goes faster read
	// further ahead than the many small files of rootfs/.
	ReadAhead *readahead.Switch
	// Remotes are the registries whose images the mount shows under HOST[:PORT]/ (imgfs
	// mount --registry), read lazily: their layers through the mount's pool, from the
	// store's blobs/ when it has them, else from the registry.
	Remotes []Remote
}

// FS serves the images of a store. Make one with New; its Root is the root node to mount.
type FS struct {
	store *store.Store
	// layers are the layers read for the whole mount, each opened once, with one cache
	// of decoded spans; they stay open until Close, so that a file or an export.tar
	// looked up before its image is removed and its blobs collected reads on.
	layers *store.Layers
	log    *slog.Logger
	opts   Options
	start  time.Time
	uid    uint32 // the mount's owner, whose export.tar is under AllowOther
	gid    uint32

	mu      sync.Mutex
	checked time.Time       // when index.json was last checked
	stamp   indexStamp      // index.json as last read
	names   *nameDir        // the tree above the images, from the last read
	hidden  map[string]bool // the image names no path reaches that were logged (logHidden)
	images  map[digest.Digest]*image

	failedMu sync.Mutex
	failed   map[digest.Digest]bool // layers whose read failure was logged

	raw rawTrees // the trees the kernel holds by rawFS's node IDs

	// headers holds, for each layer's TOC (*layerindex.TOC), a bit per entry: set once a
	// read found the entry's tar header where the index says (tnode.checkHeader). Keyed by
	// TOC, not by tree, so rootfs/ and layers/N/ of every image sharing the layer check an
	// entry once.
	headers sync.Map

	remotes map[string]*remoteReg // by host, fixed at New
	smallMu sync.Mutex
	small   map[digest.Digest][]byte // the manifests and configs of registry images, verified
}

// checkedEntries returns the bits of toc's entries whose headers were checked.
func (f *FS) checkedEntries(toc *layerindex.TOC) []atomic.Uint64 {
	if b, ok := f.headers.Load(toc); ok {
		return b.([]atomic.Uint64)
	}
	b, _ := f.headers.LoadOrStore(toc, make([]atomic.Uint64, (toc.Len()+63)/64))
	return b.([]atomic.Uint64)
}

// New returns the filesystem of the images in s.
func New(s *store.Store, opts Options) *FS {
	if opts.NameTimeout <= 0 {
		opts.NameTimeout = time.Second
	}
	if opts.RefreshInterval <= 0 {
		opts.RefreshInterval = 500 * time.Millisecond
	}
	if opts.ImageTimeout <= 0 {
		opts.ImageTimeout = time.Hour
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.CacheSize <= 0 {
		opts.CacheSize = layerindex.DefaultCacheSize
	}
	srcs := []store.BlobSource{s.Blobs()}
	remotes := make(map[string]*remoteReg, len(opts.Remotes))
	for _, r := range opts.Remotes {
		srcs = append(srcs, r.Blobs())
		remotes[r.Host()] = newRemoteReg(r)
	}
	return &FS{
		store:   s,
		remotes: remotes,
		small:   make(map[digest.Digest][]byte),
		layers:  s.NewLayers(store.Sources(srcs...), opts.CacheSize),
		log:     opts.Logger,
		opts:    opts,
		start:   time.Now(),
		uid:     uint32(os.Getuid()),
		gid:     uint32(os.Getgid()),
		images:  make(map[digest.Digest]*image),
	}
}

// Root returns the root directory node.
func (f *FS) Root() gofs.InodeEmbedder {
	return &nameNode{fs: f, path: ""}
}

// MountOptions returns the go-fuse options the tree is meant to be served with: default
// timeouts, permissions as the images give them (a mode of 0 stays 0).
func (f *FS) MountOptions() *gofs.Options {
	nt := f.opts.NameTimeout
	return &gofs.Options{
		EntryTimeout:    &nt,
		AttrTimeout:     &nt,
		NullPermissions: true,
		RootStableAttr:  &gofs.StableAttr{Ino: 1},
	}
}

// Close releases the layer blobs opened for reading.
func (f *FS) Close() error { return f.layers.Close() }

// indexStamp identifies a version of index.json (it is replaced by rename on every write).
type indexStamp struct {
	ino   uint64
	size  int64
	mtime time.Time
}

func statIndex(root string) (indexStamp, error) {
	fi, err := os.Stat(filepath.Join(root, "index.json"))
	if err != nil {
		return indexStamp{}, err
	}
	st := indexStamp{size: fi.Size(), mtime: fi.ModTime()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.ino = sys.Ino
	}
	return st, nil
}

// tree returns the directories above the images, reading index.json again if it changed
// and was not checked for RefreshInterval.
func (f *FS) tree() *nameDir {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	if f.names != nil && now.Sub(f.checked) < f.opts.RefreshInterval {
		return f.names
	}
	f.checked = now
	st, err := statIndex(f.store.Root())
	if err != nil {
		f.log.Error("reading the store", "store", f.store.Root(), "err", err)
		if f.names == nil {
			f.names = newNameDir("")
		}
		return f.names
	}
	if f.names != nil && st == f.stamp {
		return f.names
	}
	imgs, err := f.store.Images()
	if err != nil {
		f.log.Error("reading the store", "store", f.store.Root(), "err", err)
		if imgs == nil && f.names != nil {
			return f.names // try again next time
		}
	}
	f.stamp = st
	var hidden []hiddenName
	f.names, hidden = buildNames(imgs, st.mtime)
	f.logHidden(hidden)
	// Forget the state of images no longer named; nodes still in use keep theirs.
	live := make(map[digest.Digest]bool, len(imgs))
	for _, img := range imgs {
		live[img.Descriptor.Digest] = true
	}
	for d := range f.images {
		if !live[d] && !f.isRemote(d) {
			delete(f.images, d)
		}
	}
	return f.names
}

// logHidden logs the image names no path reaches, each once for the life of the mount
// (index.json is read again on every change). Called with f.mu held.
func (f *FS) logHidden(hidden []hiddenName) {
	for _, h := range hidden {
		key := h.name + "\x00" + h.path + "\x00" + h.id.String()
		if f.hidden[key] {
			continue
		}
		if f.hidden == nil {
			f.hidden = make(map[string]bool)
		}
		f.hidden[key] = true
		f.log.Warn("image name hidden by the tree: reach the image by ID", "name", h.name,
			"path", h.path, "id", h.id.String())
	}
}

// image returns the shared state of img (its layer trees, its rootfs), by manifest digest.
func (f *FS) image(img store.Image) *image {
	f.mu.Lock()
	defer f.mu.Unlock()
	if im, ok := f.images[img.Descriptor.Digest]; ok {
		return im
	}
	im := newImage(f, img)
	f.images[img.Descriptor.Digest] = im
	return im
}

// inoKey hashes the parts that identify a node (FNV-1a, 64 bits) into its inode number:
// start with newIno, add each part with the method of its type, and take sum.
type inoKey uint64

func newIno() inoKey { return 14695981039346656037 }

func (k inoKey) bytes(b ...byte) inoKey {
	for _, c := range b {
		k = (k ^ inoKey(c)) * 1099511628211
	}
	return k
}

// str adds a string, ended by a zero byte so that ("ab", "c") and ("a", "bc") differ.
func (k inoKey) str(s string) inoKey {
	for i := range len(s) {
		k = k.bytes(s[i])
	}
	return k.bytes(0)
}

func (k inoKey) u64(v uint64) inoKey {
	return k.bytes(byte(v), byte(v>>8), byte(v>>16), byte(v>>24), byte(v>>32), byte(v>>40), byte(v>>48), byte(v>>56))
}

func (k inoKey) u32(v uint32) inoKey {
	return k.bytes(byte(v), byte(v>>8), byte(v>>16), byte(v>>24))
}

// sum is the inode number, avoiding those go-fuse and the kernel reserve (0, 1 for the
// root, ^0).
func (k inoKey) sum() uint64 {
	switch n := uint64(k); n {
	case 0, 1:
		return n + 2
	case ^uint64(0):
		return n - 1
	default:
		return n
	}
}

// dotEntry is "." (i 0, inode self) or ".." (i 1, the parent's inode; self at the root).
func dotEntry(n *gofs.Inode, i int, self uint64) fuse.DirEntry {
	if i == 0 {
		return fuse.DirEntry{Name: ".", Mode: syscall.S_IFDIR, Ino: self}
	}
	ino := self
	if _, p := n.Parent(); p != nil {
		ino = p.StableAttr().Ino
	}
	return fuse.DirEntry{Name: "..", Mode: syscall.S_IFDIR, Ino: ino}
}

// withDots puts "." and ".." before a directory's entries, as every directory lists them.
func withDots(n *gofs.Inode, self uint64, list []fuse.DirEntry) []fuse.DirEntry {
	return append([]fuse.DirEntry{dotEntry(n, 0, self), dotEntry(n, 1, self)}, list...)
}

// setTimeouts sets an entry's cache timeouts.
func setTimeouts(out *fuse.EntryOut, d time.Duration) {
	out.SetEntryTimeout(d)
	out.SetAttrTimeout(d)
}

// dirAttr fills the attributes of a directory imgfs makes up (not from a layer).
func dirAttr(a *fuse.Attr, mtime time.Time, nlink uint32) {
	a.Mode = syscall.S_IFDIR | 0o555
	a.Nlink = nlink
	setTimes(a, mtime)
	a.Blksize = 4096
}

func setTimes(a *fuse.Attr, t time.Time) {
	if t.IsZero() {
		t = time.Unix(0, 0)
	}
	a.SetTimes(&t, &t, &t)
}

// readFailed logs a failed read of layer d (empty: of no layer) with msg and args, unless
// one of d was logged already: a damaged layer fails every read that reaches the damage,
// thousands in a walk, and the first line says which layer and where. The reads go on
// failing with EIO.
func (f *FS) readFailed(d digest.Digest, msg string, args ...any) {
	if d != "" {
		f.failedMu.Lock()
		logged := f.failed[d]
		if f.failed == nil {
			f.failed = make(map[digest.Digest]bool)
		}
		f.failed[d] = true
		f.failedMu.Unlock()
		if logged {
			return
		}
		msg += " (later failures of this layer are not logged)"
		args = append(args, "layer", d)
	}
	f.log.Error(msg, args...)
}
