package store

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Docker's media types, which registries still serve for many images. Their manifests and
// lists have the same JSON shape as OCI's manifests and indexes.
const (
	MediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeDockerConfig       = "application/vnd.docker.container.image.v1+json"
	MediaTypeDockerLayerGzip    = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	MediaTypeDockerForeignGzip  = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
)

// minIDPrefix is the fewest hex digits of an image ID Resolve takes as a prefix of one.
// Docker's short IDs are 12. (A variable for a test that needs collisions.)
var minIDPrefix = 12

// MaxManifestSize bounds the manifests and indexes read, as registries do (4 MiB).
const MaxManifestSize = 4 << 20

// MaxConfigSize bounds the image configs read: they hold the history and the environment,
// rarely more than a few KB, and a long history makes them big.
const MaxConfigSize = 4 * MaxManifestSize

// ReadConfig reads and verifies the image config blob d, returning its bytes as stored and
// their parse. Bytes that do not parse as an image config come back with the parse error.
func (s *Store) ReadConfig(d digest.Digest) ([]byte, *ocispec.Image, error) {
	data, err := s.ReadBlob(d, MaxConfigSize)
	if err != nil {
		return nil, nil, err
	}
	cfg := new(ocispec.Image)
	if err := json.Unmarshal(data, cfg); err != nil {
		return data, nil, fmt.Errorf("store: config %s: %w", d, err)
	}
	return data, cfg, nil
}

// Created is when an image config says the image was made: zero when it does not say (or
// there is no config).
func Created(cfg *ocispec.Image) time.Time {
	if cfg == nil || cfg.Created == nil {
		return time.Time{}
	}
	return *cfg.Created
}

// Image is one image index.json names.
type Image struct {
	// Name is the tagged (or, as containerd may write, digested) full name, or nil for
	// an image reachable by ID only.
	Name reference.Named
	// Target is the descriptor in index.json: a manifest or an image index.
	Target ocispec.Descriptor
	// Descriptor is the image manifest's: Target itself, or the one picked from the
	// image index for the platform.
	Descriptor ocispec.Descriptor
	// Manifest is the parsed image manifest. Share, do not modify.
	Manifest ocispec.Manifest
	// ID is the digest of the image config, docker's image ID.
	ID digest.Digest
}

func isManifestType(mt string) bool {
	return mt == ocispec.MediaTypeImageManifest || mt == MediaTypeDockerManifest
}

func isIndexType(mt string) bool {
	return mt == ocispec.MediaTypeImageIndex || mt == MediaTypeDockerManifestList
}

// parsed is a manifest or image index blob, one of the two set.
type parsed struct {
	manifest *ocispec.Manifest
	index    *ocispec.Index
}

// readManifest reads, verifies and parses the manifest or image index d describes,
// keeping the result in memory (blobs never change). Its kind comes from the descriptor's
// media type, else the blob's own, else its shape.
func (s *Store) readManifest(d ocispec.Descriptor) (parsed, error) {
	s.cacheMu.Lock()
	cached, ok := s.manifests[d.Digest]
	s.cacheMu.Unlock()
	if ok {
		return cached, nil
	}
	var p parsed
	data, err := s.ReadBlob(d.Digest, MaxManifestSize)
	if err != nil {
		return parsed{}, err
	}
	var probe struct {
		SchemaVersion int             `json:"schemaVersion"`
		MediaType     string          `json:"mediaType"`
		Config        json.RawMessage `json:"config"`
		Manifests     json.RawMessage `json:"manifests"`
	}
	if err := json.Unmarshal(data, &probe); err != nil {
		return parsed{}, fmt.Errorf("manifest %s: %v", d.Digest, err)
	}
	if probe.SchemaVersion != 2 {
		return parsed{}, fmt.Errorf("manifest %s: schema version %d not supported", d.Digest, probe.SchemaVersion)
	}
	mt := d.MediaType
	if !isManifestType(mt) && !isIndexType(mt) {
		mt = probe.MediaType
	}
	switch {
	case isManifestType(mt), !isIndexType(mt) && probe.Config != nil:
		m := new(ocispec.Manifest)
		if err := json.Unmarshal(data, m); err != nil {
			return parsed{}, fmt.Errorf("manifest %s: %v", d.Digest, err)
		}
		if err := m.Config.Digest.Validate(); err != nil {
			return parsed{}, fmt.Errorf("manifest %s: config digest: %v", d.Digest, err)
		}
		p = parsed{manifest: m}
	case isIndexType(mt), probe.Manifests != nil:
		ix := new(ocispec.Index)
		if err := json.Unmarshal(data, ix); err != nil {
			return parsed{}, fmt.Errorf("image index %s: %v", d.Digest, err)
		}
		p = parsed{index: ix}
	default:
		return parsed{}, fmt.Errorf("blob %s (%s) is neither an image manifest nor an image index", d.Digest, d.MediaType)
	}
	s.cacheMu.Lock()
	s.manifests[d.Digest] = p
	s.cacheMu.Unlock()
	return p, nil
}

// image resolves an index.json descriptor to its image for the platform.
func (s *Store) image(target ocispec.Descriptor) (Image, error) {
	desc, m, err := s.resolveManifest(target, 0)
	if err != nil {
		return Image{}, err
	}
	return Image{Name: entryName(target), Target: target, Descriptor: desc, Manifest: *m, ID: m.Config.Digest}, nil
}

// resolveManifest follows image indexes (possibly nested) down to the image manifest for
// the platform.
func (s *Store) resolveManifest(d ocispec.Descriptor, depth int) (ocispec.Descriptor, *ocispec.Manifest, error) {
	if depth > 4 {
		return d, nil, fmt.Errorf("image index %s: nested too deep", d.Digest)
	}
	p, err := s.readManifest(d)
	if err != nil {
		return d, nil, err
	}
	if p.manifest != nil {
		return d, p.manifest, nil
	}
	want := s.platform()
	best, bestRank := -1, 0
	for i, c := range p.index.Manifests {
		if !isManifestType(c.MediaType) && !isIndexType(c.MediaType) {
			continue
		}
		if r := platformRank(want, c.Platform); r >= 0 && (best < 0 || r < bestRank) {
			best, bestRank = i, r
		}
	}
	if best < 0 {
		return d, nil, fmt.Errorf("image index %s has no manifest for %s", d.Digest, platformString(want))
	}
	return s.resolveManifest(p.index.Manifests[best], depth+1)
}

// isImageEntry reports whether an index.json descriptor is (or may be) an image, rather
// than an artifact some other tool keeps there.
func isImageEntry(d ocispec.Descriptor) bool {
	return d.MediaType == "" || isManifestType(d.MediaType) || isIndexType(d.MediaType)
}

// Images lists the images index.json names, one per descriptor, in its order. Entries
// that cannot be resolved (a missing blob, no manifest for the platform) are left out and
// reported, one line, in the error that comes with the others.
func (s *Store) Images() ([]Image, error) {
	ix, err := s.readIndex()
	if err != nil {
		return nil, err
	}
	var imgs []Image
	var errs []error
	for _, e := range ix.entries {
		if !isImageEntry(e.desc) {
			continue
		}
		img, err := s.image(e.desc)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", entryLabel(e.desc), err))
			continue
		}
		imgs = append(imgs, img)
	}
	if len(errs) > 0 {
		return imgs, fmt.Errorf("store: %w", joinedError(errs))
	}
	return imgs, nil
}

// entryLabel names an index.json entry in messages.
func entryLabel(d ocispec.Descriptor) string {
	if n := entryName(d); n != nil {
		return reference.FamiliarString(n)
	}
	return d.Digest.String()
}

// joinedError is errors.Join on one line.
type joinedError []error

func (j joinedError) Error() string {
	s := make([]string, len(j))
	for i, e := range j {
		s[i] = e.Error()
	}
	return strings.Join(s, "; ")
}

func (j joinedError) Unwrap() []error { return j }

// Resolve finds an image by reference, with docker's rules: a familiar name ("busybox",
// "busybox:1.36", "ghcr.io/acme/app:v2"; no tag means latest), a name with the digest of
// its manifest or image index (busybox@sha256:...), an image ID (the config digest, with
// or without "sha256:") or an unambiguous prefix of one of at least 12 hex digits. A name
// is tried before an ID prefix, as a prefix may also be a valid name. Errors are one line:
// "no such image: busybox:1.0".
func (s *Store) Resolve(ref string) (Image, error) {
	notFound := fmt.Errorf("%w: %s", ErrNoSuchImage, ref)
	ix, err := s.readIndex()
	if err != nil {
		return Image{}, err
	}
	if alg, hex, ok := strings.Cut(ref, ":"); ok && digest.Algorithm(alg).Available() {
		if !isHex(hex) || len(hex) < minIDPrefix || len(hex) > digest.Algorithm(alg).Size()*2 {
			return Image{}, fmt.Errorf("invalid image ID %q: want %s: and %d to %d hex digits",
				ref, alg, minIDPrefix, digest.Algorithm(alg).Size()*2)
		}
		return s.byID(ix, ref, digest.Algorithm(alg), hex)
	}
	if isHex(ref) && len(ref) == 64 {
		return s.byID(ix, ref, digest.SHA256, ref)
	}
	named, perr := reference.ParseDockerRef(ref)
	if perr == nil {
		img, found, err := s.byName(ix, named)
		if err != nil {
			return Image{}, fmt.Errorf("%s: %w", ref, err)
		}
		if found {
			return img, nil
		}
	}
	if isHex(ref) && len(ref) >= minIDPrefix {
		return s.byID(ix, ref, digest.SHA256, ref)
	}
	if perr != nil {
		return Image{}, fmt.Errorf("invalid image reference %q: %v", ref, perr)
	}
	return Image{}, notFound
}

// byName finds the image index.json names named (tagged, or digested), the last entry
// winning if other tools left duplicates.
func (s *Store) byName(ix *indexFile, named reference.Named) (Image, bool, error) {
	dig, isDigested := named.(reference.Digested)
	repo := reference.TrimNamed(named).String()
	for _, e := range slices.Backward(ix.entries) {
		if !isImageEntry(e.desc) {
			continue
		}
		n := entryName(e.desc)
		if n == nil {
			continue
		}
		if !isDigested {
			if n.String() != named.String() {
				continue
			}
			img, err := s.image(e.desc)
			return img, err == nil, err
		}
		if reference.TrimNamed(n).String() != repo {
			continue
		}
		d := dig.Digest()
		if e.desc.Digest == d {
			img, err := s.image(e.desc)
			return img, err == nil, err
		}
		// The digest of one platform's manifest in a multi-arch image.
		p, err := s.readManifest(e.desc)
		if err != nil || p.index == nil {
			continue
		}
		for _, c := range p.index.Manifests {
			if c.Digest != d || !isManifestType(c.MediaType) {
				continue
			}
			cd, m, err := s.resolveManifest(c, 1)
			if err != nil {
				return Image{}, false, err
			}
			return Image{Name: n, Target: e.desc, Descriptor: cd, Manifest: *m, ID: m.Config.Digest}, true, nil
		}
	}
	return Image{}, false, nil
}

// byID finds the image whose ID has the given hex prefix (the whole ID included).
func (s *Store) byID(ix *indexFile, ref string, alg digest.Algorithm, prefix string) (Image, error) {
	var found []Image
	var ids []string
	for _, e := range ix.entries {
		if !isImageEntry(e.desc) {
			continue
		}
		img, err := s.image(e.desc)
		if err != nil || img.ID.Algorithm() != alg || !strings.HasPrefix(img.ID.Encoded(), prefix) {
			continue
		}
		if !slices.Contains(ids, img.ID.String()) {
			ids = append(ids, img.ID.String())
		}
		found = append(found, img)
	}
	switch len(ids) {
	case 0:
		return Image{}, fmt.Errorf("%w: %s", ErrNoSuchImage, ref)
	case 1:
		// Several names may share the ID: a named entry is the more telling answer.
		for _, img := range found {
			if img.Name != nil {
				return img, nil
			}
		}
		return found[0], nil
	}
	slices.Sort(ids)
	return Image{}, fmt.Errorf("%w %s: matches %s", ErrAmbiguous, ref, strings.Join(ids, ", "))
}
