package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/imgfs/imgfs/layerindex"
	"github.com/imgfs/imgfs/store"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// IndexPushOptions say how to push the layer indexes of an image in a registry.
type IndexPushOptions struct {
	Concurrency int // layers streamed at a time; 0 means DefaultConcurrency
	// Status hears each layer's progress: id is the layer's short digest (the reference's
	// tag or digest for the image), msg "Indexing from REPO" (the image), "Already
	// indexed" (the registry shares a usable index of it), "Waiting" (for one of the
	// Concurrency streams), "Downloading" (its first bytes came), "Indexed". It may be
	// called from several goroutines, never at once.
	Status func(id, msg string)
	// Progress hears how many bytes of a layer (id, its short digest) have been read, of
	// total. It may be called from several goroutines at once.
	Progress func(id string, current, total int64)
}

// IndexesPushed is what PushIndexes did for one image manifest.
type IndexesPushed struct {
	Manifest digest.Digest // the image manifest
	Artifact digest.Digest // the artifact of its layer indexes; "" when Existed
	Size     int64         // the artifact manifest's size
	Existed  bool          // the registry shares a usable index of every layer: nothing was sent
	Sent     bool          // the artifact went up (false: the registry listed it already)
}

// PushIndexes shares the layer indexes of the image refStr names in its registry, for an
// image another tool pushed: of every image manifest (all of an image index's), each
// layer is streamed once (GET, as pull fetches it), indexed on the way (which verifies its
// digest), its diffID checked against the config, and the indexes pushed as Push pushes
// them. A manifest whose layers the registry shares usable indexes of already (see
// SharedIndexes) has nothing streamed or sent.
func (c *Client) PushIndexes(ctx context.Context, refStr string, opts IndexPushOptions) ([]IndexesPushed, error) {
	status := serialized(opts.Status)
	ref, err := c.ParseReference(refStr)
	if err != nil {
		return nil, err
	}
	repo := ref.Context()
	raw, top, mt, err := c.Manifest(ctx, ref)
	if err != nil {
		return nil, err
	}
	status(ref.Identifier(), "Indexing from "+repo.RepositoryStr())

	images, err := c.imageManifests(ctx, repo, raw, ocispec.Descriptor{MediaType: mt, Digest: top, Size: int64(len(raw))}, 0)
	if err != nil {
		return nil, err
	}
	rc, err := c.repoClient(ctx, repo, transport.PushScope)
	if err != nil {
		return nil, err
	}
	ix := &layerIndexer{rc: rc, say: status, progress: opts.Progress, built: map[digest.Digest]*layerindex.Index{}}
	var res []IndexesPushed
	var arts []*indexArtifact
	for _, img := range images {
		diffIDs, err := ix.diffIDs(ctx, img)
		if err != nil {
			return nil, err
		}
		var tars []ocispec.Descriptor
		for _, l := range img.m.Layers {
			if isTarLayer(l.MediaType) {
				tars = append(tars, l)
			}
		}
		if len(tars) == 0 {
			continue // an attestation's, say: no layer to index
		}
		shared, _ := c.SharedIndexes(ctx, repo, img.desc, img.m, diffIDs) // what is refused is built again
		if !slices.ContainsFunc(tars, func(l ocispec.Descriptor) bool { return shared[l.Digest] == nil }) {
			for _, l := range tars {
				status(short(l.Digest), "Already indexed")
			}
			res = append(res, IndexesPushed{Manifest: img.desc.Digest, Existed: true})
			continue
		}
		indexes, err := ix.index(ctx, img.m.Layers, diffIDs, opts.Concurrency)
		if err != nil {
			return nil, err
		}
		a, err := newIndexArtifact(img.desc, img.m.Layers, indexes)
		if err != nil {
			return nil, err
		}
		arts = append(arts, a)
		res = append(res, IndexesPushed{Manifest: img.desc.Digest, Artifact: a.desc.Digest, Size: a.desc.Size})
	}
	p := &blobPusher{rc: rc, locs: noLocations(), say: func(string, string) {}}
	sent, err := pushIndexArtifacts(ctx, p, arts, opts.Concurrency)
	if err != nil {
		return nil, err
	}
	for i := range res {
		res[i].Sent = slices.ContainsFunc(sent, func(a *indexArtifact) bool { return a.desc.Digest == res[i].Artifact })
	}
	return res, nil
}

// remoteImage is an image manifest in a registry, verified.
type remoteImage struct {
	desc ocispec.Descriptor
	m    ocispec.Manifest
}

// imageManifests returns the image manifests raw (the manifest or image index desc
// describes, verified) is or lists, each once, nested indexes followed.
func (c *Client) imageManifests(ctx context.Context, repo name.Repository, raw []byte, desc ocispec.Descriptor, depth int) ([]remoteImage, error) {
	if depth > 4 {
		return nil, fmt.Errorf("image index %s: nested too deep", desc.Digest)
	}
	var shape struct {
		ocispec.Manifest
		Manifests []ocispec.Descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(raw, &shape); err != nil {
		return nil, fmt.Errorf("registry %s, repository %s, manifest %s: %v", repo.RegistryStr(), repo.RepositoryStr(), desc.Digest, err)
	}
	if shape.MediaType != "" {
		desc.MediaType = shape.MediaType
	}
	if shape.Manifests == nil || shape.Config.Digest != "" {
		if shape.Config.Digest == "" {
			return nil, fmt.Errorf("registry %s, repository %s: manifest %s has no config", repo.RegistryStr(), repo.RepositoryStr(), desc.Digest)
		}
		return []remoteImage{{desc: ocispec.Descriptor{MediaType: desc.MediaType, Digest: desc.Digest, Size: desc.Size}, m: shape.Manifest}}, nil
	}
	var out []remoteImage
	for _, child := range shape.Manifests {
		craw, got, mt, err := c.Manifest(ctx, repo.Digest(child.Digest.String()))
		if err != nil {
			return nil, err
		}
		if got != child.Digest {
			return nil, fmt.Errorf("registry %s, repository %s: manifest %s hashes to %s", repo.RegistryStr(), repo.RepositoryStr(), child.Digest, got)
		}
		child.MediaType = mt
		imgs, err := c.imageManifests(ctx, repo, craw, child, depth+1)
		if err != nil {
			return nil, err
		}
		for _, img := range imgs {
			if !slices.ContainsFunc(out, func(o remoteImage) bool { return o.desc.Digest == img.desc.Digest }) {
				out = append(out, img)
			}
		}
	}
	return out, nil
}

// layerIndexer indexes layers of a repository by streaming them, each once per command.
type layerIndexer struct {
	rc       *repoClient
	say      func(id, msg string)
	progress func(id string, current, total int64)
	mu       sync.Mutex
	built    map[digest.Digest]*layerindex.Index
}

// where names blob d of the repository, for errors.
func (x *layerIndexer) where(d digest.Digest) string {
	return fmt.Sprintf("registry %s, repository %s, blob %s", x.rc.repo.RegistryStr(), x.rc.repo.RepositoryStr(), d)
}

// diffIDs fetches img's config, verified, and returns its diffIDs, one per layer.
func (x *layerIndexer) diffIDs(ctx context.Context, img remoteImage) ([]digest.Digest, error) {
	cd := img.m.Config
	if cd.Size > store.MaxConfigSize {
		return nil, fmt.Errorf("%s: config larger than %d bytes", x.where(cd.Digest), store.MaxConfigSize)
	}
	body := x.rc.blob(ctx, cd.Digest, cd.Size)
	defer body.Close()
	data, err := io.ReadAll(io.LimitReader(body, store.MaxConfigSize+1))
	if err != nil {
		return nil, err
	}
	if got := digest.FromBytes(data); got != cd.Digest {
		return nil, fmt.Errorf("%s: config hashes to %s", x.where(cd.Digest), got)
	}
	var cfg ocispec.Image
	if err := json.Unmarshal(data, &cfg); err != nil {
		return nil, fmt.Errorf("%s: config: %v", x.where(cd.Digest), err)
	}
	if len(cfg.RootFS.DiffIDs) != len(img.m.Layers) {
		return nil, fmt.Errorf("registry %s, repository %s: config %s lists %d layers (rootfs.diff_ids), manifest %s %d",
			x.rc.repo.RegistryStr(), x.rc.repo.RepositoryStr(), cd.Digest, len(cfg.RootFS.DiffIDs), img.desc.Digest, len(img.m.Layers))
	}
	return cfg.RootFS.DiffIDs, nil
}

// index returns the indexes of the tar layers of layers, streaming concurrency at a time
// those not indexed yet by this command; each layer's diffID is checked against diffIDs.
func (x *layerIndexer) index(ctx context.Context, layers []ocispec.Descriptor, diffIDs []digest.Digest, concurrency int) (map[digest.Digest]*layerindex.Index, error) {
	w := newWorkers(ctx, concurrency)
	fail := w.fail
	out := map[digest.Digest]*layerindex.Index{}
	var outMu sync.Mutex
	started := map[digest.Digest]bool{}
	for i, l := range layers {
		if !isTarLayer(l.MediaType) || started[l.Digest] {
			continue
		}
		started[l.Digest] = true
		w.start(func() {
			ix, err := x.build(l, w)
			if err != nil {
				fail(err)
				return
			}
			if ix.DiffID != diffIDs[i] {
				fail(fmt.Errorf("%s: diffID %s differs from the config's rootfs.diff_ids[%d] %s", x.where(l.Digest), ix.DiffID, i, diffIDs[i]))
				return
			}
			outMu.Lock()
			out[l.Digest] = ix
			outMu.Unlock()
		})
	}
	if err := w.wait(); err != nil {
		return nil, err
	}
	// A layer the manifest lists twice is checked at each place.
	for i, l := range layers {
		if ix := out[l.Digest]; ix != nil && ix.DiffID != diffIDs[i] {
			return nil, fmt.Errorf("%s: diffID %s differs from the config's rootfs.diff_ids[%d] %s", x.where(l.Digest), ix.DiffID, i, diffIDs[i])
		}
	}
	return out, nil
}

// build streams layer l once (or returns the index this command built of it), holding a
// place of w while it does.
func (x *layerIndexer) build(l ocispec.Descriptor, w *workers) (*layerindex.Index, error) {
	ctx := w.ctx
	x.mu.Lock()
	ix := x.built[l.Digest]
	x.mu.Unlock()
	if ix != nil {
		return ix, nil
	}
	id := short(l.Digest)
	if !w.acquire(func() { x.say(id, "Waiting") }) {
		return nil, ctx.Err()
	}
	defer w.release()
	body := &progressReader{r: x.rc.blob(ctx, l.Digest, l.Size), first: func() { x.say(id, "Downloading") }}
	if x.progress != nil {
		body.progress = func(n int64) { x.progress(id, n, l.Size) }
	}
	defer body.Close()
	ix, err := layerindex.Build(body, layerindex.BuildOptions{Digest: l.Digest, MediaType: l.MediaType})
	if body.err != nil {
		return nil, body.err // the registry's fault, said in its words
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", x.where(l.Digest), err)
	}
	if ix.BlobSize != l.Size {
		return nil, fmt.Errorf("%s: %d bytes, the manifest says %d", x.where(l.Digest), ix.BlobSize, l.Size)
	}
	x.say(id, "Indexed")
	x.mu.Lock()
	x.built[l.Digest] = ix
	x.mu.Unlock()
	return ix, nil
}
