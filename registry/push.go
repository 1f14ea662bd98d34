package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/distribution/reference"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/imgfs/imgfs/store"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// PushOptions say how to push.
type PushOptions struct {
	// Status hears the push's progress in docker's words: id is a layer's short digest
	// ("" for the repository), msg "The push refers to repository [HOST/REPO]", "Pushed",
	// "Layer already exists".
	Status func(id, msg string)
	// Progress hears how many bytes of a layer (id, its short digest) have gone up, of
	// total, while it uploads. It may be called from several goroutines at once.
	Progress func(id string, current, total int64)
}

// Pushed is one tag (or digest) a push sent.
type Pushed struct {
	Tag    string        // the tag, or the digest for a push by digest
	Digest digest.Digest // the manifest's, as in the store
	Size   int64         // the manifest's size in bytes
}

// Push sends the images refStr names in s to the registry their name says: a tagged or
// digested name one image, a repository name without a tag every tag of it in s, as
// docker push does. Manifests, configs and compressed layers go up byte for byte, so
// every digest stays the same. go-containerregistry HEADs each blob first and uploads only
// the missing ones; all the tags go in one MultiWrite, so a shared layer is checked once.
func (c *Client) Push(ctx context.Context, s *store.Store, refStr string, opts PushOptions) ([]Pushed, error) {
	status := opts.Status
	if status == nil {
		status = func(string, string) {}
	}
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

	todo := map[name.Reference]remote.Taggable{}
	var res []Pushed
	var layers [][]ocispec.Descriptor
	for i, img := range imgs {
		ref, err := c.ParseReference(names[i].String())
		if err != nil {
			return nil, err
		}
		si, err := newStoreImage(s, img)
		if err != nil {
			if reference.IsNameOnly(named) {
				err = fmt.Errorf("%s: %w", reference.FamiliarString(names[i]), err)
			}
			return nil, err
		}
		todo[ref] = si
		res = append(res, Pushed{Tag: ref.Identifier(), Digest: img.Target.Digest, Size: img.Target.Size})
		layers = append(layers, img.Manifest.Layers)
	}

	status("", "The push refers to repository ["+named.Name()+"]")

	// What the registry has already, each blob asked once.
	heads := &blobHeads{c: c, repo: repo, known: map[digest.Digest]bool{}}
	for _, ls := range layers {
		for _, l := range ls {
			if _, err := heads.exists(ctx, l.Digest); err != nil {
				return nil, err
			}
		}
	}

	ropts := append(append([]remote.Option{}, c.ropts...), remote.Reuse(c.pusher), remote.WithContext(ctx))
	if err := remote.MultiWrite(todo, ropts...); err != nil {
		return nil, describe(err, repoRef, "")
	}

	seen := map[digest.Digest]bool{}
	for _, ls := range layers {
		for _, l := range ls {
			if heads.known[l.Digest] || seen[l.Digest] {
				status(short(l.Digest), "Layer already exists")
			} else {
				status(short(l.Digest), "Pushed")
			}
			seen[l.Digest] = true
		}
	}
	return res, nil
}

// blobHeads asks a repository whether it has blobs, with a HEAD each, and remembers the
// answers for the rest of the command.
type blobHeads struct {
	c     *Client
	repo  name.Repository
	rc    *repoClient
	known map[digest.Digest]bool
}

func (b *blobHeads) exists(ctx context.Context, d digest.Digest) (bool, error) {
	if ok, seen := b.known[d]; seen {
		return ok, nil
	}
	if b.rc == nil {
		rc, err := b.c.repoClient(ctx, b.repo, transport.PushScope)
		if err != nil {
			return false, err
		}
		b.rc = rc
	}
	ok, err := b.rc.hasBlob(ctx, d)
	if err != nil {
		return false, err
	}
	b.known[d] = ok
	return ok, nil
}

// storeImage is an image in the store as go-containerregistry sees it: its manifest and
// config bytes as stored, its layers the stored compressed blobs.
type storeImage struct {
	s   *store.Store
	raw []byte
	mt  types.MediaType
	cfg []byte
	m   ocispec.Manifest
}

func newStoreImage(s *store.Store, img store.Image) (v1.Image, error) {
	if img.Target.Digest != img.Descriptor.Digest {
		return nil, fmt.Errorf("a multi-platform image (image index %s): pushing image indexes is not supported yet", img.Target.Digest)
	}
	raw, err := s.ReadBlob(img.Descriptor.Digest, store.MaxManifestSize)
	if err != nil {
		return nil, err
	}
	var shape struct {
		MediaType string `json:"mediaType"`
	}
	if err := json.Unmarshal(raw, &shape); err != nil {
		return nil, fmt.Errorf("manifest %s: %v", img.Descriptor.Digest, err)
	}
	mt := img.Descriptor.MediaType
	if shape.MediaType != "" {
		mt = shape.MediaType
	}
	if mt == "" {
		mt = ocispec.MediaTypeImageManifest
	}
	cfg, _, err := s.ReadConfig(img.Manifest.Config.Digest)
	if err != nil {
		return nil, err
	}
	return partial.CompressedToImage(&storeImage{s: s, raw: raw, mt: types.MediaType(mt), cfg: cfg, m: img.Manifest})
}

func (i *storeImage) RawManifest() ([]byte, error)        { return i.raw, nil }
func (i *storeImage) RawConfigFile() ([]byte, error)      { return i.cfg, nil }
func (i *storeImage) MediaType() (types.MediaType, error) { return i.mt, nil }
func (i *storeImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	d := digest.Digest(h.String())
	if d == i.m.Config.Digest {
		return &storeLayer{s: i.s, desc: i.m.Config}, nil
	}
	for _, l := range i.m.Layers {
		if l.Digest == d {
			return &storeLayer{s: i.s, desc: l}, nil
		}
	}
	return nil, fmt.Errorf("blob %s is not in manifest", d)
}

// storeLayer is a stored blob, compressed as it is.
type storeLayer struct {
	s    *store.Store
	desc ocispec.Descriptor
}

func (l *storeLayer) Digest() (v1.Hash, error) { return v1.NewHash(l.desc.Digest.String()) }
func (l *storeLayer) Size() (int64, error)     { return l.desc.Size, nil }
func (l *storeLayer) MediaType() (types.MediaType, error) {
	return types.MediaType(l.desc.MediaType), nil
}
func (l *storeLayer) Compressed() (io.ReadCloser, error) { return l.s.OpenBlob(l.desc.Digest) }
