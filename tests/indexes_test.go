package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/imgfs/imgfs/layerindex"
	"github.com/imgfs/imgfs/registry"
	"github.com/imgfs/imgfs/store"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// sharedIndexes calls registry.SharedIndexes for image img of repository repo (test/...)
// on r, as a lazy mount does.
func sharedIndexes(t *testing.T, r *testRegistry, repo string, s *store.Store, img image) (map[digest.Digest]*layerindex.Index, error) {
	t.Helper()
	c, err := registry.New(registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rn, err := name.NewRepository(r.host+"/"+repo, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := s.ReadBlob(img.manifest.Digest, store.MaxManifestSize)
	if err != nil {
		t.Fatal(err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return c.SharedIndexes(context.Background(), rn, img.manifest, m, img.diffIDs)
}

// storeIndexes is the store's index of each of img's layers.
func storeIndexes(t *testing.T, s *store.Store, img image) map[digest.Digest]*layerindex.Index {
	t.Helper()
	out := map[digest.Digest]*layerindex.Index{}
	for _, l := range img.layers {
		ix, err := s.LayerIndex(l)
		if err != nil {
			t.Fatal(err)
		}
		out[l.Digest] = ix
	}
	return out
}

// fallbackReferrers reads the image index under the fallback tag of manifest d in repo:
// the artifacts distribution 2.8 (no referrers API) lists for d.
func (r *testRegistry) fallbackReferrers(t *testing.T, repo string, d digest.Digest) ocispec.Index {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, r.url("/v2/"+repo+"/manifests/sha256-"+d.Encoded()), nil)
	req.Header.Set("Accept", ocispec.MediaTypeImageIndex)
	resp, err := r.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ix ocispec.Index
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET the fallback tag of %s in %s: %s", d, repo, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&ix); err != nil {
		t.Fatal(err)
	}
	return ix
}

// TestPushIndexes: imgfs push also pushes the image's layer indexes, as an artifact the
// fallback tag lists (distribution 2.8 has no referrers API); SharedIndexes finds each
// layer's, equal to the store's. A second push sends nothing of them: one look-up only.
func TestPushIndexes(t *testing.T) {
	r := startRegistry(t)
	orig := filepath.Join(t.TempDir(), "orig")
	ref := r.host + "/test/app:1"
	s, img := origImage(t, orig, ref)

	if res := imgfs(t, orig, "push", ref); res.code != 0 {
		t.Fatalf("imgfs push %s: exit %d\n%s%s\nregistry log:\n%s", ref, res.code, res.stdout, res.stderr, r.logTail())
	}
	refs := r.fallbackReferrers(t, "test/app", img.manifest.Digest)
	if len(refs.Manifests) != 1 || refs.Manifests[0].ArtifactType != registry.IndexesArtifactType {
		t.Fatalf("fallback tag lists %+v, want one artifact of type %s", refs.Manifests, registry.IndexesArtifactType)
	}
	art := refs.Manifests[0].Digest

	got, err := sharedIndexes(t, r, "test/app", s, img)
	if err != nil {
		t.Fatalf("SharedIndexes: %v", err)
	}
	want := storeIndexes(t, s, img)
	if len(got) != len(img.layers) {
		t.Fatalf("SharedIndexes: %d indexes, want %d", len(got), len(img.layers))
	}
	// Compared as encoded: an index read from bytes keeps its windows packed, one the
	// store built has them inflated.
	encode := func(ix *layerindex.Index) []byte {
		data, err := ix.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	for d, ix := range want {
		if got[d] == nil || !bytes.Equal(encode(got[d]), encode(ix)) {
			t.Errorf("layer %s: the shared index differs from the store's", d)
		}
	}

	before := len(r.accessLog(t))
	if res := imgfs(t, orig, "push", ref); res.code != 0 {
		t.Fatalf("second imgfs push: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	log := r.accessLog(t)[before:]
	for _, l := range log {
		if strings.Contains(l, "/blobs/uploads/") || strings.Contains(l, "/manifests/sha256") && !strings.Contains(l, `"GET `) {
			t.Errorf("second push sent: %s", l)
		}
	}
	if c := countLines(log, `"GET /v2/test/app/manifests/sha256-`+img.manifest.Digest.Encoded()); c != 1 {
		t.Errorf("second push: %d look-ups of the fallback tag, want 1:\n%s", c, strings.Join(log, "\n"))
	}
	if c := countLines(log, art.String()); c != 0 {
		t.Errorf("second push asked for the artifact %s:\n%s", art, strings.Join(log, "\n"))
	}
}

// TestIndexPush: imgfs index push of an image skopeo pushed streams each layer once and
// pushes the same artifact (byte for byte: same digest) as imgfs push of the image does;
// run again, it finds the indexes and fetches no layer.
func TestIndexPush(t *testing.T) {
	r := startRegistry(t)
	orig := filepath.Join(t.TempDir(), "orig")
	_, img := origImage(t, orig, r.host+"/test/app:1")
	r.skopeoPush(t, orig, "1", "test/sk:1")
	ref := r.host + "/test/sk:1"

	gets := len(r.blobGets(t))
	res := imgfs(t, orig, "index", "push", ref)
	if res.code != 0 {
		t.Fatalf("imgfs index push %s: exit %d\n%s%s\nregistry log:\n%s", ref, res.code, res.stdout, res.stderr, r.logTail())
	}
	for _, l := range img.layers {
		if c := countLines(r.blobGets(t)[gets:], "/blobs/"+l.Digest.String()); c != 1 {
			t.Errorf("layer %s fetched %d times, want once", l.Digest, c)
		}
		if !strings.Contains(res.stderr, l.Digest.Encoded()[:12]+": Indexed") {
			t.Errorf("imgfs index push stderr lacks layer %s Indexed:\n%s", l.Digest, res.stderr)
		}
	}
	sk := r.fallbackReferrers(t, "test/sk", img.manifest.Digest)
	if len(sk.Manifests) != 1 {
		t.Fatalf("test/sk: fallback tag lists %d artifacts, want 1", len(sk.Manifests))
	}
	if want := fmt.Sprintf("%s: layer indexes: %s size: %d\n", img.manifest.Digest, sk.Manifests[0].Digest, sk.Manifests[0].Size); res.stdout != want {
		t.Errorf("imgfs index push stdout:\n%s\nwant:\n%s", res.stdout, want)
	}

	imgfsOK(t, orig, "push", "-q", r.host+"/test/app:1")
	app := r.fallbackReferrers(t, "test/app", img.manifest.Digest)
	if len(app.Manifests) != 1 || app.Manifests[0].Digest != sk.Manifests[0].Digest {
		t.Errorf("imgfs push's artifact %+v, imgfs index push's %+v: want the same", app.Manifests, sk.Manifests)
	}

	gets = len(r.blobGets(t))
	res = imgfs(t, orig, "index", "push", ref)
	if want := img.manifest.Digest.String() + ": layer indexes already in the registry\n"; res.code != 0 || res.stdout != want {
		t.Errorf("second imgfs index push: exit %d, stdout %q, want %q\n%s", res.code, res.stdout, want, res.stderr)
	}
	for _, l := range img.layers {
		if c := countLines(r.blobGets(t)[gets:], "/blobs/"+l.Digest.String()); c != 0 {
			t.Errorf("second imgfs index push fetched layer %s", l.Digest)
		}
	}
}

// upload puts blob data into repo with a monolithic upload, as any tool may.
func (r *testRegistry) upload(t *testing.T, repo string, data []byte) ocispec.Descriptor {
	t.Helper()
	d := digest.FromBytes(data)
	resp, err := r.client.Post(r.url("/v2/"+repo+"/blobs/uploads/"), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := resp.Location()
	if err != nil {
		t.Fatalf("upload to %s: %s: %v", repo, resp.Status, err)
	}
	q := loc.Query()
	q.Set("digest", d.String())
	loc.RawQuery = q.Encode()
	req, _ := http.NewRequest(http.MethodPut, loc.String(), bytes.NewReader(data))
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err = r.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("upload of %s to %s: %s", d, repo, resp.Status)
	}
	return ocispec.Descriptor{Digest: d, Size: int64(len(data))}
}

// putManifest puts raw into repo under ref with media type mt.
func (r *testRegistry) putManifest(t *testing.T, repo, ref, mt string, raw []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, r.url("/v2/"+repo+"/manifests/"+ref), bytes.NewReader(raw))
	req.Header.Set("Content-Type", mt)
	resp, err := r.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT manifest %s of %s: %s %s", ref, repo, resp.Status, body)
	}
}

// sharedIndex is an index blob of an artifact, given as layer's.
type sharedIndex struct {
	layer digest.Digest
	data  []byte
}

// putIndexArtifact puts into repo, as any tool may, an artifact of layer indexes whose
// subject is image manifest subject, holding indexes, and lists it alone under the
// subject's fallback tag (distribution 2.8 has no referrers API). It returns the
// artifact's digest.
func (r *testRegistry) putIndexArtifact(t *testing.T, repo string, subject ocispec.Descriptor, indexes ...sharedIndex) digest.Digest {
	t.Helper()
	empty := r.upload(t, repo, []byte("{}"))
	var layers []ocispec.Descriptor
	for _, ix := range indexes {
		blob := r.upload(t, repo, ix.data)
		blob.MediaType = registry.IndexMediaType
		blob.Annotations = map[string]string{registry.LayerDigestAnnotation: ix.layer.String()}
		layers = append(layers, blob)
	}
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, ArtifactType: registry.IndexesArtifactType,
		Config:  ocispec.Descriptor{MediaType: ocispec.MediaTypeEmptyJSON, Digest: empty.Digest, Size: empty.Size},
		Layers:  layers,
		Subject: &ocispec.Descriptor{MediaType: subject.MediaType, Digest: subject.Digest, Size: subject.Size}}
	m.SchemaVersion = 2
	raw, _ := json.Marshal(m)
	ad := digest.FromBytes(raw)
	r.putManifest(t, repo, ad.String(), ocispec.MediaTypeImageManifest, raw)
	list := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{{
		MediaType: ocispec.MediaTypeImageManifest, ArtifactType: registry.IndexesArtifactType, Digest: ad, Size: int64(len(raw))}}}
	list.SchemaVersion = 2
	lraw, _ := json.Marshal(list)
	r.putManifest(t, repo, "sha256-"+subject.Digest.Encoded(), ocispec.MediaTypeImageIndex, lraw)
	return ad
}

// TestSharedIndexesForged: artifacts another tool put in the registry for the image, each
// listed under its fallback tag alone, are refused where an index does not name the
// layer's digest, size and diffID, or is damaged: another layer's index given as this
// layer's, an index whose diffID was changed, corrupt bytes. Each refusal says why.
func TestSharedIndexesForged(t *testing.T) {
	r := startRegistry(t)
	orig := filepath.Join(t.TempDir(), "orig")
	ref := r.host + "/test/app:1"
	s, img := origImage(t, orig, ref)
	r.skopeoPush(t, orig, "1", "test/app:1")
	indexes := storeIndexes(t, s, img)
	l0, l1 := img.layers[0].Digest, img.layers[1].Digest
	bin := func(ix *layerindex.Index) []byte {
		b, err := ix.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	changedDiffID := *indexes[l1]
	changedDiffID.DiffID = digest.FromString("forged")
	corrupt := bin(indexes[l1])
	corrupt[len(corrupt)/2] ^= 0x20

	for _, c := range []struct {
		what   string
		index  []byte // given as layer 1's
		reason string
	}{
		{"another layer's index", bin(indexes[l0]), "it indexes blob " + l0.String()},
		{"a changed diffID", bin(&changedDiffID), "it gives diffID " + changedDiffID.DiffID.String()},
		{"corrupt bytes", corrupt, "corrupt index"},
	} {
		t.Run(c.what, func(t *testing.T) {
			ad := r.putIndexArtifact(t, "test/app", img.manifest, sharedIndex{l1, c.index})

			got, err := sharedIndexes(t, r, "test/app", s, img)
			if len(got) != 0 {
				t.Errorf("accepted %d indexes", len(got))
			}
			var refused *registry.IndexRefused
			if !errors.As(err, &refused) || refused.Layer != l1 || refused.Artifact != ad || !strings.Contains(err.Error(), c.reason) {
				t.Errorf("error %v, want layer %s of artifact %s refused: %s", err, l1, ad, c.reason)
			}
		})
	}
}

// TestIndexPushFailures: imgfs index push of an image whose config gives a layer another
// diffID, or of a tag that is not there, fails in one line naming the registry and what is
// wrong, exit 1, and pushes nothing.
func TestIndexPushFailures(t *testing.T) {
	r := startRegistry(t)
	orig := filepath.Join(t.TempDir(), "orig")
	img := r.pushWrongDiffID(t, orig)

	for _, c := range []struct {
		ref  string
		want []string // in the one line
	}{
		{r.host + "/test/bad:x", []string{r.host, img.layers[1].Digest.String(), "diffID"}},
		{r.host + "/test/bad:nothing", []string{r.host, "tag nothing not found"}},
	} {
		before := len(r.accessLog(t))
		res := imgfs(t, orig, "index", "push", c.ref)
		lines := strings.Split(strings.TrimSpace(res.stderr), "\n")
		last := lines[len(lines)-1]
		ok := res.code == 1 && strings.HasPrefix(last, "imgfs: index push "+c.ref+": ")
		for _, w := range c.want {
			ok = ok && strings.Contains(last, w)
		}
		if !ok {
			t.Errorf("imgfs index push %s: exit %d, stderr:\n%s\nwant exit 1 and a last line naming %q", c.ref, res.code, res.stderr, c.want)
		}
		for _, l := range r.accessLog(t)[before:] {
			if strings.Contains(l, `"PUT `) || strings.Contains(l, `"POST `) {
				t.Errorf("a failed index push sent: %s", l)
			}
		}
	}
}
