package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/distribution/reference"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/imgfs/imgfs/store"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// PushOptions say how to push.
type PushOptions struct {
	Concurrency int // blobs uploaded at a time; 0 means DefaultConcurrency
	// Status hears the push's progress in docker's words: id is a layer's short digest
	// ("" for the repository), msg "The push refers to repository [HOST/REPO]",
	// "Preparing", "Waiting", "Pushing", "Pushed", "Layer already exists", "Mounted from
	// REPO". It may be called from several goroutines, never at once.
	Status func(id, msg string)
	// Progress hears how many bytes of a layer (id, its short digest) have gone up, of
	// total, while it uploads. It may be called from several goroutines at once.
	Progress func(id string, current, total int64)
	// Warn hears, once, why the layer indexes were not shared when the images went up
	// but their indexes did not (a registry that refuses OCI artifacts): the push has
	// done its job, and a lazy mount builds the indexes itself.
	Warn func(msg string)
}

// Pushed is one tag (or digest) a push sent.
type Pushed struct {
	Tag    string        // the tag, or the digest for a push by digest
	Digest digest.Digest // the manifest's (or image index's), as in the store
	Size   int64         // the manifest's size in bytes
}

// Push sends the images refStr names in s to the registry their name says: a tagged or
// digested name one image, a repository name without a tag every tag of it in s, as
// docker push does. A multi-platform image goes up whole: every manifest of its image
// index, then the index; all of them must be in s (imgfs pull --all-platforms). Manifests,
// indexes, configs and compressed layers go up byte for byte, so every digest stays the
// same.
//
// Each blob is asked for once per command, with a HEAD, however many tags share it; one
// the registry lacks is mounted from another repository of the registry that it is known
// to be in (the store remembers where pulls and pushes saw blobs), else uploaded,
// opts.Concurrency at a time. Manifests go up once their blobs are there, an index's
// after its manifests. Then each image manifest's layer indexes go up as an artifact
// whose subject is the manifest (see SharedIndexes), unless the registry lists it already.
func (c *Client) Push(ctx context.Context, s *store.Store, refStr string, opts PushOptions) ([]Pushed, error) {
	say := serialized(opts.Status)
	named, err := reference.ParseNormalizedNamed(refStr)
	if err != nil {
		return nil, fmt.Errorf("invalid reference %q: %v", refStr, err)
	}
	var names []reference.Named
	var imgs []store.Image
	if reference.IsNameOnly(named) {
		all, err := s.Images()
		if err != nil && len(all) == 0 {
			return nil, err
		}
		for _, img := range all {
			if t, ok := img.Name.(reference.NamedTagged); ok && t.Name() == named.Name() {
				names = append(names, t)
				imgs = append(imgs, img)
			}
		}
		if len(names) == 0 {
			return nil, fmt.Errorf("%w: no tag of repository %s in the store", store.ErrNoSuchImage, named.Name())
		}
	} else {
		img, err := s.Resolve(refStr)
		if err != nil {
			return nil, err
		}
		names, imgs = []reference.Named{named}, []store.Image{img}
	}

	repoRef, err := c.ParseReference(named.Name())
	if err != nil {
		return nil, err
	}
	repo := repoRef.Context()

	// What goes up, all of it read and checked before anything is sent.
	type tagged struct {
		ref       name.Reference
		manifests []storedManifest // children first, the tagged one last
	}
	var tags []tagged
	var res []Pushed
	for i, img := range imgs {
		ref, err := c.ParseReference(names[i].String())
		if err != nil {
			return nil, err
		}
		ms, err := planPush(s, img.Target)
		if err != nil {
			if reference.IsNameOnly(named) {
				err = fmt.Errorf("%s: %w", reference.FamiliarString(names[i]), err)
			}
			return nil, err
		}
		tags = append(tags, tagged{ref, ms})
		res = append(res, Pushed{Tag: ref.Identifier(), Digest: img.Target.Digest, Size: img.Target.Size})
	}
	var blobs []blobToPush
	seen := map[digest.Digest]bool{}
	var configs []blobToPush
	for _, t := range tags {
		for _, m := range t.manifests {
			for _, l := range m.layers {
				if !seen[l.Digest] && s.HasBlob(l.Digest) {
					// A foreign layer that is not in the store (planPush let it be)
					// stays where its URLs say, as docker leaves it.
					blobs = append(blobs, blobToPush{desc: l, layer: true})
				}
				seen[l.Digest] = true
			}
			if m.config.Digest != "" && !seen[m.config.Digest] && s.HasBlob(m.config.Digest) {
				configs = append(configs, blobToPush{desc: m.config})
				seen[m.config.Digest] = true
			}
		}
	}
	blobs = append(blobs, configs...) // docker's order: the layers, then the configs

	// Each image manifest's layer indexes, shared as an artifact that names it.
	var arts []*indexArtifact
	artOf := map[digest.Digest]bool{}
	for _, t := range tags {
		for _, m := range t.manifests {
			if m.config.Digest == "" || artOf[m.desc.Digest] {
				continue
			}
			artOf[m.desc.Digest] = true
			a, err := storeIndexArtifact(s, m)
			if err != nil {
				return nil, err
			}
			if a != nil {
				arts = append(arts, a)
			}
		}
	}

	say("", "The push refers to repository ["+named.Name()+"]")
	locs := loadLocations(s)
	defer locs.save()
	// The token must let the push read the repositories it mounts blobs from.
	var also []string
	fromSeen := map[string]bool{}
	scoped := slices.Clone(blobs)
	for _, a := range arts {
		scoped = append(scoped, a.blobs...)
	}
	for _, b := range scoped {
		if from := locs.mountSource(b, repo); from != "" && !fromSeen[from] {
			fromSeen[from] = true
			also = append(also, repo.Registry.Repo(from).Scope(transport.PullScope))
		}
	}
	rc, err := c.repoClient(ctx, repo, transport.PushScope, also...)
	if err != nil {
		return nil, err
	}
	p := &blobPusher{s: s, rc: rc, locs: locs, say: say, progress: opts.Progress}
	if err := p.pushAll(ctx, blobs, opts.Concurrency); err != nil {
		return nil, err
	}

	ropts := append(append([]remote.Option{}, c.ropts...), remote.Reuse(c.pusher), remote.WithContext(ctx))
	put := map[digest.Digest]bool{}
	for _, t := range tags {
		for i, m := range t.manifests {
			ref := t.ref
			if i < len(t.manifests)-1 {
				if put[m.desc.Digest] {
					continue
				}
				ref = repo.Digest(m.desc.Digest.String())
			}
			if err := remote.Put(ref, rawManifest{m.raw, types.MediaType(m.desc.MediaType)}, ropts...); err != nil {
				return nil, describe(err, ref, "")
			}
			put[m.desc.Digest] = true
		}
	}
	if _, err := pushIndexArtifacts(ctx, p, arts, opts.Concurrency); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if opts.Warn != nil {
			opts.Warn("layer indexes not shared: " + err.Error())
		}
	}
	return res, nil
}

// storedManifest is a manifest or image index in the store, as it goes up.
type storedManifest struct {
	desc   ocispec.Descriptor // its media type is the one to send
	raw    []byte
	config ocispec.Descriptor // an image manifest's; zero for an index
	layers []ocispec.Descriptor
}

// planPush reads the manifest or image index target names, and the manifests of an
// index (nested ones too), children before their index. An index with manifests missing
// from the store (pulled for one platform) is refused in one line naming their platforms.
func planPush(s *store.Store, target ocispec.Descriptor) ([]storedManifest, error) {
	var out []storedManifest
	var missing []string
	var walk func(desc ocispec.Descriptor, depth int) error
	walk = func(desc ocispec.Descriptor, depth int) error {
		if depth > 4 {
			return fmt.Errorf("image index %s: nested too deep", desc.Digest)
		}
		if depth > 0 && !s.HasBlob(desc.Digest) {
			if p := platformName(desc); !slices.Contains(missing, p) {
				missing = append(missing, p)
			}
			return nil
		}
		raw, err := s.ReadBlob(desc.Digest, store.MaxManifestSize)
		if err != nil {
			return err
		}
		var shape manifestShape
		if err := json.Unmarshal(raw, &shape); err != nil {
			return fmt.Errorf("manifest %s: %v", desc.Digest, err)
		}
		index := shape.isIndex()
		m := storedManifest{desc: desc, raw: raw, config: shape.Config, layers: shape.Layers}
		if shape.MediaType != "" {
			m.desc.MediaType = shape.MediaType
		}
		if m.desc.MediaType == "" {
			m.desc.MediaType = ocispec.MediaTypeImageManifest
			if index {
				m.desc.MediaType = ocispec.MediaTypeImageIndex
			}
		}
		if index {
			for _, child := range shape.Manifests {
				if err := walk(child, depth+1); err != nil {
					return err
				}
			}
		} else {
			if shape.Config.Digest == "" {
				return fmt.Errorf("manifest %s has no config", desc.Digest)
			}
			for _, b := range append([]ocispec.Descriptor{shape.Config}, shape.Layers...) {
				if !s.HasBlob(b.Digest) && len(b.URLs) == 0 {
					return fmt.Errorf("manifest %s: blob %s is not in the store", desc.Digest, b.Digest)
				}
			}
		}
		out = append(out, m)
		return nil
	}
	if err := walk(target, 0); err != nil {
		return nil, err
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("multi-platform image (image index %s): the manifests for %s are not in the store (pulled for one platform); imgfs pull --all-platforms brings them",
			target.Digest, strings.Join(missing, ", "))
	}
	return out, nil
}

// platformName names an image index's entry by its platform (os/arch[/variant]), or its
// digest when it has none.
func platformName(d ocispec.Descriptor) string {
	p := d.Platform
	if p == nil || p.OS == "" {
		return d.Digest.String()
	}
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// rawManifest is a stored manifest as remote.Put sends it: its bytes, its media type.
type rawManifest struct {
	raw []byte
	mt  types.MediaType
}

func (m rawManifest) RawManifest() ([]byte, error)        { return m.raw, nil }
func (m rawManifest) MediaType() (types.MediaType, error) { return m.mt, nil }

// blobToPush is one blob of a push: a layer (its progress is told), a config, or a blob
// of the layer indexes' artifact.
type blobToPush struct {
	desc  ocispec.Descriptor
	layer bool
	data  []byte        // its bytes, when it is not a blob of the store (an artifact's)
	near  digest.Digest // a blob it is likely to be beside (a layer index's layer): where to mount it from when it was not seen itself
}

// blobPusher sends blobs of the store to a repository.
type blobPusher struct {
	s        *store.Store
	rc       *repoClient
	locs     *blobLocations
	say      func(id, msg string)
	progress func(id string, current, total int64)
}

// pushAll pushes blobs, n at a time (0: DefaultConcurrency), in their order. The first
// error stops the rest.
func (p *blobPusher) pushAll(ctx context.Context, blobs []blobToPush, n int) error {
	if n <= 0 {
		n = DefaultConcurrency
	}
	for _, b := range blobs {
		if b.layer {
			p.say(short(b.desc.Digest), "Preparing")
		}
	}
	for i, b := range blobs {
		if b.layer && i >= n {
			p.say(short(b.desc.Digest), "Waiting")
		}
	}
	w := newWorkers(ctx, n)
	for _, b := range blobs {
		if !w.acquire(nil) {
			break
		}
		w.start(func() {
			defer w.release()
			if err := p.pushRetried(w.ctx, b); err != nil {
				w.fail(err)
			}
		})
	}
	return w.wait()
}

// pushRetried is push, tried again from the start on a temporary failure.
func (p *blobPusher) pushRetried(ctx context.Context, b blobToPush) error {
	wait := uploadBackoff
	for try := 1; ; try++ {
		err := p.push(ctx, b)
		if err == nil || try == uploadTries || !temporary(err) {
			return err
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return ctx.Err()
		}
		wait *= 3
	}
}

// push sends one blob unless the repository has it: a HEAD, then a mount from another
// repository of the registry known to have it, else an upload (in the session a mount
// the registry would not do opened, if any).
func (p *blobPusher) push(ctx context.Context, b blobToPush) error {
	d := b.desc.Digest
	id := short(d)
	tell := func(msg string) {
		if b.layer {
			p.say(id, msg)
		}
	}
	repo := p.rc.repo
	ok, err := p.rc.hasBlob(ctx, d)
	if err != nil {
		return err
	}
	if ok {
		tell("Layer already exists")
		p.locs.add(d, repo)
		return nil
	}
	from := p.locs.mountSource(b, repo) // the one Push asked a token for
	loc, mounted, err := p.rc.startUpload(ctx, d, from)
	if err != nil {
		return err
	}
	if mounted {
		tell("Mounted from " + from)
		p.locs.add(d, repo)
		return nil
	}
	tell("Pushing")
	open := func() (io.ReadCloser, error) {
		if b.data != nil {
			return io.NopCloser(bytes.NewReader(b.data)), nil
		}
		f, err := p.s.OpenBlob(d)
		if err != nil {
			return nil, err
		}
		if !b.layer || p.progress == nil {
			return f, nil
		}
		return &progressReader{r: f, progress: func(n int64) { p.progress(id, n, b.desc.Size) }}, nil
	}
	if err := p.rc.upload(ctx, loc, d, b.desc.Size, open); err != nil {
		return err
	}
	tell("Pushed")
	p.locs.add(d, repo)
	return nil
}
