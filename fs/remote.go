package fs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/imgfs/imgfs/layerindex"
	"github.com/imgfs/imgfs/store"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Remote is where the images of a registry come from, for a lazy mount: registry.Remote
// is one. The image tree is the one local images have; only where an image's manifest,
// config and layers come from differs.
type Remote interface {
	// Host is the registry's HOST[:PORT], the mount's directory of its images.
	Host() string
	// Blobs reads the registry's blobs (of the images resolved) in place.
	Blobs() store.BlobSource
	// Repositories lists the registry's repositories (an error where it has no catalog).
	Repositories(ctx context.Context) ([]string, error)
	// Tags lists the tags of repository repo.
	Tags(ctx context.Context, repo string) ([]string, error)
	// Resolve returns the image repo:tag or repo@sha256:... names, and its manifest and
	// config, verified against their digests.
	Resolve(ctx context.Context, repo, tagOrDigest string) (img store.Image, manifest, config []byte, err error)
}

// remoteReg is a registry of the mount, with what was last resolved of it: its
// repositories, their tags and the images of names, each asked again after NameTimeout,
// as the store's names are read again.
type remoteReg struct {
	r Remote

	mu     sync.Mutex
	repos  listing
	tags   map[string]listing // by repository
	images map[string]resolved
	warned bool // a failed catalog was logged
}

type listing struct {
	names []string
	at    time.Time
}

type resolved struct {
	img store.Image
	at  time.Time
}

func newRemoteReg(r Remote) *remoteReg {
	return &remoteReg{r: r, tags: map[string]listing{}, images: map[string]resolved{}}
}

// remoteHosts lists the mount's registries, sorted.
func (f *FS) remoteHosts() []string { return slices.Sorted(maps.Keys(f.remotes)) }

func remoteIno(host, path string) uint64 { return newIno().str("remote").str(host).str(path).sum() }

// isRemote says whether the image of manifest d came from a registry.
func (f *FS) isRemote(d digest.Digest) bool {
	f.smallMu.Lock()
	defer f.smallMu.Unlock()
	_, ok := f.small[d]
	return ok
}

// readBlob reads small blob d: a registry image's manifest or config as resolved, else the
// store's.
func (f *FS) readBlob(d digest.Digest, maxSize int64) ([]byte, error) {
	f.smallMu.Lock()
	data, ok := f.small[d]
	f.smallMu.Unlock()
	if ok {
		return data, nil
	}
	return f.store.ReadBlob(d, maxSize)
}

// readConfig is store.ReadConfig through readBlob.
func (f *FS) readConfig(d digest.Digest) ([]byte, *ocispec.Image, error) {
	data, err := f.readBlob(d, store.MaxConfigSize)
	if err != nil {
		return nil, nil, err
	}
	cfg := new(ocispec.Image)
	if err := json.Unmarshal(data, cfg); err != nil {
		return data, nil, fmt.Errorf("config %s: %w", d, err)
	}
	return data, cfg, nil
}

// blobs is the mount's export.Blobs: the store, and the registries' images.
type blobs struct{ f *FS }

func (b blobs) ReadBlob(d digest.Digest, maxSize int64) ([]byte, error) {
	return b.f.readBlob(d, maxSize)
}
func (b blobs) LayerStream(desc ocispec.Descriptor) (*layerindex.Index, error) {
	return b.f.layers.LayerStream(desc)
}

// repositories returns the registry's repositories, asked again after NameTimeout; nil
// where it has no catalog (logged once).
func (f *FS) repositories(ctx context.Context, reg *remoteReg) []string {
	reg.mu.Lock()
	l := reg.repos
	reg.mu.Unlock()
	if !l.at.IsZero() && time.Since(l.at) < f.opts.NameTimeout {
		return l.names
	}
	repos, err := reg.r.Repositories(ctx)
	reg.mu.Lock()
	defer reg.mu.Unlock()
	if err != nil {
		if !reg.warned {
			reg.warned = true
			f.log.Warn("registry lists no repositories: its images are reached by name", "registry", reg.r.Host(), "err", err)
		}
		return reg.repos.names // the last known
	}
	reg.repos = listing{repos, time.Now()}
	return repos
}

// tagList returns the tags of repository repo, asked again after NameTimeout.
func (f *FS) tagList(ctx context.Context, reg *remoteReg, repo string) []string {
	reg.mu.Lock()
	l, ok := reg.tags[repo]
	reg.mu.Unlock()
	if ok && time.Since(l.at) < f.opts.NameTimeout {
		return l.names
	}
	tags, err := reg.r.Tags(ctx, repo)
	if err != nil {
		return l.names
	}
	reg.mu.Lock()
	reg.tags[repo] = listing{tags, time.Now()}
	reg.mu.Unlock()
	return tags
}

// errNotFound is a name the registry does not have.
var errNotFound = errors.New("not found")

// resolve returns the image repo:tag (or repo@digest) names, resolved again after
// NameTimeout (a digest never changes). While the registry cannot be reached, the last
// image resolved stays.
func (f *FS) resolve(ctx context.Context, reg *remoteReg, repo, ref string) (store.Image, error) {
	key := repo + "\x00" + ref
	reg.mu.Lock()
	r, ok := reg.images[key]
	reg.mu.Unlock()
	if ok && (strings.HasPrefix(ref, "sha256:") || time.Since(r.at) < f.opts.NameTimeout) {
		return r.img, nil
	}
	img, manifest, config, err := reg.r.Resolve(ctx, repo, ref)
	if err != nil {
		if ok && !strings.Contains(err.Error(), "not found") {
			return r.img, nil
		}
		if strings.Contains(err.Error(), "not found") || strings.Contains(err.Error(), "invalid reference") {
			return img, fmt.Errorf("%w: %v", errNotFound, err)
		}
		return img, err
	}
	f.smallMu.Lock()
	f.small[img.Descriptor.Digest] = manifest
	f.small[img.ID] = config
	f.smallMu.Unlock()
	reg.mu.Lock()
	reg.images[key] = resolved{img, time.Now()}
	reg.mu.Unlock()
	return img, nil
}

// remoteDir makes the node of directory path ("" for the registry's own) of reg.
func (f *FS) remoteDir(ctx context.Context, parent *gofs.Inode, reg *remoteReg, path string, out *fuse.EntryOut) *gofs.Inode {
	dirAttr(&out.Attr, time.Time{}, 2)
	setTimeouts(out, f.opts.NameTimeout)
	return parent.NewInode(ctx, &remoteDirNode{fs: f, reg: reg, path: path},
		gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: remoteIno(reg.r.Host(), path)})
}

// remoteDirNode is a directory of a registry's tree: the registry (path ""), a component
// of a repository's name, or a repository, whose entries are its tags. Any name is
// resolved on lookup, listed or not: a tag of the repository the path names when the
// registry has it, else a directory below.
type remoteDirNode struct {
	gofs.Inode
	fs   *FS
	reg  *remoteReg
	path string
}

var (
	_ gofs.NodeLookuper  = (*remoteDirNode)(nil)
	_ gofs.NodeReaddirer = (*remoteDirNode)(nil)
	_ gofs.NodeGetattrer = (*remoteDirNode)(nil)
)

func (n *remoteDirNode) child(name string) string {
	if n.path == "" {
		return name
	}
	return n.path + "/" + name
}

// where is the mount path of the directory, for messages.
func (n *remoteDirNode) where(name string) string {
	return n.reg.r.Host() + "/" + n.child(name)
}

// below says whether the catalog has a repository at or under path.
func below(repos []string, path string) bool {
	for _, r := range repos {
		if r == path || strings.HasPrefix(r, path+"/") {
			return true
		}
	}
	return false
}

func (n *remoteDirNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	f := n.fs
	repo, ref := n.path, name
	if r, d, ok := strings.Cut(name, "@"); ok {
		repo, ref = n.child(r), d // REPO@sha256:...
	}
	repos := f.repositories(ctx, n.reg)
	if repo != "" && (ref != name || !below(repos, n.child(name))) {
		img, err := f.resolve(ctx, n.reg, repo, ref)
		switch {
		case err == nil:
			return f.imageChild(ctx, &n.Inode, n.where(name), img, out), 0
		case !errors.Is(err, errNotFound):
			f.log.Error("resolving image", "path", n.where(name), "err", err)
			return nil, syscall.EIO
		case ref != name || repos != nil:
			// No such image, and no repository below that the catalog knows.
			return nil, syscall.ENOENT
		}
	}
	if strings.HasPrefix(name, "sha256:") || (repos != nil && !below(repos, n.child(name))) {
		return nil, syscall.ENOENT
	}
	// A component of a repository's name, which a registry without a catalog cannot
	// tell from one it does not have.
	return f.remoteDir(ctx, &n.Inode, n.reg, n.child(name), out), 0
}

func (n *remoteDirNode) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	f := n.fs
	repos := f.repositories(ctx, n.reg)
	seen := map[string]bool{}
	var list []fuse.DirEntry
	prefix := ""
	if n.path != "" {
		prefix = n.path + "/"
	}
	isRepo := false
	for _, r := range repos {
		if r == n.path {
			isRepo = true
		}
		rest, ok := strings.CutPrefix(r, prefix)
		if !ok || rest == "" {
			continue
		}
		c, _, _ := strings.Cut(rest, "/")
		if !seen[c] {
			seen[c] = true
			list = append(list, fuse.DirEntry{Name: c, Mode: syscall.S_IFDIR, Ino: remoteIno(n.reg.r.Host(), n.child(c))})
		}
	}
	if isRepo {
		for _, t := range f.tagList(ctx, n.reg, n.path) {
			if !seen[t] {
				seen[t] = true
				list = append(list, fuse.DirEntry{Name: t, Mode: syscall.S_IFDIR})
			}
		}
	}
	slices.SortFunc(list, func(a, b fuse.DirEntry) int { return strings.Compare(a.Name, b.Name) })
	return gofs.NewListDirStream(withDots(&n.Inode, remoteIno(n.reg.r.Host(), n.path), list)), 0
}

func (n *remoteDirNode) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	dirAttr(&out.Attr, time.Time{}, 2)
	out.SetTimeout(n.fs.opts.NameTimeout)
	return 0
}
