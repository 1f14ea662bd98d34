package fs

import (
	"context"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/distribution/reference"
	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/imgfs/imgfs/store"
	"github.com/opencontainers/go-digest"
)

// nameDir is a directory above the images: the root, a host or path component of a
// repository name, or a repository (whose images are its tags).
type nameDir struct {
	path   string // "" for the root, else "busybox", "ghcr.io/acme"
	mtime  time.Time
	dirs   map[string]*nameDir
	images map[string]store.Image // by tag
	list   []string               // every name in it, sorted
	export exportPlan             // of every tag in it, when it has any
}

func newNameDir(path string) *nameDir {
	return &nameDir{path: path, dirs: map[string]*nameDir{}, images: map[string]store.Image{}}
}

// buildNames makes the tree of the named images, and returns the names that no path of
// it reaches. Untagged images are left out (they are reachable by ID). Where a name meets
// a path the tree already gives (docker allows both), the tree wins, and the name is
// reached through its image's ID: a repository's export.tar wins over a tag export.tar
// (busybox:export.tar), and an image over a deeper repository of the same name (busybox:x
// over busybox/x:latest, whose directory busybox/x is busybox:x's).
func buildNames(imgs []store.Image, mtime time.Time) (*nameDir, []hiddenName) {
	root := newNameDir("")
	for _, img := range imgs {
		if img.Name == nil {
			continue
		}
		var leaf string
		switch n := img.Name.(type) {
		case reference.Tagged:
			leaf = n.Tag()
		case reference.Digested:
			leaf = n.Digest().String()
		default:
			continue
		}
		d := root
		for c := range strings.SplitSeq(reference.FamiliarName(img.Name), "/") {
			sub, ok := d.dirs[c]
			if !ok {
				sub = newNameDir(d.child(c))
				d.dirs[c] = sub
			}
			d = sub
		}
		d.images[leaf] = img
	}
	hidden := root.finish(mtime)
	slices.SortFunc(hidden, func(a, b hiddenName) int { return strings.Compare(a.name, b.name) })
	return root, hidden
}

// hiddenName is an image name that no path of the tree reaches: the path it would have
// gives something else.
type hiddenName struct {
	name string        // busybox:export.tar, busybox/x:latest
	path string        // busybox/export.tar (the repository's export), busybox/x (busybox:x)
	id   digest.Digest // the image's ID: sha256:<id> reaches it
}

// child is the path of d's entry name.
func (d *nameDir) child(name string) string {
	if d.path == "" {
		return name
	}
	return d.path + "/" + name
}

// finish lists d's names (and those of the directories below) and returns the images of
// d's subtree that no path reaches.
func (d *nameDir) finish(mtime time.Time) []hiddenName {
	d.mtime = mtime
	var hidden []hiddenName
	for n, sub := range d.dirs {
		below := sub.finish(mtime)
		if d.taken(n) {
			hidden = sub.every(hidden, d.child(n))
			continue
		}
		hidden = append(hidden, below...)
		d.list = append(d.list, n)
	}
	for n, img := range d.images {
		if n == exportName {
			// Still a tag of the repository: the repository's export.tar has it.
			hidden = append(hidden, hiddenName{reference.FamiliarString(img.Name), d.child(n), img.ID})
			continue
		}
		d.list = append(d.list, n)
	}
	if len(d.images) > 0 {
		d.list = append(d.list, exportName)
	}
	slices.Sort(d.list)
	return hidden
}

// taken reports whether the name n of a repository below d is given to something else:
// an image of d (tag n), or d's export.tar.
func (d *nameDir) taken(n string) bool {
	_, ok := d.images[n]
	return ok || (n == exportName && len(d.images) > 0)
}

// every appends the names of all images of d's subtree to hidden, as hidden by path.
func (d *nameDir) every(hidden []hiddenName, path string) []hiddenName {
	for _, img := range d.images {
		hidden = append(hidden, hiddenName{reference.FamiliarString(img.Name), path, img.ID})
	}
	for _, sub := range d.dirs {
		hidden = sub.every(hidden, path)
	}
	return hidden
}

// tagged returns the images of d's tags, sorted by tag.
func (d *nameDir) tagged() []store.Image {
	imgs := make([]store.Image, 0, len(d.images))
	for _, name := range d.list {
		if img, ok := d.images[name]; ok {
			if _, tagged := img.Name.(reference.Tagged); tagged {
				imgs = append(imgs, img)
			}
		}
	}
	return imgs
}

// find returns the directory at path, or nil.
func (d *nameDir) find(path string) *nameDir {
	if path == "" {
		return d
	}
	for c := range strings.SplitSeq(path, "/") {
		if d = d.dirs[c]; d == nil {
			return nil
		}
	}
	return d
}

// subdirs counts d's directories: every name it lists but export.tar.
func (d *nameDir) subdirs() uint32 {
	n := uint32(len(d.list))
	if len(d.images) > 0 {
		n--
	}
	return n
}

// nameNode is the node of a nameDir, found again by path in the current tree on every
// operation, so that it follows the store.
type nameNode struct {
	gofs.Inode
	fs   *FS
	path string
}

var (
	_ gofs.NodeLookuper  = (*nameNode)(nil)
	_ gofs.NodeReaddirer = (*nameNode)(nil)
	_ gofs.NodeGetattrer = (*nameNode)(nil)
	_ gofs.NodeStatfser  = (*nameNode)(nil)
)

func nameIno(path string) uint64 { return newIno().str("name").str(path).sum() }

func imageIno(path string, img store.Image) uint64 {
	return newIno().str("image").str(path).str(img.Descriptor.Digest.String()).sum()
}

func (n *nameNode) child(name string) string {
	if n.path == "" {
		return name
	}
	return n.path + "/" + name
}

func (n *nameNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if n.path == "" {
		if reg := n.fs.remotes[name]; reg != nil {
			// A registry's images, over any local repository of the same name.
			return n.fs.remoteDir(ctx, &n.Inode, reg, "", out), 0
		}
	}
	d := n.fs.tree().find(n.path)
	if d == nil {
		return nil, syscall.ENOENT
	}
	if name == exportName && len(d.images) > 0 {
		return lookupExport(ctx, &n.Inode, n.fs, &d.export, d.tagged(), n.child(name), d.mtime,
			exportIno(n.path, d.mtime), out)
	}
	if img, ok := d.images[name]; ok {
		return n.imageChild(ctx, name, img, out), 0
	}
	if sub, ok := d.dirs[name]; ok {
		dirAttr(&out.Attr, sub.mtime, 2+sub.subdirs())
		setTimeouts(out, n.fs.opts.NameTimeout)
		return n.NewInode(ctx, &nameNode{fs: n.fs, path: sub.path},
			gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: nameIno(sub.path)}), 0
	}
	if n.path == "" && strings.HasPrefix(name, "sha256:") {
		img, err := n.fs.store.Resolve(name)
		if err != nil {
			return nil, syscall.ENOENT
		}
		img.Name = nil // by ID: its export.tar is untagged, as docker save of an ID
		return n.imageChild(ctx, name, img, out), 0
	}
	return nil, syscall.ENOENT
}

func (n *nameNode) imageChild(ctx context.Context, name string, img store.Image, out *fuse.EntryOut) *gofs.Inode {
	return n.fs.imageChild(ctx, &n.Inode, n.child(name), img, out)
}

// imageChild makes the node of image img's directory at path under parent.
func (f *FS) imageChild(ctx context.Context, parent *gofs.Inode, path string, img store.Image, out *fuse.EntryOut) *gofs.Inode {
	im := f.image(img)
	node := &imageNode{im: im, ref: img, path: path, ino: imageIno(path, img)}
	node.attr(&out.Attr)
	out.SetEntryTimeout(f.opts.NameTimeout)
	out.SetAttrTimeout(f.opts.ImageTimeout)
	return parent.NewInode(ctx, node, gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: node.ino})
}

func (n *nameNode) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	d := n.fs.tree().find(n.path)
	self := nameIno(n.path)
	if n.path == "" {
		self = 1
	}
	if d == nil {
		return gofs.NewListDirStream(withDots(&n.Inode, self, nil)), 0
	}
	list := make([]fuse.DirEntry, 0, len(d.list))
	if n.path == "" {
		for _, host := range n.fs.remoteHosts() {
			list = append(list, fuse.DirEntry{Name: host, Mode: syscall.S_IFDIR, Ino: remoteIno(host, "")})
		}
	}
	for _, name := range d.list {
		if n.path == "" && n.fs.remotes[name] != nil {
			continue
		}
		e := fuse.DirEntry{Name: name, Mode: syscall.S_IFDIR}
		if name == exportName && len(d.images) > 0 {
			e.Mode, e.Ino = syscall.S_IFREG, exportIno(n.path, d.mtime)
		} else if img, ok := d.images[name]; ok {
			e.Ino = imageIno(n.child(name), img)
		} else {
			e.Ino = nameIno(n.child(name))
		}
		list = append(list, e)
	}
	return gofs.NewListDirStream(withDots(&n.Inode, self, list)), 0
}

func (n *nameNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	d := n.fs.tree().find(n.path)
	if d == nil {
		dirAttr(&out.Attr, time.Time{}, 2)
	} else {
		dirAttr(&out.Attr, d.mtime, 2+d.subdirs())
	}
	out.SetTimeout(n.fs.opts.NameTimeout)
	return 0
}

// Statfs reports a read-only filesystem with nothing free.
func (n *nameNode) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	out.Bsize = 4096
	out.Frsize = 4096
	out.NameLen = 255
	return 0
}

// exportIno is the inode number of the export.tar of the repository at path, whose newest
// image dates from mtime: a new image is a new file.
func exportIno(path string, mtime time.Time) uint64 {
	return newIno().str("export").str(path).u64(uint64(mtime.UnixNano())).sum()
}
