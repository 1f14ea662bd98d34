package registry

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/distribution/reference"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/imgfs/imgfs/layerindex"
	"github.com/imgfs/imgfs/store"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// memRegistry is an in-memory registry of one repository (test/app) for the tests of
// shared indexes: blobs (HEAD, GET, monolithic uploads), manifests by tag or digest, and,
// with referrersAPI, the OCI 1.1 referrers API (a manifest with a subject is listed under
// it, and its PUT answered with OCI-Subject). Without it, /referrers/ is 404 as in
// distribution 2.8. It counts requests by method and path.
type memRegistry struct {
	referrersAPI    bool
	refuseArtifacts bool // answer a manifest with a subject 400 MANIFEST_INVALID, as some registries do
	// pageSize, if set, is how many referrers a page lists (the artifactType filter
	// ignored), the next page named by a Link header to nextHost's (if set) or its own.
	pageSize int
	nextHost string

	mu        sync.Mutex
	blobs     map[digest.Digest][]byte
	manifests map[string][]byte // by tag and by digest
	types     map[string]string
	referrers map[digest.Digest][]ocispec.Descriptor
	uploads   map[string][]byte
	requests  []string // "METHOD PATH"
}

func newMemRegistry(api bool) *memRegistry {
	return &memRegistry{referrersAPI: api, blobs: map[digest.Digest][]byte{}, manifests: map[string][]byte{},
		types: map[string]string{}, referrers: map[digest.Digest][]ocispec.Descriptor{}, uploads: map[string][]byte{}}
}

func (m *memRegistry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.requests = append(m.requests, r.Method+" "+r.URL.Path)
	const repo = "/v2/test/app/"
	p := r.URL.Path
	switch {
	case p == "/v2/":
	case strings.HasPrefix(p, repo+"blobs/uploads/"):
		id := strings.TrimPrefix(p, repo+"blobs/uploads/")
		switch r.Method {
		case http.MethodPost:
			id = fmt.Sprint(len(m.uploads) + 1)
			m.uploads[id] = nil
			w.Header().Set("Location", repo+"blobs/uploads/"+id)
			w.WriteHeader(http.StatusAccepted)
		case http.MethodPatch:
			b, _ := io.ReadAll(r.Body)
			m.uploads[id] = append(m.uploads[id], b...)
			w.Header().Set("Location", repo+"blobs/uploads/"+id)
			w.WriteHeader(http.StatusAccepted)
		case http.MethodPut:
			d := digest.Digest(r.URL.Query().Get("digest"))
			if digest.FromBytes(m.uploads[id]) != d {
				http.Error(w, `{"errors":[{"code":"DIGEST_INVALID"}]}`, http.StatusBadRequest)
				return
			}
			m.blobs[d] = m.uploads[id]
			w.WriteHeader(http.StatusCreated)
		}
	case strings.HasPrefix(p, repo+"blobs/"):
		b, ok := m.blobs[digest.Digest(strings.TrimPrefix(p, repo+"blobs/"))]
		if !ok {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"errors":[{"code":"BLOB_UNKNOWN"}]}`)
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(b)))
		if r.Method == http.MethodGet {
			w.Write(b)
		}
	case strings.HasPrefix(p, repo+"manifests/"):
		ref := strings.TrimPrefix(p, repo+"manifests/")
		if r.Method == http.MethodPut {
			raw, _ := io.ReadAll(r.Body)
			d := digest.FromBytes(raw)
			var mf ocispec.Manifest
			if json.Unmarshal(raw, &mf) == nil && mf.Subject != nil && m.refuseArtifacts {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusBadRequest)
				io.WriteString(w, `{"errors":[{"code":"MANIFEST_INVALID","message":"manifest invalid"}]}`)
				return
			}
			if mf.Subject != nil && m.referrersAPI {
				m.referrers[mf.Subject.Digest] = append(m.referrers[mf.Subject.Digest], ocispec.Descriptor{
					MediaType: mf.MediaType, ArtifactType: mf.ArtifactType, Digest: d, Size: int64(len(raw))})
				w.Header().Set("OCI-Subject", mf.Subject.Digest.String())
			}
			m.manifests[ref], m.manifests[d.String()] = raw, raw
			m.types[ref], m.types[d.String()] = r.Header.Get("Content-Type"), r.Header.Get("Content-Type")
			w.WriteHeader(http.StatusCreated)
			return
		}
		raw, ok := m.manifests[ref]
		if !ok {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"errors":[{"code":"MANIFEST_UNKNOWN"}]}`)
			return
		}
		w.Header().Set("Content-Type", m.types[ref])
		w.Write(raw)
	case strings.HasPrefix(p, repo+"referrers/") && m.referrersAPI:
		list := m.referrers[digest.Digest(strings.TrimPrefix(p, repo+"referrers/"))]
		if list == nil {
			list = []ocispec.Descriptor{}
		}
		if from, _ := strconv.Atoi(r.URL.Query().Get("from")); m.pageSize > 0 && from < len(list) {
			list = list[from:]
			if len(list) > m.pageSize {
				list = list[:m.pageSize]
				next := fmt.Sprintf("%s?from=%d", p, from+m.pageSize)
				if m.nextHost != "" {
					next = m.nextHost + next
				}
				w.Header().Add("Link", fmt.Sprintf(`<%s>; rel="next"`, next))
			}
		}
		ix := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: list}
		ix.SchemaVersion = 2
		w.Header().Set("Content-Type", ocispec.MediaTypeImageIndex)
		json.NewEncoder(w).Encode(ix)
	default:
		http.NotFound(w, r)
	}
}

// count returns how many requests since the nth had a method and path containing
// every one of parts, and how many there were in all.
func (m *memRegistry) count(n int, parts ...string) (match, all int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range m.requests[n:] {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(r, p)
		}
		if ok {
			match++
		}
	}
	return match, len(m.requests) - n
}

func (m *memRegistry) mark() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.requests)
}

// testLayer is a gzip tar of files (name, content), its descriptor and index.
func testLayer(t testing.TB, files ...string) (ocispec.Descriptor, []byte, *layerindex.Index) {
	t.Helper()
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	for i := 0; i+1 < len(files); i += 2 {
		tw.WriteHeader(&tar.Header{Name: files[i], Mode: 0o644, Size: int64(len(files[i+1])), Typeflag: tar.TypeReg})
		io.WriteString(tw, files[i+1])
	}
	tw.Close()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(tb.Bytes())
	zw.Close()
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromBytes(gz.Bytes()), Size: int64(gz.Len())}
	ix, err := layerindex.Build(bytes.NewReader(gz.Bytes()), layerindex.BuildOptions{Digest: desc.Digest, MediaType: desc.MediaType})
	if err != nil {
		t.Fatal(err)
	}
	return desc, gz.Bytes(), ix
}

// testImage is an image of two layers in a memRegistry: its manifest (pushed), the
// layers' descriptors and indexes, and the config's diffIDs.
type testImage struct {
	desc    ocispec.Descriptor
	m       ocispec.Manifest
	diffIDs []digest.Digest
	indexes map[digest.Digest]*layerindex.Index
}

func newTestImage(t *testing.T, reg *memRegistry) testImage {
	t.Helper()
	img := testImage{indexes: map[digest.Digest]*layerindex.Index{}}
	for _, files := range [][]string{{"etc/os-release", "ID=test\n", "bin/sh", "#!"}, {"app/main", strings.Repeat("x", 5000)}} {
		desc, blob, ix := testLayer(t, files...)
		reg.blobs[desc.Digest] = blob
		img.m.Layers = append(img.m.Layers, desc)
		img.diffIDs = append(img.diffIDs, ix.DiffID)
		img.indexes[desc.Digest] = ix
	}
	img.m.SchemaVersion, img.m.MediaType = 2, ocispec.MediaTypeImageManifest
	img.m.Config = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromString("{}"), Size: 2}
	raw, _ := json.Marshal(img.m)
	img.desc = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(raw), Size: int64(len(raw))}
	reg.manifests["1"], reg.manifests[img.desc.Digest.String()] = raw, raw
	reg.types["1"], reg.types[img.desc.Digest.String()] = ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageManifest
	return img
}

// memImage serves reg on a test server for the test's length and returns a Client, the
// repository test/app on it, and a test image in it.
func memImage(t *testing.T, reg *memRegistry) (*Client, name.Repository, testImage) {
	t.Helper()
	srv := httptest.NewServer(reg)
	t.Cleanup(srv.Close)
	c, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	repo, err := name.NewRepository(strings.TrimPrefix(srv.URL, "http://")+"/test/app", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return c, repo, newTestImage(t, reg)
}

// pushTestArtifact pushes img's indexes (those given) to the registry as imgfs push does.
func pushTestArtifact(t *testing.T, c *Client, repo name.Repository, img testImage, indexes map[digest.Digest]*layerindex.Index) ([]*indexArtifact, *indexArtifact) {
	t.Helper()
	a, err := newIndexArtifact(img.desc, img.m.Layers, indexes)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	rc, err := c.repoClient(ctx, repo, transport.PushScope)
	if err != nil {
		t.Fatal(err)
	}
	p := &blobPusher{rc: rc, locs: noLocations(), say: func(string, string) {}}
	sent, err := pushIndexArtifacts(ctx, p, []*indexArtifact{a}, 0)
	if err != nil {
		t.Fatal(err)
	}
	return sent, a
}

// Push sends the artifact through the referrers API where the registry has it, else the
// fallback tag; SharedIndexes finds it either way and returns indexes equal to those
// pushed; a second push finds it and sends nothing but the look-up.
func TestSharedIndexesRoundTrip(t *testing.T) {
	for _, api := range []bool{true, false} {
		t.Run(fmt.Sprintf("referrersAPI=%v", api), func(t *testing.T) {
			reg := newMemRegistry(api)
			c, repo, img := memImage(t, reg)

			sent, a := pushTestArtifact(t, c, repo, img, img.indexes)
			if len(sent) != 1 {
				t.Fatalf("first push sent %d artifacts, want 1", len(sent))
			}
			tag := "/manifests/" + fallbackTag(img.desc.Digest)
			if n, _ := reg.count(0, "PUT", tag); (n == 1) == api {
				t.Errorf("referrers API %v: %d PUTs of the fallback tag", api, n)
			}
			if n, _ := reg.count(0, "PUT", "/manifests/"+a.desc.Digest.String()); n != 1 {
				t.Errorf("%d PUTs of the artifact by digest, want 1", n)
			}

			got, err := c.SharedIndexes(context.Background(), repo, img.desc, img.m, img.diffIDs)
			if err != nil {
				t.Fatalf("SharedIndexes: %v", err)
			}
			if len(got) != 2 {
				t.Fatalf("SharedIndexes: %d indexes, want 2", len(got))
			}
			for d, want := range img.indexes {
				if !reflect.DeepEqual(got[d], want) {
					t.Errorf("layer %s: index differs from the one pushed", d)
				}
			}

			before := reg.mark()
			sent, _ = pushTestArtifact(t, c, repo, img, img.indexes)
			pings, _ := reg.count(before, "GET /v2/") // a new client's ping, and every GET
			lookups, all := reg.count(before, "GET /v2/test/app/")
			if all -= pings - lookups; len(sent) != 0 || lookups != all || (api && all != 1) || (!api && all != 2) {
				t.Errorf("second push: sent %d artifacts, %d requests (%d GETs), want none and only the look-up:\n%s",
					len(sent), all, lookups, strings.Join(reg.requests[before:], "\n"))
			}
		})
	}
}

// A registry with the referrers API that lists them in pages (and lists every referrer,
// not only ours) has ours found on a later page, through the Link headers; a Link to
// another host is not followed.
func TestSharedIndexesPaged(t *testing.T) {
	other := newMemRegistry(true)
	otherSrv := httptest.NewServer(other)
	defer otherSrv.Close()
	reg := newMemRegistry(true)
	c, repo, img := memImage(t, reg)
	pushTestArtifact(t, c, repo, img, img.indexes)
	// Five signatures listed before ours: pages of two put it on the third.
	var sigs []ocispec.Descriptor
	for i := range 5 {
		sigs = append(sigs, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, ArtifactType: "application/vnd.dev.cosign.artifact.sig.v1+json",
			Digest: digest.FromString(fmt.Sprint("signature ", i)), Size: 100})
	}
	reg.mu.Lock()
	reg.referrers[img.desc.Digest] = append(sigs, reg.referrers[img.desc.Digest]...)
	reg.pageSize = 2
	reg.mu.Unlock()

	before := reg.mark()
	got, err := c.SharedIndexes(context.Background(), repo, img.desc, img.m, img.diffIDs)
	if err != nil || len(got) != 2 {
		t.Fatalf("SharedIndexes: %d indexes, %v; want 2", len(got), err)
	}
	if n, _ := reg.count(before, "GET", "/referrers/"); n != 3 {
		t.Errorf("%d pages of referrers asked for, want 3", n)
	}

	reg.mu.Lock()
	reg.nextHost = otherSrv.URL
	reg.mu.Unlock()
	got, err = c.SharedIndexes(context.Background(), repo, img.desc, img.m, img.diffIDs)
	if err != nil || len(got) != 0 {
		t.Errorf("a Link to another host: %d indexes, %v; want none and no error", len(got), err)
	}
	if _, all := other.count(0); all != 0 {
		t.Errorf("the other host was asked %d times", all)
	}
}

// Indexes that do not name the layer's digest, size and diffID, or are damaged, are
// refused, each with its reason; the others of the artifact are used.
func TestSharedIndexesRefused(t *testing.T) {
	reg := newMemRegistry(false)
	c, repo, img := memImage(t, reg)
	l0, l1 := img.m.Layers[0].Digest, img.m.Layers[1].Digest
	ctx := context.Background()

	// Layer 0's index given as layer 1's too.
	pushTestArtifact(t, c, repo, img, map[digest.Digest]*layerindex.Index{l0: img.indexes[l0], l1: img.indexes[l0]})
	got, err := c.SharedIndexes(ctx, repo, img.desc, img.m, img.diffIDs)
	var ref *IndexRefused
	if !errors.As(err, &ref) || ref.Layer != l1 || !strings.Contains(err.Error(), "it indexes blob "+l0.String()) {
		t.Errorf("another layer's index: error %v, want layer %s refused as indexing %s", err, l1, l0)
	}
	if got[l0] == nil || got[l1] != nil {
		t.Errorf("another layer's index: got %d indexes, want layer 0's only", len(got))
	}

	// A changed diffID in the config: both refused.
	bad := []digest.Digest{digest.FromString("a"), img.diffIDs[1]}
	got, err = c.SharedIndexes(ctx, repo, img.desc, img.m, bad)
	if got[l0] != nil || err == nil || !strings.Contains(err.Error(), "it gives diffID "+img.diffIDs[0].String()) {
		t.Errorf("changed diffID: got %v, error %v", got, err)
	}

	// Corrupt bytes: an index blob with a byte changed, pushed under its own digest.
	data, _ := img.indexes[l1].MarshalBinary()
	data[len(data)/2] ^= 0x40
	if _, err := checkSharedIndex(data, img.m.Layers[1], img.diffIDs[1]); !errors.Is(err, layerindex.ErrCorruptIndex) {
		t.Errorf("corrupt index: %v, want ErrCorruptIndex", err)
	}

	// A size that differs from the manifest's.
	m := img.m
	m.Layers = append([]ocispec.Descriptor{}, img.m.Layers...)
	m.Layers[0].Size++
	if _, err := checkSharedIndex(mustMarshal(t, img.indexes[l0]), m.Layers[0], img.diffIDs[0]); err == nil || !strings.Contains(err.Error(), "the manifest says") {
		t.Errorf("another size: %v", err)
	}

	// An artifact whose subject is another manifest, listed under this one.
	other := img.desc
	other.Digest = digest.FromString("other")
	a, _ := newIndexArtifact(other, img.m.Layers, img.indexes)
	if _, err := parseIndexArtifact(a.raw, img.desc); err == nil || !strings.Contains(err.Error(), "subject") {
		t.Errorf("another subject: %v", err)
	}
}

func mustMarshal(t *testing.T, ix *layerindex.Index) []byte {
	t.Helper()
	b, err := ix.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzSharedIndexParsing: a referrers list, an artifact manifest and an index blob from a
// registry never panic, and what is accepted names the layer it was asked for.
func FuzzSharedIndexParsing(f *testing.F) {
	desc, _, ix := testLayer(f, "a", "b")
	data, err := ix.MarshalBinary()
	if err != nil {
		f.Fatal(err)
	}
	subject := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("m"), Size: 1}
	a, err := newIndexArtifact(subject, []ocispec.Descriptor{desc}, map[digest.Digest]*layerindex.Index{desc.Digest: ix})
	if err != nil {
		f.Fatal(err)
	}
	li := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{a.desc}}
	li.SchemaVersion = 2
	list, _ := json.Marshal(li)
	f.Add(list, a.raw, data)
	f.Add([]byte(`{"schemaVersion":2,"manifests":null}`), []byte(`{"schemaVersion":2,"subject":null}`), []byte("imgfsidx"))
	f.Fuzz(func(t *testing.T, list, artifact, index []byte) {
		if ix, err := parseReferrers(list); err == nil {
			for _, d := range ofIndexesType(ix.Manifests) {
				if d.ArtifactType != IndexesArtifactType || d.Digest.Validate() != nil {
					t.Fatalf("kept %+v", d)
				}
			}
		}
		if layers, err := parseIndexArtifact(artifact, subject); err == nil {
			for _, l := range layers {
				if l.MediaType != IndexMediaType || digest.Digest(l.Annotations[LayerDigestAnnotation]).Validate() != nil {
					t.Fatalf("kept %+v", l)
				}
			}
		}
		if got, err := checkSharedIndex(index, desc, ix.DiffID); err == nil {
			if got.BlobDigest != desc.Digest || got.BlobSize != desc.Size || got.DiffID != ix.DiffID {
				t.Fatal("accepted an index of another layer")
			}
		}
	})
}

// Push with a store: the image goes up, then its artifact, through the referrers API; a
// registry that refuses artifacts still takes the image, and the push warns once why the
// indexes were not shared instead of failing.
func TestPushSharesIndexes(t *testing.T) {
	for _, refuse := range []bool{false, true} {
		t.Run(fmt.Sprintf("refuseArtifacts=%v", refuse), func(t *testing.T) {
			reg := newMemRegistry(true)
			reg.refuseArtifacts = refuse
			srv := httptest.NewServer(reg)
			defer srv.Close()
			s, err := store.Open(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			desc, blob, ix := testLayer(t, "etc/hostname", "box\n")
			if _, err := s.WriteLayer(bytes.NewReader(blob), desc); err != nil {
				t.Fatal(err)
			}
			put := func(mt string, v any) ocispec.Descriptor {
				raw, _ := json.Marshal(v)
				d, n, err := s.WriteBlob(bytes.NewReader(raw), digest.FromBytes(raw))
				if err != nil {
					t.Fatal(err)
				}
				return ocispec.Descriptor{MediaType: mt, Digest: d, Size: n}
			}
			cfg := put(ocispec.MediaTypeImageConfig, ocispec.Image{Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"},
				RootFS: ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{ix.DiffID}}})
			m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: cfg, Layers: []ocispec.Descriptor{desc}}
			m.SchemaVersion = 2
			md := put(ocispec.MediaTypeImageManifest, m)
			ref := strings.TrimPrefix(srv.URL, "http://") + "/test/app:1"
			named, err := reference.ParseNormalizedNamed(ref)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Tag(named, md); err != nil {
				t.Fatal(err)
			}
			c, err := New(Options{})
			if err != nil {
				t.Fatal(err)
			}
			var warnings []string
			res, err := c.Push(context.Background(), s, ref, PushOptions{Warn: func(msg string) { warnings = append(warnings, msg) }})
			if err != nil || len(res) != 1 || res[0].Digest != md.Digest {
				t.Fatalf("Push: %v, %+v", err, res)
			}
			if _, ok := reg.manifests["1"]; !ok {
				t.Errorf("the image's manifest did not go up")
			}
			listed := len(reg.referrers[md.Digest])
			if refuse {
				if len(warnings) != 1 || !strings.Contains(warnings[0], "layer indexes not shared") || !strings.Contains(warnings[0], "manifest invalid") {
					t.Errorf("warnings %q, want one saying the indexes were not shared and the registry's reason", warnings)
				}
				return
			}
			if len(warnings) != 0 || listed != 1 {
				t.Errorf("warnings %q, %d referrers listed; want none and 1", warnings, listed)
			}
			if n, _ := reg.count(0, "PUT", "/manifests/"+fallbackTag(md.Digest)); n != 0 {
				t.Errorf("the fallback tag was written on a registry with the referrers API")
			}
			repo, _ := name.NewRepository(strings.TrimPrefix(srv.URL, "http://")+"/test/app", name.Insecure)
			got, err := c.SharedIndexes(context.Background(), repo, md, m, []digest.Digest{ix.DiffID})
			if err != nil || !reflect.DeepEqual(got[desc.Digest], ix) {
				t.Errorf("SharedIndexes after Push: %v; index equal to the store's: %v", err, reflect.DeepEqual(got[desc.Digest], ix))
			}
		})
	}
}

func TestIsFallbackTag(t *testing.T) {
	d := digest.FromString("x")
	for tag, want := range map[string]bool{
		fallbackTag(d): true, "sha256-" + d.Encoded()[:63]: false, "latest": false, "sha256-": false,
		"sha256-" + strings.ToUpper(d.Encoded()): false, "1.0-" + d.Encoded(): false,
	} {
		if got := IsFallbackTag(tag); got != want {
			t.Errorf("IsFallbackTag(%q) = %v, want %v", tag, got, want)
		}
	}
}

func TestNextPage(t *testing.T) {
	base, _ := url.Parse("http://reg:5000/v2/test/app/referrers/sha256:ab?artifactType=x")
	for _, c := range []struct {
		links []string
		want  string
	}{
		{[]string{`</v2/test/app/referrers/sha256:ab?last=b>; rel="next"`}, "http://reg:5000/v2/test/app/referrers/sha256:ab?last=b"},
		{[]string{`<http://reg:5000/v2/x?n=2>; rel=next`}, "http://reg:5000/v2/x?n=2"},
		{[]string{`</v2/prev>; rel="prev", </v2/next>; rel="next"`}, "http://reg:5000/v2/next"},
		{[]string{`</v2/prev>; rel="prev"`, `</v2/next>;rel="prev next"`}, "http://reg:5000/v2/next"},
		{[]string{`<http://elsewhere:5000/v2/x>; rel="next"`}, ""},
		{[]string{`<https://reg:5000/v2/x>; rel="next"`}, ""},
		{[]string{`</v2/x>`}, ""},
		{[]string{`/v2/x; rel="next"`}, ""},
		{nil, ""},
	} {
		if got := nextPage(base, c.links); got != c.want {
			t.Errorf("Link %q: next %q, want %q", c.links, got, c.want)
		}
	}
}
