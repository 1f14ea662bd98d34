package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"

	"github.com/distribution/reference"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/imgfs/imgfs/store"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Remote is one registry as a lazy mount shows it: its repositories, its images resolved
// by tag or digest (manifest and config fetched and verified, small enough to keep in
// memory), and its blobs read in place (Source).
type Remote struct {
	c   *Client
	s   *store.Store // for the platform an image index is resolved to, and the layer indexes
	src *Source

	mu     sync.Mutex
	shared map[digest.Digest]chan struct{} // image manifests whose shared indexes were asked for, closed when done
}

// NewRemote returns the Remote of the registry src reads from; s picks the platform of
// an image index, as a pull into s would.
func (c *Client) NewRemote(s *store.Store, src *Source) *Remote {
	return &Remote{c: c, s: s, src: src, shared: map[digest.Digest]chan struct{}{}}
}

// Host is the registry's HOST[:PORT].
func (r *Remote) Host() string { return r.src.Host() }

// Blobs is the source of the registry's blobs.
func (r *Remote) Blobs() store.BlobSource { return r.src }

// Repositories lists the registry's repositories from /v2/_catalog; a registry without
// one (Docker Hub) gives an error.
func (r *Remote) Repositories(ctx context.Context) ([]string, error) {
	repos, err := remote.Catalog(ctx, r.src.reg, r.c.ropts...)
	if err != nil {
		return nil, fmt.Errorf("registry %s: catalog: %v", r.Host(), oneLine(err.Error()))
	}
	slices.Sort(repos)
	return repos, nil
}

// Tags lists the tags of repository repo, but for the fallback tags that list referrers
// (layer indexes, signatures): they name no image.
func (r *Remote) Tags(ctx context.Context, repo string) ([]string, error) {
	tags, err := r.c.puller.List(ctx, r.src.reg.Repo(repo))
	if err != nil {
		return nil, describe(err, r.src.reg.Repo(repo).Tag(""), "")
	}
	tags = slices.DeleteFunc(tags, IsFallbackTag)
	slices.Sort(tags)
	return tags, nil
}

// Resolve fetches the image repo names by tag ("latest") or digest ("sha256:..."): an
// image index is resolved to the manifest of the store's platform. It returns the image
// as the store describes its images (named when by tag), and the bytes of its manifest
// and config, each verified against its digest. Its config and layers are then known to
// the Source.
func (r *Remote) Resolve(ctx context.Context, repo, tagOrDigest string) (img store.Image, manifest, config []byte, err error) {
	sep := ":"
	if strings.HasPrefix(tagOrDigest, "sha256:") {
		sep = "@"
	}
	refStr := r.Host() + "/" + repo + sep + tagOrDigest
	ref, err := r.c.ParseReference(refStr)
	if err != nil {
		return img, nil, nil, err
	}
	named, err := reference.ParseNormalizedNamed(refStr)
	if err != nil {
		return img, nil, nil, fmt.Errorf("invalid reference %q: %v", refStr, err)
	}
	// The repository's client, which the config and the layer indexes come through, is
	// made (a ping, maybe a token) while the manifest comes.
	go r.src.client(repo)
	raw, top, mt, err := r.c.Manifest(ctx, ref)
	if err != nil {
		return img, nil, nil, err
	}
	target := ocispec.Descriptor{MediaType: mt, Digest: top, Size: int64(len(raw))}
	mdesc := target
	if isIndex(mt) {
		var ix ocispec.Index
		if err := json.Unmarshal(raw, &ix); err != nil {
			return img, nil, nil, fmt.Errorf("%s: image index: %v", refStr, err)
		}
		if mdesc, err = r.s.PickPlatform(ix.Manifests); err != nil {
			return img, nil, nil, fmt.Errorf("%s: %v", refStr, err)
		}
		if raw, _, mt, err = r.c.Manifest(ctx, ref.Context().Digest(mdesc.Digest.String())); err != nil {
			return img, nil, nil, err
		}
		if isIndex(mt) {
			return img, nil, nil, fmt.Errorf("%s: an image index in an image index", refStr)
		}
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return img, nil, nil, fmt.Errorf("%s: manifest %s: %v", refStr, mdesc.Digest, err)
	}
	if err := m.Config.Digest.Validate(); err != nil || len(m.Layers) == 0 {
		return img, nil, nil, fmt.Errorf("%s: manifest %s is not an image's (config %q, %d layers)", refStr, mdesc.Digest, m.Config.Digest, len(m.Layers))
	}
	for _, l := range m.Layers {
		if err := l.Digest.Validate(); err != nil {
			return img, nil, nil, fmt.Errorf("%s: manifest %s: layer %q: %v", refStr, mdesc.Digest, l.Digest, err)
		}
		r.src.Saw(repo, l.Digest, l.Size)
	}
	// The config comes while the layer indexes are looked for: they wait for it only to be
	// checked against its diffIDs.
	var cfgErr error
	cfgDone := make(chan struct{})
	go func() {
		defer close(cfgDone)
		config, cfgErr = r.smallBlob(repo, m.Config)
	}()
	r.useSharedIndexes(ctx, repo, mdesc, m, func() ([]byte, error) {
		<-cfgDone
		return config, cfgErr
	})
	if <-cfgDone; cfgErr != nil {
		return img, nil, nil, cfgErr
	}
	img = store.Image{Target: target, Descriptor: mdesc, Manifest: m, ID: m.Config.Digest}
	if _, byTag := ref.(name.Tag); byTag {
		img.Name = named
	}
	return img, raw, config, nil
}

// useSharedIndexes stores in the store the layer indexes the registry shares for image
// manifest m (mdesc its descriptor, verified) that the store lacks, so that no layer of
// them is streamed to be indexed; config gives the image's config, verified (it may be
// on its way). The registry is asked once per manifest, before Resolve returns it (a
// second Resolve of it waits for the first's answer; one whose config could not be had
// is asked again): the mount's first read of a layer comes after, and finds its index
// stored. The indexes are stored as the registry sent them (their digests verified, and
// decoded), and at once. What the registry would not give (each index refused and why,
// or its failure) is logged then, once; the layers without an index are indexed from
// their blobs, as without any.
func (r *Remote) useSharedIndexes(ctx context.Context, repo string, mdesc ocispec.Descriptor, m ocispec.Manifest, config func() ([]byte, error)) {
	r.mu.Lock()
	done, asked := r.shared[mdesc.Digest]
	if asked {
		r.mu.Unlock()
		<-done
		return
	}
	done = make(chan struct{})
	r.shared[mdesc.Digest] = done
	r.mu.Unlock()
	defer close(done)

	missing := false
	for _, l := range m.Layers {
		if isTarLayer(l.MediaType) && !r.s.HasLayerIndex(l) {
			missing = true
			break
		}
	}
	if !missing {
		return
	}
	errNoConfig := errors.New("no config")
	diffIDs := func() ([]digest.Digest, error) {
		data, err := config()
		if err != nil {
			r.mu.Lock()
			delete(r.shared, mdesc.Digest) // asked again with the config
			r.mu.Unlock()
			return nil, errNoConfig
		}
		var cfg ocispec.Image
		if json.Unmarshal(data, &cfg) != nil {
			return nil, errNoConfig // a config that is not one fails the image's tree, which says so
		}
		return cfg.RootFS.DiffIDs, nil
	}
	rc, err := r.src.client(repo)
	if err != nil {
		r.src.log.Warn("layer indexes from the registry not used: its layers are indexed from their blobs",
			"registry", r.Host(), "image", repo+"@"+mdesc.Digest.String(), "err", err)
		return
	}
	found, err := rc.sharedIndexes(ctx, mdesc, m, diffIDs)
	if errors.Is(err, errNoConfig) {
		return
	}
	var puts []ocispec.Descriptor
	for _, l := range m.Layers {
		if found[l.Digest].ix != nil && !slices.ContainsFunc(puts, func(p ocispec.Descriptor) bool { return p.Digest == l.Digest }) && !r.s.HasLayerIndex(l) {
			puts = append(puts, l)
		}
	}
	// Each index file is written and synced: at once, not one after the other.
	perrs := make([]error, len(puts))
	var wg sync.WaitGroup
	for k, l := range puts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if perr := r.s.PutLayerIndexData(found[l.Digest].ix, found[l.Digest].data); perr != nil {
				perrs[k] = fmt.Errorf("layer %s: storing its index: %w", l.Digest, perr)
			}
		}()
	}
	wg.Wait()
	var used []string
	for k, l := range puts {
		if perrs[k] != nil {
			err = errors.Join(err, perrs[k])
			continue
		}
		used = append(used, l.Digest.String())
	}
	if len(used) > 0 {
		r.src.log.Info("layer indexes from the registry", "registry", r.Host(), "image", repo+"@"+mdesc.Digest.String(), "layers", used)
	}
	if err != nil {
		r.src.log.Warn("layer indexes from the registry not used: those layers are indexed from their blobs",
			"registry", r.Host(), "image", repo+"@"+mdesc.Digest.String(), "err", oneLine(err.Error()))
	}
}

// isIndex says whether media type mt is an image index's (OCI or docker's list).
func isIndex(mt string) bool {
	return mt == ocispec.MediaTypeImageIndex || mt == "application/vnd.docker.distribution.manifest.list.v2+json"
}

// smallBlob fetches a config, verified against its digest.
func (r *Remote) smallBlob(repo string, desc ocispec.Descriptor) ([]byte, error) {
	if desc.Size > store.MaxConfigSize {
		return nil, fmt.Errorf("registry %s, repository %s, blob %s: %d bytes, more than a config may have", r.Host(), repo, desc.Digest, desc.Size)
	}
	r.src.Saw(repo, desc.Digest, desc.Size)
	body, err := r.src.Stream(desc.Digest)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	data, err := io.ReadAll(io.LimitReader(body, store.MaxConfigSize+1))
	if err != nil {
		return nil, err
	}
	if got := desc.Digest.Algorithm().FromBytes(data); got != desc.Digest {
		return nil, fmt.Errorf("registry %s, repository %s, blob %s: %w: the bytes hash to %s", r.Host(), repo, desc.Digest, store.ErrDigestMismatch, got)
	}
	return data, nil
}
