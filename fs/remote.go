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
	failed map[string]error         // why the last resolution of a name failed
	asking map[string]chan struct{} // the questions in flight, closed when answered
	warned bool                     // a failed catalog was logged
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
	return &remoteReg{r: r, tags: map[string]listing{}, images: map[string]resolved{},
		failed: map[string]error{}, asking: map[string]chan struct{}{}}
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

// refreshWait is how long a lookup waits for a registry to answer again about a name it
// answered before: past it, the last answer serves and the question goes on in the
// background, and lookups meanwhile do not wait for it, so that a stalled registry holds
// up no lookup of what the mount knows by more than that, once.
const refreshWait = 250 * time.Millisecond

// ask runs fetch in the background for key, unless it runs already, and waits for it: as
// long as it takes when there is no earlier answer (stale false), else refreshWait at
// most, and not at all when the question was asked already. The registry's requests end
// within its timeout (registry.Options.Timeout).
func (reg *remoteReg) ask(key string, stale bool, fetch func()) {
	reg.mu.Lock()
	done, asked := reg.asking[key]
	if !asked {
		done = make(chan struct{})
		reg.asking[key] = done
		go func() {
			fetch()
			reg.mu.Lock()
			delete(reg.asking, key)
			reg.mu.Unlock()
			close(done)
		}()
	}
	reg.mu.Unlock()
	switch {
	case !stale:
		<-done
	case !asked:
		t := time.NewTimer(refreshWait)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
		}
	}
}

// repositories returns the registry's repositories, asked again after NameTimeout; nil
// where it has no catalog (logged once).
func (f *FS) repositories(reg *remoteReg) []string {
	reg.mu.Lock()
	l := reg.repos
	reg.mu.Unlock()
	if !l.at.IsZero() && time.Since(l.at) < f.opts.NameTimeout {
		return l.names
	}
	reg.ask("\x00catalog", !l.at.IsZero(), func() {
		repos, err := reg.r.Repositories(context.Background())
		reg.mu.Lock()
		defer reg.mu.Unlock()
		if err != nil {
			if !reg.warned {
				reg.warned = true
				f.log.Warn("registry lists no repositories: its images are reached by name", "registry", reg.r.Host(), "err", err)
			}
			if reg.repos.at.IsZero() {
				reg.repos.at = time.Now() // asked: the next lookup does not wait for it
			}
			return
		}
		reg.repos = listing{repos, time.Now()}
	})
	reg.mu.Lock()
	defer reg.mu.Unlock()
	return reg.repos.names
}

// ListRegistries asks each registry of the mount for its repositories in the background,
// as the first lookup in its directory would: called once the mount serves, it has the
// answer (and a connection to the registry) ready, or on its way, by the time the first
// path under the registry is looked up, instead of that lookup waiting for all of it.
func (f *FS) ListRegistries() {
	for _, reg := range f.remotes {
		go f.repositories(reg)
	}
}

// tagList returns the tags of repository repo, asked again after NameTimeout.
func (f *FS) tagList(reg *remoteReg, repo string) []string {
	reg.mu.Lock()
	l, ok := reg.tags[repo]
	reg.mu.Unlock()
	if ok && time.Since(l.at) < f.opts.NameTimeout {
		return l.names
	}
	reg.ask("\x00tags\x00"+repo, ok, func() {
		tags, err := reg.r.Tags(context.Background(), repo)
		if err != nil {
			return
		}
		reg.mu.Lock()
		reg.tags[repo] = listing{tags, time.Now()}
		reg.mu.Unlock()
	})
	reg.mu.Lock()
	defer reg.mu.Unlock()
	return reg.tags[repo].names
}

// errNotFound is a name the registry does not have.
var errNotFound = errors.New("not found")

// resolve returns the image repo:tag (or repo@digest) names, resolved again after
// NameTimeout (a digest never changes). While the registry cannot be reached, or does
// not answer within refreshWait, the last image resolved serves.
func (f *FS) resolve(reg *remoteReg, repo, ref string) (store.Image, error) {
	key := repo + "\x00" + ref
	reg.mu.Lock()
	r, ok := reg.images[key]
	reg.mu.Unlock()
	if ok && (strings.HasPrefix(ref, "sha256:") || time.Since(r.at) < f.opts.NameTimeout) {
		return r.img, nil
	}
	reg.ask(key, ok, func() {
		img, manifest, config, err := reg.r.Resolve(context.Background(), repo, ref)
		if err == nil {
			f.smallMu.Lock()
			f.small[img.Descriptor.Digest] = manifest
			f.small[img.ID] = config
			f.smallMu.Unlock()
		}
		reg.mu.Lock()
		defer reg.mu.Unlock()
		switch {
		case err == nil:
			reg.images[key] = resolved{img: img, at: time.Now()}
		case strings.Contains(err.Error(), "not found") || strings.Contains(err.Error(), "invalid reference"):
			delete(reg.images, key) // untagged, or the repository deleted
			reg.failed[key] = fmt.Errorf("%w: %v", errNotFound, err)
		default:
			reg.failed[key] = err // the last image, if any, serves on
		}
	})
	reg.mu.Lock()
	defer reg.mu.Unlock()
	if r, ok := reg.images[key]; ok {
		return r.img, nil
	}
	err := reg.failed[key]
	if err == nil {
		err = fmt.Errorf("registry %s: %s:%s: no answer yet", reg.r.Host(), repo, ref)
	}
	return store.Image{}, err
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
	repos := f.repositories(n.reg)
	if repo != "" && (ref != name || !below(repos, n.child(name))) {
		img, err := f.resolve(n.reg, repo, ref)
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
	repos := f.repositories(n.reg)
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
		for _, t := range f.tagList(n.reg, n.path) {
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

// fetched returns user.imgfs.fetched of layer desc: "FETCHED/SIZE", the bytes of its blob
// the store holds (all of it when blobs/ has it, else what a registry's chunk cache has)
// out of its size.
func (f *FS) fetched(desc ocispec.Descriptor) string {
	n := int64(0)
	if f.store.HasBlob(desc.Digest) {
		n = desc.Size
	} else {
		for _, reg := range f.remotes {
			if src, ok := reg.r.Blobs().(interface{ Fetched(digest.Digest) int64 }); ok {
				n = max(n, src.Fetched(desc.Digest))
			}
		}
	}
	return fmt.Sprintf("%d/%d", min(n, desc.Size), desc.Size)
}
