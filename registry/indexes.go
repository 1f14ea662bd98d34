package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/imgfs/imgfs/internal/par"
	"github.com/imgfs/imgfs/layerindex"
	"github.com/imgfs/imgfs/store"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Layer indexes are shared through the registry as one OCI artifact per image manifest:
// an image manifest whose artifactType is IndexesArtifactType, whose config is the OCI
// empty descriptor, whose layers are the image's layer indexes (layerindex's
// MarshalBinary, one blob per distinct layer, each annotated with its layer's digest), and
// whose subject is the image manifest. It is found as the OCI distribution spec 1.1 says:
// through the referrers API (GET /v2/REPO/referrers/DIGEST) where the registry has it,
// else through the image index tagged sha256-HEX (the fallback tag schema), which the
// pusher keeps by read-modify-write.
//
// A registry, or anyone who may push to the repository, can list any artifact there: an
// index is used only if it names the layer's digest and size (from the manifest, verified
// by its digest) and its diffID (from the config, verified by its digest). What else an
// index says (the tar's entries, the checkpoints, the spans' CRCs) a read checks against
// the bytes it reads.

const (
	// IndexesArtifactType is the artifactType of the artifact that holds an image's
	// layer indexes.
	IndexesArtifactType = "application/vnd.imgfs.layer-indexes.v1"
	// LayerDigestAnnotation, on each layer of the artifact, names the image layer whose
	// index it is.
	LayerDigestAnnotation = "com.github.imgfs.layer.digest"
)

// IndexMediaType is the media type of a layer index blob in the artifact: the version of
// the index format is in it, so that an index another version of imgfs pushed is passed
// over, not taken for damaged.
var IndexMediaType = fmt.Sprintf("application/vnd.imgfs.layer-index.v%d", layerindex.IndexVersion)

const (
	// maxReferrers bounds the artifacts of our type looked at for one image: anyone who
	// may push can list more, and each costs a request.
	maxReferrers = 8
	// maxReferrerPages bounds the pages of a referrers list read for one image: each is a
	// request, on a lazy mount's way to its first byte.
	maxReferrerPages = 8
	// maxIndexOverhead bounds a shared layer index's size beyond its layer's: an index is
	// far smaller than its layer (a checkpoint's window every few MiB, a few bytes per tar
	// entry), and a registry must not make a mount read without end.
	maxIndexOverhead = 16 << 20
	// indexPrealloc is as much of a shared index's buffer as is made before its bytes
	// come: a few times a big image's index.
	indexPrealloc = 8 << 20
)

// emptyJSON is the bytes of ocispec.DescriptorEmptyJSON, the artifact's config.
var emptyJSON = []byte("{}")

// indexArtifact is one image manifest's layer indexes as they go up.
type indexArtifact struct {
	subject ocispec.Descriptor // the image manifest
	raw     []byte             // the artifact manifest
	desc    ocispec.Descriptor // the artifact manifest's, as the referrers list names it
	blobs   []blobToPush       // the empty config, then the indexes
}

// newIndexArtifact makes the artifact for image manifest subject from the indexes of its
// layers (as layers lists them; a layer without an index, one that is not a tar, has none
// and is left out), in layer order, each distinct layer once.
func newIndexArtifact(subject ocispec.Descriptor, layers []ocispec.Descriptor, indexes map[digest.Digest]*layerindex.Index) (*indexArtifact, error) {
	a := &indexArtifact{subject: ocispec.Descriptor{MediaType: subject.MediaType, Digest: subject.Digest, Size: subject.Size}}
	cfg := ocispec.DescriptorEmptyJSON
	a.blobs = append(a.blobs, blobToPush{desc: cfg, data: emptyJSON})
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, ArtifactType: IndexesArtifactType,
		Config: cfg, Layers: []ocispec.Descriptor{}, Subject: &a.subject}
	m.SchemaVersion = 2
	seen := map[digest.Digest]bool{}
	for _, l := range layers {
		ix := indexes[l.Digest]
		if ix == nil || seen[l.Digest] {
			continue
		}
		seen[l.Digest] = true
		data, err := ix.MarshalBinary()
		if err != nil {
			return nil, fmt.Errorf("layer %s: index: %w", l.Digest, err)
		}
		d := ocispec.Descriptor{MediaType: IndexMediaType, Digest: digest.FromBytes(data), Size: int64(len(data)),
			Annotations: map[string]string{LayerDigestAnnotation: l.Digest.String()}}
		m.Layers = append(m.Layers, d)
		a.blobs = append(a.blobs, blobToPush{desc: d, data: data, near: l.Digest})
	}
	if len(a.blobs) > 1 {
		a.blobs[0].near = a.blobs[1].near // pushed beside the indexes
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	a.raw = raw
	a.desc = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, ArtifactType: IndexesArtifactType,
		Digest: digest.FromBytes(raw), Size: int64(len(raw))}
	return a, nil
}

// storeIndexArtifact makes the artifact of the layer indexes of image manifest m from the
// store's indexes (built where missing), nil when m has no layer the store indexes.
func storeIndexArtifact(s *store.Store, m storedManifest) (*indexArtifact, error) {
	indexes := map[digest.Digest]*layerindex.Index{}
	for _, l := range m.layers {
		if !isTarLayer(l.MediaType) || !s.HasBlob(l.Digest) || indexes[l.Digest] != nil {
			continue
		}
		ix, err := s.LayerIndex(ocispec.Descriptor{MediaType: l.MediaType, Digest: l.Digest, Size: l.Size})
		if err != nil {
			return nil, fmt.Errorf("manifest %s: %w", m.desc.Digest, err)
		}
		indexes[l.Digest] = ix
	}
	if len(indexes) == 0 {
		return nil, nil
	}
	return newIndexArtifact(m.desc, m.layers, indexes)
}

// fallbackTag is the tag of the image index that lists the referrers of manifest d where
// the registry has no referrers API: ALG-HEX (the spec truncates longer ones; sha256 and
// sha512 digests fit).
func fallbackTag(d digest.Digest) string {
	return string(d.Algorithm()) + "-" + d.Encoded()
}

// IsFallbackTag says whether tag has the form of a referrers fallback tag (ALG-HEX, as
// sha256-<64 hex>): a list of artifacts, not an image, for a tree of a repository's tags
// to leave out.
func IsFallbackTag(tag string) bool {
	alg, hex, ok := strings.Cut(tag, "-")
	d := digest.NewDigestFromEncoded(digest.Algorithm(alg), hex)
	return ok && d.Algorithm().Available() && d.Validate() == nil
}

// referrers lists the manifests in the repository that name manifest subject as their
// subject and have our artifact type: from the referrers API, or (api false) from the
// fallback tag's image index where the registry has no referrers API. fallback is the
// tag's index as it is (nil when there is none or the API answered).
func (r *repoClient) referrers(ctx context.Context, subject digest.Digest) (list []ocispec.Descriptor, api bool, fallback *ocispec.Index, err error) {
	u := r.url("referrers/"+subject.String()) + "?" + url.Values{"artifactType": {IndexesArtifactType}}.Encode()
	raw, ct, status, next, err := r.getPage(ctx, u, ocispec.MediaTypeImageIndex, store.MaxManifestSize)
	if err != nil {
		return nil, false, nil, describe(err, r.repo.Digest(subject.String()), "")
	}
	// A registry without the API answers 404 (distribution 2.8: no such route), or 400 or
	// 406; one with it answers 200 with an image index, even when it lists nothing. A long
	// list comes in pages, each naming the next in a Link header, which a registry that does
	// not filter by artifactType may need for ours, behind signatures and SBOMs: followed
	// for maxReferrerPages pages at most, and only on the registry itself.
	if status == http.StatusOK && mediaTypeIs(ct, ocispec.MediaTypeImageIndex) {
		var all []ocispec.Descriptor
		for page := 1; ; page++ {
			ix, err := parseReferrers(raw)
			if err != nil {
				return nil, false, nil, fmt.Errorf("registry %s, repository %s: referrers of %s (page %d): %v", r.repo.RegistryStr(), r.repo.RepositoryStr(), subject, page, err)
			}
			all = append(all, ix.Manifests...)
			if next == "" || page == maxReferrerPages {
				break
			}
			raw, ct, status, next, err = r.getPage(ctx, next, ocispec.MediaTypeImageIndex, store.MaxManifestSize)
			if err != nil {
				return nil, false, nil, describe(err, r.repo.Digest(subject.String()), "")
			}
			if status != http.StatusOK || !mediaTypeIs(ct, ocispec.MediaTypeImageIndex) {
				return nil, false, nil, fmt.Errorf("registry %s, repository %s: referrers of %s: page %d is not a list (%d, %q)", r.repo.RegistryStr(), r.repo.RepositoryStr(), subject, page+1, status, ct)
			}
		}
		return ofIndexesType(all), true, nil, nil
	}
	tag := fallbackTag(subject)
	raw, _, status, err = r.get(ctx, r.url("manifests/"+tag), ocispec.MediaTypeImageIndex, store.MaxManifestSize)
	if err != nil {
		return nil, false, nil, describe(err, r.repo.Tag(tag), "")
	}
	if status == http.StatusNotFound {
		return nil, false, nil, nil
	}
	ix, err := parseReferrers(raw)
	if err != nil {
		return nil, false, nil, fmt.Errorf("registry %s, repository %s, tag %s (the referrers of %s): %v", r.repo.RegistryStr(), r.repo.RepositoryStr(), tag, subject, err)
	}
	return ofIndexesType(ix.Manifests), false, ix, nil
}

// mediaTypeIs says whether a Content-Type header names media type mt (parameters aside).
func mediaTypeIs(ct, mt string) bool {
	ct, _, _ = strings.Cut(ct, ";")
	return strings.EqualFold(strings.TrimSpace(ct), mt)
}

// parseReferrers reads a list of referrers: an OCI image index.
func parseReferrers(raw []byte) (*ocispec.Index, error) {
	var ix ocispec.Index
	if err := json.Unmarshal(raw, &ix); err != nil {
		return nil, fmt.Errorf("not an image index: %v", err)
	}
	if ix.SchemaVersion != 2 || (ix.MediaType != "" && ix.MediaType != ocispec.MediaTypeImageIndex) {
		return nil, fmt.Errorf("not an OCI image index (schemaVersion %d, mediaType %q)", ix.SchemaVersion, ix.MediaType)
	}
	return &ix, nil
}

// ofIndexesType keeps the entries of a referrers list that say they are our artifact,
// well formed, the last maxReferrers of them (a list grows at its end), newest first.
func ofIndexesType(list []ocispec.Descriptor) []ocispec.Descriptor {
	var out []ocispec.Descriptor
	for i := len(list) - 1; i >= 0 && len(out) < maxReferrers; i-- {
		d := list[i]
		if d.ArtifactType == IndexesArtifactType && d.MediaType == ocispec.MediaTypeImageManifest &&
			d.Digest.Validate() == nil && d.Size > 0 && d.Size <= store.MaxManifestSize {
			out = append(out, d)
		}
	}
	return out
}

// get sends a GET for u accepting media type accept and returns the body (at most max
// bytes; more is an error), its Content-Type and the status: 200, or 404 with no body.
// Other answers are errors.
func (r *repoClient) get(ctx context.Context, u, accept string, max int64) ([]byte, string, int, error) {
	data, ct, status, _, err := r.getPage(ctx, u, accept, max)
	return data, ct, status, err
}

// getPage is get, and also returns the URL of the next page where the answer has a Link
// header with rel="next" to a URL on the same registry ("" otherwise).
func (r *repoClient) getPage(ctx context.Context, u, accept string, max int64) ([]byte, string, int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, "", 0, "", err
	}
	req.Header.Set("Accept", accept)
	resp, err := r.hc.Do(req)
	if err != nil {
		return nil, "", 0, "", err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNotFound, http.StatusBadRequest, http.StatusNotAcceptable:
		return nil, "", http.StatusNotFound, "", nil
	}
	if err := transport.CheckError(resp, http.StatusOK); err != nil {
		return nil, "", 0, "", err
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, max+1))
	if err != nil {
		return nil, "", 0, "", err
	}
	if int64(len(data)) > max {
		return nil, "", 0, "", fmt.Errorf("answer larger than %d bytes", max)
	}
	return data, resp.Header.Get("Content-Type"), resp.StatusCode, nextPage(req.URL, resp.Header.Values("Link")), nil
}

// nextPage returns the target of the rel="next" link among Link header values links,
// resolved against the URL of the request, if it is on the same scheme and host (the
// credentials of this registry go with it); "" if there is none such.
func nextPage(base *url.URL, links []string) string {
	for _, v := range links {
		for _, link := range strings.Split(v, ",") {
			target, params, ok := strings.Cut(strings.TrimSpace(link), ";")
			target = strings.TrimSpace(target)
			if !ok || !strings.HasPrefix(target, "<") || !strings.HasSuffix(target, ">") {
				continue
			}
			next := false
			for _, p := range strings.Split(params, ";") {
				k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
				if strings.EqualFold(k, "rel") && slices.Contains(strings.Fields(strings.Trim(v, `"`)), "next") {
					next = true
				}
			}
			if !next {
				continue
			}
			u, err := base.Parse(target[1 : len(target)-1])
			if err != nil || u.Scheme != base.Scheme || u.Host != base.Host {
				return ""
			}
			return u.String()
		}
	}
	return ""
}

// putManifest sends manifest raw of media type mt to the repository under ref (a tag or
// its digest) and returns the OCI-Subject header of the answer: a registry with the
// referrers API names there the subject it listed the manifest under.
func (r *repoClient) putManifest(ctx context.Context, ref, mt string, raw []byte) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, r.url("manifests/"+ref), bytes.NewReader(raw))
	if err != nil {
		return "", err
	}
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(raw)), nil }
	req.ContentLength = int64(len(raw))
	req.Header.Set("Content-Type", mt)
	resp, err := r.hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close() // after CheckError, which reads the registry's reason from it
	if err := transport.CheckError(resp, http.StatusCreated, http.StatusOK, http.StatusAccepted); err != nil {
		return "", err
	}
	return resp.Header.Get("OCI-Subject"), nil
}

// pushIndexArtifacts sends the artifacts the repository lacks, each blob of them once: an
// artifact the referrers of its image list already sends nothing more. A registry that
// answers the artifact's PUT without naming its subject (OCI-Subject) has no referrers
// API: the artifact goes into the fallback tag's image index, read again just before it
// is written back. It returns the artifacts it sent.
func pushIndexArtifacts(ctx context.Context, p *blobPusher, arts []*indexArtifact, concurrency int) ([]*indexArtifact, error) {
	rc := p.rc
	var missing []*indexArtifact
	var blobs []blobToPush
	seen := map[digest.Digest]bool{}
	for _, a := range arts {
		list, _, _, err := rc.referrers(ctx, a.subject.Digest)
		if err != nil {
			return nil, err
		}
		if slices.ContainsFunc(list, func(d ocispec.Descriptor) bool { return d.Digest == a.desc.Digest }) {
			continue
		}
		missing = append(missing, a)
		for _, b := range a.blobs {
			if !seen[b.desc.Digest] {
				seen[b.desc.Digest] = true
				blobs = append(blobs, b)
			}
		}
	}
	if len(missing) == 0 {
		return nil, nil
	}
	if err := p.pushAll(ctx, blobs, concurrency); err != nil {
		return nil, err
	}
	for _, a := range missing {
		subj, err := rc.putManifest(ctx, a.desc.Digest.String(), ocispec.MediaTypeImageManifest, a.raw)
		if err != nil {
			return nil, describe(err, rc.repo.Digest(a.desc.Digest.String()), "")
		}
		if subj == a.subject.Digest.String() {
			continue // listed by the registry
		}
		if err := rc.addFallbackReferrer(ctx, a); err != nil {
			return nil, err
		}
	}
	return missing, nil
}

// addFallbackReferrer adds artifact a to the image index tagged with its subject's
// fallback tag: read, the entry added unless there, written back.
func (r *repoClient) addFallbackReferrer(ctx context.Context, a *indexArtifact) error {
	tag := fallbackTag(a.subject.Digest)
	raw, _, status, err := r.get(ctx, r.url("manifests/"+tag), ocispec.MediaTypeImageIndex, store.MaxManifestSize)
	if err != nil {
		return describe(err, r.repo.Tag(tag), "")
	}
	ix := &ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{}}
	ix.SchemaVersion = 2
	if status == http.StatusOK {
		if ix, err = parseReferrers(raw); err != nil {
			return fmt.Errorf("registry %s, repository %s, tag %s (the referrers of %s): %v; imgfs will not overwrite it",
				r.repo.RegistryStr(), r.repo.RepositoryStr(), tag, a.subject.Digest, err)
		}
		if slices.ContainsFunc(ix.Manifests, func(d ocispec.Descriptor) bool { return d.Digest == a.desc.Digest }) {
			return nil
		}
	}
	ix.MediaType = ocispec.MediaTypeImageIndex
	ix.Manifests = append(ix.Manifests, a.desc)
	out, err := json.Marshal(ix)
	if err != nil {
		return err
	}
	if _, err := r.putManifest(ctx, tag, ocispec.MediaTypeImageIndex, out); err != nil {
		return describe(err, r.repo.Tag(tag), "")
	}
	return nil
}

// IndexRefused says why a layer index found in the registry was not used.
type IndexRefused struct {
	Layer    digest.Digest // the image's layer, "" for an artifact refused whole
	Artifact digest.Digest // the artifact manifest it came from
	Reason   string
}

func (e *IndexRefused) Error() string {
	if e.Layer == "" {
		return fmt.Sprintf("layer indexes %s refused: %s", e.Artifact, e.Reason)
	}
	return fmt.Sprintf("layer %s: index from %s refused: %s", e.Layer, e.Artifact, e.Reason)
}

// SharedIndexes returns the layer indexes shared in the registry for the image manifest m
// of repository repo (manifest its descriptor, m and the config's diffIDs verified by the
// caller against their digests), by layer digest: those of the artifacts the referrers of
// the manifest list (the referrers API, else the fallback tag), each index fetched (its
// size bounded, its digest verified) and used only if it names the layer's digest and size
// (the manifest's) and its diffID (the config's), and its numbers hold together.
//
// The map holds what was accepted (none, when the registry has none); the error, when
// not nil, says what was not and why (the registry's failure, or each index refused, as
// *IndexRefused joined), for the caller to log: the layers without an index are indexed
// from their blobs.
func (c *Client) SharedIndexes(ctx context.Context, repo name.Repository, manifest ocispec.Descriptor, m ocispec.Manifest, diffIDs []digest.Digest) (map[digest.Digest]*layerindex.Index, error) {
	out := map[digest.Digest]*layerindex.Index{}
	rc, err := c.repoClient(ctx, repo, transport.PullScope)
	if err != nil {
		return out, err
	}
	found, err := rc.sharedIndexes(ctx, manifest, m, func() ([]digest.Digest, error) { return diffIDs, nil })
	for d, s := range found {
		out[d] = s.ix
	}
	return out, err
}

// sharedIndex is a layer index the registry shares, accepted: decoded, and its bytes as
// they came (a valid index file, for the store to keep as it is).
type sharedIndex struct {
	ix   *layerindex.Index
	data []byte
}

// indexFetches bounds the index blobs of one artifact fetched and decoded at once.
const indexFetches = 4

// sharedIndexes is SharedIndexes through rc, the repository's client (a lazy mount keeps
// one per repository, Source.client, where making one asks the registry again), with
// the diffIDs given by a function: a lazy mount fetches the config while the indexes
// come, and the indexes wait for it only to be checked. The index blobs of an artifact
// are fetched and decoded indexFetches at a time.
func (rc *repoClient) sharedIndexes(ctx context.Context, manifest ocispec.Descriptor, m ocispec.Manifest, configDiffIDs func() ([]digest.Digest, error)) (map[digest.Digest]sharedIndex, error) {
	found := map[digest.Digest]sharedIndex{}
	diffIDs := sync.OnceValues(func() ([]digest.Digest, error) {
		ids, err := configDiffIDs()
		if err == nil && len(ids) != len(m.Layers) {
			err = fmt.Errorf("manifest %s: %d layers, the config %d diffIDs", manifest.Digest, len(m.Layers), len(ids))
		}
		return ids, err
	})
	list, _, _, err := rc.referrers(ctx, manifest.Digest)
	if err != nil || len(list) == 0 {
		return found, err
	}
	want := map[digest.Digest]int{} // layer digest → its first place in the manifest
	for i, l := range m.Layers {
		if _, ok := want[l.Digest]; !ok {
			want[l.Digest] = i
		}
	}
	var refused []error
	for _, art := range list {
		if len(found) == len(want) {
			break
		}
		raw, err := rc.manifestBlob(ctx, art)
		if err != nil {
			refused = append(refused, &IndexRefused{Artifact: art.Digest, Reason: err.Error()})
			continue
		}
		layers, err := parseIndexArtifact(raw, manifest)
		if err != nil {
			refused = append(refused, &IndexRefused{Artifact: art.Digest, Reason: err.Error()})
			continue
		}
		// The artifact's indexes of layers still without one, each once, in its order.
		var todo []ocispec.Descriptor
		taken := map[digest.Digest]bool{}
		for _, l := range layers {
			ld := digest.Digest(l.Annotations[LayerDigestAnnotation])
			if _, ok := want[ld]; ok && !taken[ld] && found[ld].ix == nil {
				taken[ld] = true
				todo = append(todo, l)
			}
		}
		got := make([]sharedIndex, len(todo))
		errs := make([]error, len(todo))
		par.Do(len(todo), indexFetches, func(k int) {
			i := want[digest.Digest(todo[k].Annotations[LayerDigestAnnotation])]
			got[k], errs[k] = rc.sharedIndex(ctx, todo[k], m.Layers[i], i, diffIDs)
		})
		if _, err := diffIDs(); err != nil {
			return map[digest.Digest]sharedIndex{}, err
		}
		for k, l := range todo {
			ld := digest.Digest(l.Annotations[LayerDigestAnnotation])
			if errs[k] != nil {
				refused = append(refused, &IndexRefused{Layer: ld, Artifact: art.Digest, Reason: errs[k].Error()})
				continue
			}
			found[ld] = got[k]
		}
	}
	return found, errors.Join(refused...)
}

// manifestBlob fetches the manifest desc describes by its digest, its size and digest
// checked.
func (r *repoClient) manifestBlob(ctx context.Context, desc ocispec.Descriptor) ([]byte, error) {
	raw, _, status, err := r.get(ctx, r.url("manifests/"+desc.Digest.String()), desc.MediaType, desc.Size)
	if err != nil {
		return nil, describe(err, r.repo.Digest(desc.Digest.String()), "")
	}
	if status != http.StatusOK {
		return nil, errors.New("listed, but not in the repository")
	}
	if got := digest.FromBytes(raw); got != desc.Digest || int64(len(raw)) != desc.Size {
		return nil, fmt.Errorf("the registry sent %d bytes hashing to %s", len(raw), got)
	}
	return raw, nil
}

// parseIndexArtifact reads an artifact manifest that says it holds the layer indexes of
// image manifest subject, and returns its layers that are indexes of this format version
// naming a layer, well formed.
func parseIndexArtifact(raw []byte, subject ocispec.Descriptor) ([]ocispec.Descriptor, error) {
	var m ocispec.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("not an image manifest: %v", err)
	}
	switch {
	case m.SchemaVersion != 2 || (m.MediaType != "" && m.MediaType != ocispec.MediaTypeImageManifest):
		return nil, fmt.Errorf("not an OCI image manifest (schemaVersion %d, mediaType %q)", m.SchemaVersion, m.MediaType)
	case m.ArtifactType != IndexesArtifactType:
		return nil, fmt.Errorf("artifactType %q, not %s", m.ArtifactType, IndexesArtifactType)
	case m.Subject == nil || m.Subject.Digest != subject.Digest:
		var s digest.Digest
		if m.Subject != nil {
			s = m.Subject.Digest
		}
		return nil, fmt.Errorf("its subject is %q, not the image's manifest %s", s, subject.Digest)
	}
	var out []ocispec.Descriptor
	for _, l := range m.Layers {
		ld := digest.Digest(l.Annotations[LayerDigestAnnotation])
		if l.MediaType == IndexMediaType && l.Digest.Validate() == nil && l.Size > 0 && ld.Validate() == nil {
			out = append(out, l)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no layer index of format %s in it", IndexMediaType)
	}
	return out, nil
}

// sharedIndex fetches the index blob desc describes, for image layer layer, the i-th of
// the manifest, and accepts it only if it is that layer's, of the diffID the config gives
// (see checkSharedIndex).
func (r *repoClient) sharedIndex(ctx context.Context, desc, layer ocispec.Descriptor, i int, diffIDs func() ([]digest.Digest, error)) (sharedIndex, error) {
	if max := layer.Size + maxIndexOverhead; layer.Size < 0 || desc.Size > max {
		return sharedIndex{}, fmt.Errorf("%d bytes, more than an index of a %d-byte layer may be", desc.Size, layer.Size)
	}
	body := r.blob(ctx, desc.Digest, desc.Size)
	defer body.Close()
	// Read into a buffer of the size the artifact gives, not io.ReadAll's growing one:
	// that grew and copied a megabyte index a dozen times on a lazy mount's first read.
	// Bounded up front, as that size is the registry's word until the bytes come.
	var buf bytes.Buffer
	buf.Grow(int(min(desc.Size, indexPrealloc)) + bytes.MinRead)
	if _, err := buf.ReadFrom(io.LimitReader(body, desc.Size+1)); err != nil {
		return sharedIndex{}, err
	}
	data := buf.Bytes()
	if got := desc.Digest.Algorithm().FromBytes(data); int64(len(data)) != desc.Size || got != desc.Digest {
		return sharedIndex{}, fmt.Errorf("blob %s: the registry sent %d bytes not hashing to it", desc.Digest, len(data))
	}
	ids, err := diffIDs()
	if err != nil {
		return sharedIndex{}, err
	}
	ix, err := checkSharedIndex(data, layer, ids[i])
	if err != nil {
		return sharedIndex{}, err
	}
	return sharedIndex{ix, data}, nil
}

// checkSharedIndex decodes a layer index from a registry and accepts it only if it names
// layer's digest and size and diffID, and its numbers hold together: its checkpoints and
// CRCs as a Reader needs them, every entry's data inside the stream.
func checkSharedIndex(data []byte, layer ocispec.Descriptor, diffID digest.Digest) (*layerindex.Index, error) {
	ix := new(layerindex.Index)
	if err := ix.UnmarshalBinary(data); err != nil {
		return nil, err
	}
	switch {
	case ix.BlobDigest != layer.Digest:
		return nil, fmt.Errorf("it indexes blob %s", ix.BlobDigest)
	case ix.BlobSize != layer.Size:
		return nil, fmt.Errorf("it indexes a blob of %d bytes, the manifest says %d", ix.BlobSize, layer.Size)
	case ix.DiffID != diffID:
		return nil, fmt.Errorf("it gives diffID %s, the config %s", ix.DiffID, diffID)
	}
	r, err := layerindex.NewReader(bytes.NewReader(nil), ix, nil)
	if err != nil {
		return nil, err
	}
	r.Close()
	if ix.TOC != nil {
		for i := 0; i < ix.TOC.Len(); i++ {
			e := ix.TOC.At(i)
			if e.Offset < 0 || e.Size < 0 || e.Offset > ix.Size || e.Size > ix.Size-e.Offset {
				return nil, fmt.Errorf("entry %q: its data at %d, %d bytes, is outside the %d-byte stream", e.Name, e.Offset, e.Size, ix.Size)
			}
		}
	}
	return ix, nil
}
