package store

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"github.com/imgfs/imgfs/internal/testimg"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imgfs/imgfs/layerindex"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// tarEntry is one member of a tar made by makeTar.
type tarEntry struct {
	name, link string
	typ        byte
	mode       int64
	body       []byte
}

func makeTar(t testing.TB, entries []tarEntry) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: e.mode,
			Size: int64(len(e.body)), ModTime: time.Unix(1700000000, 0), Format: tar.FormatPAX}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func gzipBytes(t testing.TB, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write(data)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// layerTwoMarker is in the second (uncompressed) layer of the test image, so a test can
// find that layer's bytes in an archive.
const layerTwoMarker = "layer two was here: flip me"

// testImg is an image written into an OCI layout directory by writeTestImage.
type testImg struct {
	Manifest ocispec.Descriptor
	Config   ocispec.Descriptor
	Layers   []ocispec.Descriptor
	DiffIDs  []digest.Digest
}

func writeLayoutJSON(t testing.TB, dir, mediaType string, v any) ocispec.Descriptor {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return testimg.WriteBlob(t, dir, mediaType, data)
}

// writeTestImage writes an image of two layers into the OCI layout at dir (blobs only): a
// gzip layer with files, directories, a symlink and a hard link, and an uncompressed one
// holding layerTwoMarker, a whiteout and big (if any) as data/big.
func writeTestImage(t testing.TB, dir string, p ocispec.Platform, big []byte) testImg {
	t.Helper()
	tar1 := makeTar(t, []tarEntry{
		{name: "etc/", typ: tar.TypeDir, mode: 0o755},
		{name: "etc/hostname", typ: tar.TypeReg, mode: 0o644, body: []byte("imgfs\n")},
		{name: "etc/platform", typ: tar.TypeReg, mode: 0o644, body: []byte(platformString(p) + "\n")},
		{name: "usr/", typ: tar.TypeDir, mode: 0o755},
		{name: "usr/bin/", typ: tar.TypeDir, mode: 0o755},
		{name: "usr/bin/tool", typ: tar.TypeReg, mode: 0o755, body: []byte("#!/bin/sh\necho tool\n")},
		{name: "usr/bin/tool2", link: "usr/bin/tool", typ: tar.TypeLink, mode: 0o755},
		{name: "bin", link: "usr/bin", typ: tar.TypeSymlink, mode: 0o777},
	})
	tar2 := makeTar(t, []tarEntry{
		{name: "etc/hostname", typ: tar.TypeReg, mode: 0o644, body: []byte(layerTwoMarker + "\n")},
		{name: "usr/bin/.wh.tool2", typ: tar.TypeReg, mode: 0o644},
		{name: "data/", typ: tar.TypeDir, mode: 0o755},
		{name: "data/big", typ: tar.TypeReg, mode: 0o644, body: big},
	})
	img := testImg{DiffIDs: []digest.Digest{digest.FromBytes(tar1), digest.FromBytes(tar2)}}
	img.Layers = []ocispec.Descriptor{
		testimg.WriteBlob(t, dir, ocispec.MediaTypeImageLayerGzip, gzipBytes(t, tar1)),
		testimg.WriteBlob(t, dir, ocispec.MediaTypeImageLayer, tar2),
	}
	created := time.Unix(1700000000, 0).UTC()
	cfg := ocispec.Image{
		Created:  &created,
		Platform: p,
		Config:   ocispec.ImageConfig{Cmd: []string{"/bin/sh"}, Env: []string{"PATH=/usr/bin"}},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: img.DiffIDs},
		History:  []ocispec.History{{Created: &created, CreatedBy: "layer one"}, {Created: &created, CreatedBy: "layer two"}},
	}
	img.Config = writeLayoutJSON(t, dir, ocispec.MediaTypeImageConfig, cfg)
	m := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		Config: img.Config, Layers: img.Layers}
	img.Manifest = writeLayoutJSON(t, dir, ocispec.MediaTypeImageManifest, m)
	return img
}

// writeLayoutIndex writes oci-layout and index.json of the layout at dir, each descriptor
// named ref.name as skopeo's oci:DIR:name does (refs[i], none if "").
func writeLayoutIndex(t testing.TB, dir string, descs []ocispec.Descriptor, refs []string) {
	t.Helper()
	ix := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex}
	for i, d := range descs {
		if refs[i] != "" {
			d.Annotations = map[string]string{ocispec.AnnotationRefName: refs[i]}
		}
		ix.Manifests = append(ix.Manifests, d)
	}
	data, _ := json.Marshal(ix)
	if err := os.WriteFile(filepath.Join(dir, "index.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
		t.Fatal(err)
	}
}

// testLayout writes the test image as an OCI layout named img:1 (skopeo's oci:L:img:1).
func testLayout(t testing.TB, big []byte) (string, testImg) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "L")
	img := writeTestImage(t, dir, hostPlatformSpec(), big)
	writeLayoutIndex(t, dir, []ocispec.Descriptor{img.Manifest}, []string{"img:1"})
	return dir, img
}

func hostPlatformSpec() ocispec.Platform {
	return ocispec.Platform{OS: hostPlatform.OS, Architecture: hostPlatform.Architecture, Variant: hostPlatform.Variant}
}

// dockerArchive makes A.tar, the pre-25 docker save layout, with skopeo.
func dockerArchive(t *testing.T, layout, name string) string {
	t.Helper()
	a := filepath.Join(t.TempDir(), "A.tar")
	skopeo(t, "copy", "oci:"+layout+":img:1", "docker-archive:"+a+":"+name)
	return a
}

// ociArchive makes B.tar, an oci-archive, with skopeo.
func ociArchive(t *testing.T, layout, name string) string {
	t.Helper()
	b := filepath.Join(t.TempDir(), "B.tar")
	skopeo(t, "copy", "oci:"+layout+":img:1", "oci-archive:"+b+":"+name)
	return b
}

// tarMembers lists an archive's members with the offset of their data.
type tarMember struct {
	hdr  *tar.Header
	off  int64
	body []byte
}

func readTar(t testing.TB, data []byte) []tarMember {
	t.Helper()
	cr := &layerindex.CountingReader{R: bytes.NewReader(data)}
	tr := tar.NewReader(cr)
	var ms []tarMember
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return ms
		}
		if err != nil {
			t.Fatal(err)
		}
		off := cr.N // archive/tar reads no further than the header
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		ms = append(ms, tarMember{h, off, body})
	}
}

// rewriteTar rewrites an archive member by member; edit may change a member or return a
// nil header to drop it.
func rewriteTar(t testing.TB, data []byte, edit func(h *tar.Header, body []byte) (*tar.Header, []byte)) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, m := range readTar(t, data) {
		h, body := edit(m.hdr, m.body)
		if h == nil {
			continue
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write(body)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func memberBody(t testing.TB, data []byte, name string) []byte {
	t.Helper()
	for _, m := range readTar(t, data) {
		if m.hdr.Name == name {
			return m.body
		}
	}
	t.Fatalf("no member %s", name)
	return nil
}

func readFile(t testing.TB, p string) []byte {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func writeFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// recProgress records what Progress hears.
type recProgress struct {
	mu      sync.Mutex
	total   map[string]int64
	added   map[string]int64
	what    map[string]string
	done    map[string]error
	unknown []string // Add or Done without Start
}

func newRecProgress() *recProgress {
	return &recProgress{total: map[string]int64{}, added: map[string]int64{}, what: map[string]string{}, done: map[string]error{}}
}

func (r *recProgress) Start(id, what string, total int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.total[id], r.what[id] = total, what
}

func (r *recProgress) Add(id string, n int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.total[id]; !ok {
		r.unknown = append(r.unknown, id)
	}
	r.added[id] += n
}

func (r *recProgress) Done(id string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.total[id]; !ok {
		r.unknown = append(r.unknown, id)
	}
	r.done[id] = err
}

func (r *recProgress) check(t *testing.T) {
	t.Helper()
	if len(r.unknown) > 0 {
		t.Errorf("progress: Add/Done before Start: %v", r.unknown)
	}
	for id, total := range r.total {
		err, ok := r.done[id]
		if !ok || err != nil {
			t.Errorf("progress: %s: done %v, %v", id, ok, err)
		}
		if total >= 0 && r.added[id] != total {
			t.Errorf("progress: %s: %d bytes added, total %d", id, r.added[id], total)
		}
	}
}

// checkImported checks an imported test image: its ID, layers indexed at import, diffIDs.
func checkImported(t *testing.T, s *Store, ref string, want testImg) Image {
	t.Helper()
	img, err := s.Resolve(ref)
	if err != nil {
		t.Fatal(err)
	}
	if img.ID != want.Config.Digest {
		t.Fatalf("%s: ID %s, want %s", ref, img.ID, want.Config.Digest)
	}
	if len(img.Manifest.Layers) != len(want.DiffIDs) {
		t.Fatalf("%s: %d layers", ref, len(img.Manifest.Layers))
	}
	for i, l := range img.Manifest.Layers {
		// Indexed at import, in the same pass: the index is on disk already.
		data, err := os.ReadFile(s.layerIndexPath(l.Digest))
		if err != nil {
			t.Fatalf("%s: layer %d not indexed at import: %v", ref, i, err)
		}
		var ix layerindex.Index
		if err := ix.UnmarshalBinary(data); err != nil {
			t.Fatal(err)
		}
		if ix.DiffID != want.DiffIDs[i] || ix.BlobDigest != l.Digest || ix.BlobSize != l.Size {
			t.Fatalf("%s: layer %d: index %s/%s/%d, want diffID %s, blob %s/%d", ref, i, ix.DiffID, ix.BlobDigest, ix.BlobSize,
				want.DiffIDs[i], l.Digest, l.Size)
		}
		if l.MediaType != layerMediaType(ix.Compression) && !isTarLayerType(l.MediaType) {
			t.Fatalf("%s: layer %d: media type %s, compression %s", ref, i, l.MediaType, ix.Compression)
		}
	}
	ix0, err := s.LayerIndex(img.Manifest.Layers[0])
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ix0.TOC.All() {
		names = append(names, fmt.Sprintf("%s %c %s", e.Name, e.Type, e.Linkname))
	}
	for _, w := range []string{"bin 2 usr/bin", "usr/bin/tool2 1 usr/bin/tool", "usr/bin/ 5 "} {
		if !slices.Contains(names, w) {
			t.Fatalf("%s: layer 0 lacks %q: %q", ref, w, names)
		}
	}
	return img
}

func TestImportDockerArchive(t *testing.T) {
	layout, want := testLayout(t, nil)
	a := dockerArchive(t, layout, "example.com/app:1")
	data := readFile(t, a)
	// It is the layout of docker save up to Docker 24 (no OCI layout inside).
	var mj []dockerImage
	if err := json.Unmarshal(memberBody(t, data, "manifest.json"), &mj); err != nil || len(mj) != 1 {
		t.Fatalf("manifest.json: %v", err)
	}
	for _, m := range readTar(t, data) {
		if m.hdr.Name == "index.json" || m.hdr.Name == "oci-layout" {
			t.Fatalf("skopeo wrote a Docker 25 layout: %s", m.hdr.Name)
		}
	}

	s := openStore(t)
	rec := newRecProgress()
	imgs, err := s.Import(a, ImportOptions{Progress: rec})
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 1 || imgs[0].Name.String() != "example.com/app:1" || imgs[0].ID != want.Config.Digest {
		t.Fatalf("Import = %+v", imgs)
	}
	img := checkImported(t, s, "example.com/app:1", want)
	// The image ID is the digest of the config in the archive, kept byte for byte.
	if cfgHex := strings.TrimSuffix(mj[0].Config, ".json"); img.ID.Encoded() != cfgHex {
		t.Fatalf("ID %s, archive's config %s", img.ID, mj[0].Config)
	}
	if img.Manifest.Config.MediaType != ocispec.MediaTypeImageConfig || img.Descriptor.MediaType != ocispec.MediaTypeImageManifest {
		t.Fatalf("media types %s %s", img.Manifest.Config.MediaType, img.Descriptor.MediaType)
	}
	rec.check(t)
	if len(rec.total) < 3 {
		t.Fatalf("progress heard of %d blobs", len(rec.total))
	}
	assertTmpEmpty(t, s)

	// Again: nothing changes.
	before := readFile(t, filepath.Join(s.Root(), "index.json"))
	if _, err := s.Import(a, ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	if after := readFile(t, filepath.Join(s.Root(), "index.json")); !bytes.Equal(before, after) {
		t.Fatalf("index.json changed on re-import:\n%s\n%s", before, after)
	}

	// --name adds a name to a single image.
	if imgs, err := s.Import(a, ImportOptions{Name: mustName(t, "ghcr.io/acme/named")}); err != nil || len(imgs) != 2 {
		t.Fatalf("Import --name = %v, %v", imgs, err)
	}
	if img2, err := s.Resolve("ghcr.io/acme/named:latest"); err != nil || img2.Descriptor.Digest != img.Descriptor.Digest {
		t.Fatalf("--name: %v", err)
	}
}

// The layout Docker <= 24 writes: <id>/layer.tar, one a symlink to another image's layer,
// several images, manifest.json last.
func TestImportDocker24Layout(t *testing.T) {
	layout, want := testLayout(t, nil)
	data := readFile(t, dockerArchive(t, layout, "example.com/app:1"))
	var mj []map[string]any
	json.Unmarshal(memberBody(t, data, "manifest.json"), &mj)
	layers := mj[0]["Layers"].([]any)
	// <hex>.tar → <n>/layer.tar, and a second image whose first layer is a symlink to it.
	ids := map[string]string{}
	for i, l := range layers {
		ids[l.(string)] = fmt.Sprintf("%064x", i+1)
		layers[i] = ids[l.(string)] + "/layer.tar"
	}
	shared := fmt.Sprintf("%064x", 99)
	second := map[string]any{"Config": mj[0]["Config"], "RepoTags": []string{"example.com/app:shared"},
		"Layers": []any{shared + "/layer.tar", layers[1]}}
	mj = append(mj, second)
	newMJ, _ := json.Marshal(mj)
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	for _, m := range readTar(t, data) {
		h := m.hdr
		switch {
		case ids[h.Name] != "":
			tw.WriteHeader(&tar.Header{Name: ids[h.Name] + "/", Typeflag: tar.TypeDir, Mode: 0o755})
			h.Name = ids[h.Name] + "/layer.tar"
		case h.Name == "manifest.json", h.Typeflag == tar.TypeSymlink:
			continue
		}
		tw.WriteHeader(h)
		tw.Write(m.body)
	}
	tw.WriteHeader(&tar.Header{Name: shared + "/layer.tar", Typeflag: tar.TypeSymlink, Linkname: "../" + fmt.Sprintf("%064x", 1) + "/layer.tar"})
	tw.WriteHeader(&tar.Header{Name: "manifest.json", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(newMJ))})
	tw.Write(newMJ)
	tw.Close()

	s := openStore(t)
	imgs, err := s.ImportReader(bytes.NewReader(out.Bytes()), ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 2 {
		t.Fatalf("%d images", len(imgs))
	}
	a := checkImported(t, s, "example.com/app:1", want)
	b := checkImported(t, s, "example.com/app:shared", want)
	if a.Descriptor.Digest != b.Descriptor.Digest {
		t.Fatal("same image, two manifests")
	}
	// --name with several images: refused.
	if _, err := s.ImportReader(bytes.NewReader(out.Bytes()), ImportOptions{Name: mustName(t, "x")}); err == nil ||
		!strings.Contains(err.Error(), "2 images") {
		t.Fatalf("--name with 2 images: %v", err)
	}
}

func TestImportGzippedDockerArchive(t *testing.T) {
	layout, want := testLayout(t, nil)
	a := dockerArchive(t, layout, "example.com/app:1")
	gz := gzipBytes(t, readFile(t, a))
	agz := writeFile(t, t.TempDir(), "A.tar.gz", gz)

	var manifests []digest.Digest
	for _, via := range []string{"reader", "path", "stdin"} {
		s := openStore(t)
		var err error
		switch via {
		case "reader":
			_, err = s.ImportReader(bytes.NewReader(gz), ImportOptions{})
		case "path":
			_, err = s.Import(agz, ImportOptions{})
		case "stdin":
			f, ferr := os.Open(agz)
			if ferr != nil {
				t.Fatal(ferr)
			}
			stdin := os.Stdin
			os.Stdin = f
			_, err = s.Import("-", ImportOptions{})
			os.Stdin = stdin
			f.Close()
		}
		if err != nil {
			t.Fatalf("%s: %v", via, err)
		}
		img := checkImported(t, s, "example.com/app:1", want)
		manifests = append(manifests, img.Descriptor.Digest)
	}
	if manifests[0] != manifests[1] || manifests[0] != manifests[2] {
		t.Fatalf("manifests differ: %v", manifests)
	}
}

func TestImportHelloWorldV25(t *testing.T) {
	const (
		id       = "sha256:ee301c921b8aadc002973b2e0c3da17d701dcd994b606769a7e6eaa100b81d44"
		manifest = "sha256:411caf340c828657e915a83ed561a79d2b8150dabad4dc079d881cbfe6f86afe"
		layer    = "sha256:12660636fe55438cc3ae7424da7ac56e845cdb52493ff9cf949c47a7f57f8b43"
	)
	fixture := filepath.Join("..", "..", "shared", "fixtures", "hello-world-v25.tar")
	s := openStore(t)
	imgs, err := s.Import(fixture, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 1 || imgs[0].Name != nil || imgs[0].ID != id {
		t.Fatalf("Import = %+v", imgs)
	}
	img, err := s.Resolve("ee301c921b8a")
	if err != nil {
		t.Fatal(err)
	}
	// Docker's own manifest is kept (it fits), so the manifest digest is docker's too.
	if img.ID != id || img.Descriptor.Digest != manifest || len(img.Manifest.Layers) != 1 ||
		img.Manifest.Layers[0].Digest != layer || img.Manifest.Layers[0].MediaType != ocispec.MediaTypeImageLayer {
		t.Fatalf("image %s manifest %s layers %v", img.ID, img.Descriptor.Digest, img.Manifest.Layers)
	}
	ix, err := s.LayerIndex(img.Manifest.Layers[0])
	if err != nil || ix.DiffID != layer || ix.TOC.Len() != 1 || ix.TOC.Name(0) != "hello" {
		t.Fatalf("layer index: %v", err)
	}
	// Untagged, once however often imported.
	if _, err := s.Import(fixture, ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	if ix := readIndexJSON(t, s); len(ix.Manifests) != 1 || ix.Manifests[0].Annotations != nil {
		t.Fatalf("index.json: %+v", ix.Manifests)
	}
	// --name names it.
	if _, err := s.Import(fixture, ImportOptions{Name: mustName(t, "hello-world")}); err != nil {
		t.Fatal(err)
	}
	if img, err := s.Resolve("hello-world"); err != nil || img.ID != id {
		t.Fatalf("hello-world: %v", err)
	}
}

func TestImportOCI(t *testing.T) {
	layout, want := testLayout(t, nil)
	b := ociArchive(t, layout, "other/app:2")

	s := openStore(t)
	if _, err := s.Import(b, ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	img := checkImported(t, s, "other/app:2", want)
	// skopeo rewrites the manifest (not the config): the ID is what must stay.
	if img.Name.String() != "docker.io/other/app:2" {
		t.Fatalf("oci-archive: %v %s", img.Name, img.Descriptor.Digest)
	}

	// The layout directory itself: ref.name img:1 is a full name.
	rec := newRecProgress()
	imgs, err := s.Import(layout, ImportOptions{Progress: rec})
	if err != nil {
		t.Fatal(err)
	}
	rec.check(t)
	if len(imgs) != 1 || imgs[0].Name.String() != "docker.io/library/img:1" {
		t.Fatalf("layout: %+v", imgs)
	}
	checkImported(t, s, "img:1", want)
	if rec.what[want.Layers[0].Digest.String()] != "layer" || rec.total[want.Manifest.Digest.String()] != want.Manifest.Size {
		t.Fatalf("progress: %v %v", rec.what, rec.total)
	}

	// A bare tag: untagged, or --name with that tag.
	writeLayoutIndex(t, layout, []ocispec.Descriptor{want.Manifest}, []string{"v3"})
	s2 := openStore(t)
	imgs, err = s2.Import(layout, ImportOptions{})
	if err != nil || len(imgs) != 1 || imgs[0].Name != nil {
		t.Fatalf("bare tag: %+v, %v", imgs, err)
	}
	if _, err := s2.Resolve(want.Config.Digest.Encoded()[:12]); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Import(layout, ImportOptions{Name: mustName(t, "ghcr.io/acme/app")}); err != nil {
		t.Fatal(err)
	}
	checkImported(t, s2, "ghcr.io/acme/app:v3", want)
	if _, err := s2.Import(layout, ImportOptions{Name: mustName(t, "ghcr.io/acme/app:pinned")}); err != nil {
		t.Fatal(err)
	}
	checkImported(t, s2, "ghcr.io/acme/app:pinned", want)
}

// An image index of two platforms, as an oci-archive of our own, zstd-compressed: every
// platform is imported, the host's resolves.
func TestImportOCIIndexAllPlatforms(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "L")
	host := writeTestImage(t, dir, hostPlatformSpec(), nil)
	other := writeTestImage(t, dir, otherPlatform(), nil)
	idx := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{withPlatform(other.Manifest, otherPlatform()), withPlatform(host.Manifest, hostPlatform)}}
	idxDesc := writeLayoutJSON(t, dir, ocispec.MediaTypeImageIndex, idx)
	writeLayoutIndex(t, dir, []ocispec.Descriptor{idxDesc}, []string{"ghcr.io/acme/multi:1"})

	var zb bytes.Buffer
	zw, _ := zstd.NewWriter(&zb)
	zw.Write(tarDir(t, dir))
	zw.Close()

	s := openStore(t)
	imgs, err := s.ImportReader(bytes.NewReader(zb.Bytes()), ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 1 || imgs[0].Target.Digest != idxDesc.Digest || imgs[0].ID != host.Config.Digest {
		t.Fatalf("Import = %+v", imgs)
	}
	checkImported(t, s, "ghcr.io/acme/multi:1", host)
	p := otherPlatform()
	s.Platform = &p
	checkImported(t, s, "ghcr.io/acme/multi:1", other)
}

// tarDir makes a tar of a directory tree (an oci-archive of a layout).
func tarDir(t testing.TB, dir string) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	if err := tw.AddFS(os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	tw.Close()
	return b.Bytes()
}

// checkUnchanged checks what a refused import must leave: the store as it was, byte for
// byte, index.json included, and nothing new (not even blobs no name reaches).
func checkUnchanged(t *testing.T, s *Store, before map[string]string, indexJSON []byte) {
	t.Helper()
	if got := readFile(t, filepath.Join(s.Root(), "index.json")); !bytes.Equal(got, indexJSON) {
		t.Fatalf("index.json changed:\n%s\n%s", indexJSON, got)
	}
	for _, d := range diffSnapshots(before, snapshot(t, s.Root())) {
		t.Errorf("store changed: %s", d)
	}
	assertTmpEmpty(t, s)
}

func TestImportBad(t *testing.T) {
	layout, want := testLayout(t, nil)
	a := readFile(t, dockerArchive(t, layout, "example.com/app:1"))
	b := readFile(t, ociArchive(t, layout, "other/app:2"))
	var mj []map[string]any
	if err := json.Unmarshal(memberBody(t, a, "manifest.json"), &mj); err != nil {
		t.Fatal(err)
	}
	editManifest := func(f func(m map[string]any)) []byte {
		return rewriteTar(t, a, func(h *tar.Header, body []byte) (*tar.Header, []byte) {
			if h.Name == "manifest.json" {
				var m []map[string]any
				json.Unmarshal(body, &m)
				f(m[0])
				body, _ = json.Marshal(m)
			}
			return h, body
		})
	}
	// The member of A.tar holding layer two, and a byte of it flipped.
	var layerTwo string
	flipped := bytes.Clone(a)
	at := int64(bytes.Index(a, []byte(layerTwoMarker)))
	for _, m := range readTar(t, a) {
		if m.hdr.Typeflag == tar.TypeReg && at >= m.off && at < m.off+m.hdr.Size {
			layerTwo = m.hdr.Name
		}
	}
	if at < 0 || layerTwo == "" {
		t.Fatal("layer two not found in A.tar")
	}
	flipped[at+3] ^= 0x20
	// A byte of the first tar header inside that layer flipped.
	var headerFlipped []byte
	for _, m := range readTar(t, a) {
		if m.hdr.Name == layerTwo {
			headerFlipped = bytes.Clone(a)
			headerFlipped[m.off+5] ^= 0x01 // in the entry's name
		}
	}
	// A byte flipped in the gzip layer of the oci-archive.
	gzFlipped := bytes.Clone(b)
	for _, m := range readTar(t, b) {
		if strings.HasSuffix(m.hdr.Name, want.Layers[0].Digest.Encoded()) {
			gzFlipped[m.off+m.hdr.Size/2] ^= 0x01
		}
	}
	// The config's diff_ids swapped: the config (and so its name) changes.
	cfgName := mj[0]["Config"].(string)
	var cfg map[string]any
	json.Unmarshal(memberBody(t, a, cfgName), &cfg)
	ids := cfg["rootfs"].(map[string]any)["diff_ids"].([]any)
	ids[0], ids[1] = ids[1], ids[0]
	newCfg, _ := json.Marshal(cfg)
	newCfgName := digest.FromBytes(newCfg).Encoded() + ".json"
	swapped := rewriteTar(t, a, func(h *tar.Header, body []byte) (*tar.Header, []byte) {
		switch h.Name {
		case cfgName:
			h.Name, body = newCfgName, newCfg
		case "manifest.json":
			body = bytes.ReplaceAll(body, []byte(cfgName), []byte(newCfgName))
		}
		return h, body
	})
	firstLayer := mj[0]["Layers"].([]any)[0].(string)

	cases := []struct {
		name string
		data []byte
		want []string // in the error
	}{
		{"flipped byte in a layer", flipped, []string{layerTwo, "diffID", want.DiffIDs[1].String()}},
		{"flipped byte in a layer's tar header", headerFlipped, []string{layerTwo, "tar header"}},
		{"flipped byte in a gzip blob", gzFlipped, []string{want.Layers[0].Digest.String(), "digest mismatch"}},
		{"truncated", a[:len(a)/2], []string{"truncated archive at byte", "member"}},
		{"truncated gzip", func() []byte { gz := gzipBytes(t, a); return gz[:len(gz)/2] }(), []string{"truncated archive at byte"}},
		{"missing file", editManifest(func(m map[string]any) { m["Layers"].([]any)[0] = "nowhere/layer.tar" }),
			[]string{"nowhere/layer.tar", "no such file"}},
		{"missing config", rewriteTar(t, a, func(h *tar.Header, body []byte) (*tar.Header, []byte) {
			if h.Name == cfgName {
				return nil, nil
			}
			return h, body
		}), []string{cfgName}},
		{"invalid RepoTag", editManifest(func(m map[string]any) { m["RepoTags"] = []string{"example.com/ok:1", "Bad:Name:x"} }),
			[]string{`"Bad:Name:x"`}},
		{"diffID differs", swapped, []string{firstLayer, want.DiffIDs[0].String(), want.DiffIDs[1].String()}},
		{"not an archive", bytes.Repeat([]byte("junk"), 300), []string{"not a tar archive"}},
		{"no manifest", makeTar(t, []tarEntry{{name: "x", typ: tar.TypeReg, body: []byte("x")}}), []string{"manifest.json", "index.json"}},
	}
	s := openStore(t)
	if _, err := s.ImportReader(bytes.NewReader(b), ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			indexJSON := readFile(t, filepath.Join(s.Root(), "index.json"))
			before := snapshot(t, s.Root())
			p := writeFile(t, t.TempDir(), "bad.tar", c.data)
			imgs, err := s.Import(p, ImportOptions{})
			if err == nil {
				t.Fatalf("imported %+v", imgs)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "import "+p+": ") || strings.Contains(msg, "\n") {
				t.Errorf("error not one line naming the archive: %q", msg)
			}
			for _, w := range c.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q lacks %q", msg, w)
				}
			}
			t.Log(msg)
			checkUnchanged(t, s, before, indexJSON)
		})
	}

	// With every blob of A.tar stored already, an invalid RepoTag leaves the whole store
	// tree as it was, byte for byte (layer indexes rewritten the same are the same).
	if _, err := s.ImportReader(bytes.NewReader(a), ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, s.Root())
	bad := editManifest(func(m map[string]any) { m["RepoTags"] = []string{"Bad:Name:x"} })
	if _, err := s.ImportReader(bytes.NewReader(bad), ImportOptions{}); err == nil {
		t.Fatal("invalid RepoTag imported")
	}
	if d := diffSnapshots(before, snapshot(t, s.Root())); len(d) > 0 {
		t.Fatalf("store changed: %v", d)
	}
}

func TestImportParallel(t *testing.T) {
	layout, want := testLayout(t, nil)
	a := dockerArchive(t, layout, "example.com/app:1")
	b := ociArchive(t, layout, "other/app:2")
	fixture := filepath.Join("..", "..", "shared", "fixtures", "hello-world-v25.tar")
	s := openStore(t)
	var wg sync.WaitGroup
	for _, p := range []string{a, b, fixture} {
		wg.Go(func() {
			if _, err := s.Import(p, ImportOptions{}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	checkImported(t, s, "example.com/app:1", want)
	checkImported(t, s, "other/app:2", want)
	if _, err := s.Resolve("ee301c921b8a"); err != nil {
		t.Fatal(err)
	}
	if imgs, err := s.Images(); err != nil || len(imgs) != 3 {
		t.Fatalf("Images = %d, %v", len(imgs), err)
	}
	assertTmpEmpty(t, s)
}

// Environment of the helper process TestImportKill starts.
const (
	importEnvRoot    = "IMGFS_IMPORT_TEST_HELPER_ROOT"
	importEnvArchive = "IMGFS_IMPORT_TEST_HELPER_ARCHIVE"
)

// importHelper is the process TestImportKill kills (the test binary run again, TestMain
// dispatching here).
func importHelper(root string) error {
	s, err := Open(root)
	if err != nil {
		return err
	}
	_, err = s.Import(os.Getenv(importEnvArchive), ImportOptions{})
	return err
}

// checkReachable checks that every blob index.json reaches is there and whole.
func checkReachable(t *testing.T, s *Store) map[digest.Digest]bool {
	t.Helper()
	ix := readIndexJSON(t, s)
	seen := map[digest.Digest]bool{}
	var walk func(d ocispec.Descriptor)
	walk = func(d ocispec.Descriptor) {
		if seen[d.Digest] {
			return
		}
		seen[d.Digest] = true
		f, err := s.OpenBlob(d.Digest)
		if err != nil {
			t.Fatalf("reachable blob: %v", err)
		}
		h := sha256.New()
		n, err := io.Copy(h, f)
		f.Close()
		if err != nil || "sha256:"+hex.EncodeToString(h.Sum(nil)) != d.Digest.String() || n != d.Size {
			t.Fatalf("reachable blob %s damaged (%d bytes, %v)", d.Digest, n, err)
		}
		if isManifestType(d.MediaType) || isIndexType(d.MediaType) {
			var m struct {
				Config    *ocispec.Descriptor
				Layers    []ocispec.Descriptor
				Manifests []ocispec.Descriptor
			}
			json.Unmarshal(readFile(t, s.BlobPath(d.Digest)), &m)
			if m.Config != nil {
				walk(*m.Config)
			}
			for _, c := range append(m.Layers, m.Manifests...) {
				walk(c)
			}
		}
	}
	for _, d := range ix.Manifests {
		walk(d)
	}
	if _, err := s.Images(); err != nil {
		t.Fatal(err)
	}
	return seen
}

// Imports killed at random points leave a store that opens, whose images are whole, and
// whose leftovers GC removes.
func TestImportKill(t *testing.T) {
	big := make([]byte, 30<<20)
	rand.NewChaCha8([32]byte{1}).Read(big)
	layout, want := testLayout(t, big)
	archives := []string{
		dockerArchive(t, layout, "example.com/big:1"),
		writeFile(t, t.TempDir(), "B.tar", tarDir(t, layout)),
	}
	s := openStore(t)
	// Something there before, which must stay.
	if _, err := s.Import(filepath.Join("..", "..", "shared", "fixtures", "hello-world-v25.tar"), ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	finished := 0
	for i, delay := range []time.Duration{40, 80, 120, 160, 200, 250} {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), importEnvRoot+"="+s.Root(), importEnvArchive+"="+archives[i%2])
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(delay * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		err := cmd.Wait()
		if err == nil {
			finished++
		} else if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
			t.Fatalf("helper failed: %v\n%s", err, out.String())
		}
		tmps, _ := os.ReadDir(s.tmpDir())
		blobs, _ := os.ReadDir(filepath.Join(s.Root(), "blobs", "sha256"))
		t.Logf("killed after %v (%s): finished %v, %d blobs, %d temp files", delay*time.Millisecond,
			filepath.Base(archives[i%2]), err == nil, len(blobs), len(tmps))
		s2, err := Open(s.Root())
		if err != nil {
			t.Fatalf("after kill at %v: %v", delay, err)
		}
		checkReachable(t, s2)
	}
	t.Logf("%d of 6 imports finished before the kill", finished)

	// Leftovers of killed writes, once old, and unreferenced blobs go.
	past := time.Now().Add(-2 * TmpMaxAge)
	tmps, _ := os.ReadDir(s.tmpDir())
	for _, e := range tmps {
		os.Chtimes(filepath.Join(s.tmpDir(), e.Name()), past, past)
	}
	if _, _, err := s.GC(); err != nil {
		t.Fatal(err)
	}
	assertTmpEmpty(t, s)
	reach := checkReachable(t, s)
	for _, sub := range []string{"blobs/sha256", ".imgfs/index/sha256"} {
		ents, _ := os.ReadDir(filepath.Join(s.Root(), sub))
		for _, e := range ents {
			if !reach[digest.NewDigestFromEncoded(digest.SHA256, e.Name())] {
				t.Errorf("%s/%s left after GC", sub, e.Name())
			}
		}
	}
	if _, err := s.Resolve("ee301c921b8a"); err != nil {
		t.Fatal(err)
	}

	// And an import now completes.
	if _, err := s.Import(archives[0], ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	checkImported(t, s, "example.com/big:1", want)
	checkReachable(t, s)
}

// TestReimportMendsDamagedBlob: a stored blob damaged after its import (same size, one byte
// changed) is replaced by a later import of the same bytes, not kept because it is there.
func TestReimportMendsDamagedBlob(t *testing.T) {
	layout, _ := testLayout(t, nil)
	a := dockerArchive(t, layout, "example.com/app:1")
	s := openStore(t)
	if _, err := s.Import(a, ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	img, err := s.Resolve("example.com/app:1")
	if err != nil {
		t.Fatal(err)
	}
	descs := append([]ocispec.Descriptor{img.Manifest.Config}, img.Manifest.Layers...)
	for _, d := range descs {
		p := s.BlobPath(d.Digest)
		b := readFile(t, p)
		b[len(b)/2] ^= 0x20
		if err := os.WriteFile(p, b, 0o444); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Import(a, ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, d := range descs {
		if got := digest.FromBytes(readFile(t, s.BlobPath(d.Digest))); got != d.Digest {
			t.Errorf("blob %s still damaged after a re-import (hashes to %s)", d.Digest, got)
		}
	}
	assertTmpEmpty(t, s)
}

// A layer's diffID is checked against its config's whatever the media types say: the mount
// and export take a layer for one by its bytes, not its media type. An artifact whose
// config claims no diffIDs imports as it is.
func TestImportDiffIDWhateverMediaType(t *testing.T) {
	tar1 := makeTar(t, []tarEntry{{name: "one", typ: tar.TypeReg, mode: 0o644, body: []byte("1")}})
	tar2 := makeTar(t, []tarEntry{{name: "two", typ: tar.TypeReg, mode: 0o644, body: []byte("2")}})
	gz1 := gzipBytes(t, tar1)
	intoto := []byte(`{"_type":"https://in-toto.io/Statement/v0.1"}`)
	notTar := gzipBytes(t, []byte("gzip, but no tar inside"))
	const octet, vendor = "application/octet-stream", "application/vnd.acme.config.v1+json"
	type layer struct {
		mediaType string
		data      []byte
	}
	cases := []struct {
		name     string
		configMT string
		config   string // rootfs of the config, %s the diffIDs
		diffIDs  []digest.Digest
		layers   []layer
		want     []string // in the error; none: imports
	}{
		{"octet-stream layer, wrong diffID", ocispec.MediaTypeImageConfig, "", []digest.Digest{digest.FromBytes(tar2)},
			[]layer{{octet, gz1}}, []string{digest.FromBytes(gz1).String(), "diffID", digest.FromBytes(tar1).String()}},
		{"vendor config, wrong diffID", vendor, "", []digest.Digest{digest.FromBytes(tar2)},
			[]layer{{ocispec.MediaTypeImageLayerGzip, gz1}}, []string{digest.FromBytes(gz1).String(), "diffID"}},
		{"vendor config, octet-stream layer, wrong diffID", vendor, "", []digest.Digest{digest.FromBytes(tar2)},
			[]layer{{octet, gz1}}, []string{digest.FromBytes(gz1).String(), "diffID"}},
		{"vendor config, diffIDs for 2 layers of 1", vendor, "", []digest.Digest{digest.FromBytes(tar1), digest.FromBytes(tar2)},
			[]layer{{octet, gz1}}, []string{"1 layers", "lists 2"}},
		{"octet-stream layer that is no tar", ocispec.MediaTypeImageConfig, "", []digest.Digest{digest.FromString("gzip, but no tar inside")},
			[]layer{{octet, notTar}}, []string{digest.FromBytes(notTar).String(), "diffID"}},
		{"octet-stream layer, right diffID", ocispec.MediaTypeImageConfig, "", []digest.Digest{digest.FromBytes(tar1)},
			[]layer{{octet, gz1}}, nil},
		{"vendor config, right diffIDs", vendor, "", []digest.Digest{digest.FromBytes(tar1), digest.FromBytes(tar2)},
			[]layer{{octet, gz1}, {ocispec.MediaTypeImageLayer, tar2}}, nil},
		{"attestation", ocispec.MediaTypeImageConfig, "", []digest.Digest{digest.FromBytes(intoto)},
			[]layer{{"application/vnd.in-toto+json", intoto}}, nil},
		{"artifact claiming no diffIDs", vendor, `{"anything":1}`, nil, []layer{{octet, gz1}, {"text/plain", []byte("hi")}}, nil},
	}
	s := openStore(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "L")
			var ls []ocispec.Descriptor
			for _, l := range c.layers {
				ls = append(ls, testimg.WriteBlob(t, dir, l.mediaType, l.data))
			}
			cfg := []byte(c.config)
			if c.config == "" {
				ids, _ := json.Marshal(c.diffIDs)
				cfg = []byte(fmt.Sprintf(`{"architecture":%q,"os":%q,"rootfs":{"type":"layers","diff_ids":%s}}`,
					hostPlatform.Architecture, hostPlatform.OS, ids))
			}
			cd := testimg.WriteBlob(t, dir, c.configMT, cfg)
			m := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
				Config: cd, Layers: ls}
			md := writeLayoutJSON(t, dir, ocispec.MediaTypeImageManifest, m)
			writeLayoutIndex(t, dir, []ocispec.Descriptor{md}, []string{"x:1"})
			archive := writeFile(t, t.TempDir(), "x.tar", tarDir(t, dir))
			for _, src := range []string{dir, archive} {
				name := mustName(t, "example.com/"+strings.ToLower(strings.NewReplacer(" ", "-", ",", "").Replace(c.name))+":1")
				_, err := s.Import(src, ImportOptions{Name: name})
				if c.want == nil {
					if err != nil {
						t.Errorf("%s: %v", filepath.Base(src), err)
					}
					continue
				}
				if err == nil {
					t.Errorf("%s: imported", filepath.Base(src))
					continue
				}
				for _, w := range c.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("%s: error %q lacks %q", filepath.Base(src), err, w)
					}
				}
				t.Log(err)
			}
		})
	}
}

// withMembers returns the archive data with members (name -> body) added at its end.
func withMembers(t testing.TB, data []byte, members map[string][]byte) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, m := range readTar(t, data) {
		tw.WriteHeader(m.hdr)
		tw.Write(m.body)
	}
	names := slices.Sorted(maps.Keys(members))
	for _, n := range names {
		tw.WriteHeader(&tar.Header{Name: n, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(members[n]))})
		tw.Write(members[n])
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// blobFiles lists the files under blobs/ and .imgfs/index/ of a store.
func blobFiles(t testing.TB, s *Store) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, sub := range []string{"blobs", filepath.Join(".imgfs", "index")} {
		for p, v := range snapshot(t, filepath.Join(s.Root(), sub)) {
			if strings.HasPrefix(v, "-") {
				out[filepath.Join(sub, p)] = v
			}
		}
	}
	return out
}

// An import stores only what the manifests of the images it adds name: a refused import
// leaves no blob behind, and a member no manifest names is not kept, be it 8 MiB of
// zeros in a gzip of a few KiB.
func TestImportKeepsOnlyWhatIsNamed(t *testing.T) {
	layout, want := testLayout(t, nil)
	random := make([]byte, 1<<20)
	rand.NewChaCha8([32]byte{7}).Read(random)
	junk := map[string][]byte{
		"junk": make([]byte, 8<<20),
		"blobs/sha256/" + digest.FromBytes(random).Encoded(): random,
		"x/layer.tar": makeTar(t, []tarEntry{{name: "junk", typ: tar.TypeReg, mode: 0o644, body: random}}),
	}
	junkDigests := []digest.Digest{digest.FromBytes(junk["junk"]), digest.FromBytes(random), digest.FromBytes(junk["x/layer.tar"])}
	oci := tarDir(t, layout)
	docker := readFile(t, dockerArchive(t, layout, "example.com/docker:1"))
	// index.json naming the image and another one that is not there: refused once every
	// member is stored, and the image's blobs with them.
	gone := want.Manifest
	gone.Digest = digest.FromString("gone")
	indexJSON := func() []byte {
		dir := t.TempDir()
		writeLayoutIndex(t, dir, []ocispec.Descriptor{want.Manifest, gone}, []string{"img:1", "gone:1"})
		return readFile(t, filepath.Join(dir, "index.json"))
	}()
	missing := rewriteTar(t, oci, func(h *tar.Header, body []byte) (*tar.Header, []byte) {
		if h.Name == "index.json" {
			body = indexJSON
		}
		return h, body
	})
	badTag := rewriteTar(t, docker, func(h *tar.Header, body []byte) (*tar.Header, []byte) {
		if h.Name == "manifest.json" {
			body = bytes.ReplaceAll(body, []byte("example.com/docker:1"), []byte("Bad:Name:x"))
		}
		return h, body
	})

	s := openStore(t)
	if _, err := s.Import(filepath.Join("..", "..", "shared", "fixtures", "hello-world-v25.tar"), ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		data []byte
		gz   bool
	}{
		{"oci-archive naming a missing manifest", missing, false},
		{"gzipped", missing, true},
		{"docker save with an invalid RepoTag", badTag, false},
		{"layout of a refused import", nil, false},
	} {
		t.Run("refused "+c.name, func(t *testing.T) {
			before := blobFiles(t, s)
			var err error
			if c.data == nil {
				bad := filepath.Join(t.TempDir(), "L")
				os.CopyFS(bad, os.DirFS(layout))
				os.WriteFile(filepath.Join(bad, "index.json"), indexJSON, 0o644)
				_, err = s.Import(bad, ImportOptions{})
			} else {
				data := withMembers(t, c.data, junk)
				if c.gz {
					data = gzipBytes(t, data)
					t.Logf("%d bytes gzipped", len(data))
				}
				_, err = s.Import(writeFile(t, t.TempDir(), "bad.tar", data), ImportOptions{})
			}
			if err == nil {
				t.Fatal("imported")
			}
			t.Log(err)
			if d := diffSnapshots(before, blobFiles(t, s)); len(d) > 0 {
				t.Errorf("refused import left %d files: %v", len(d), d)
			}
			assertTmpEmpty(t, s)
		})
	}
	for name, data := range map[string][]byte{"oci-archive": oci, "docker save": docker} {
		t.Run("imported "+name, func(t *testing.T) {
			if _, err := s.Import(writeFile(t, t.TempDir(), "x.tar", withMembers(t, data, junk)), ImportOptions{}); err != nil {
				t.Fatal(err)
			}
			for _, d := range junkDigests {
				if s.HasBlob(d) {
					t.Errorf("member %s kept", d)
				}
			}
			reach := checkReachable(t, s)
			for p := range blobFiles(t, s) {
				if d := digest.NewDigestFromEncoded(digest.SHA256, filepath.Base(p)); !reach[d] {
					t.Errorf("%s kept, reachable from no name", p)
				}
			}
			assertTmpEmpty(t, s)
		})
	}
}

// Refused imports running along with good ones of the same blobs take nothing from them.
func TestImportRefusedAlongsideGood(t *testing.T) {
	layout, want := testLayout(t, nil)
	oci := tarDir(t, layout)
	bad := writeFile(t, t.TempDir(), "bad.tar", rewriteTar(t, oci, func(h *tar.Header, body []byte) (*tar.Header, []byte) {
		if h.Name == "index.json" {
			body = bytes.ReplaceAll(body, []byte(want.Manifest.Digest.Encoded()), []byte(digest.FromString("gone").Encoded()))
		}
		return h, body
	}))
	good := writeFile(t, t.TempDir(), "good.tar", oci)
	root := t.TempDir()
	for round := range 5 {
		var wg sync.WaitGroup
		for i, p := range []string{bad, good, bad} {
			s, err := Open(root)
			if err != nil {
				t.Fatal(err)
			}
			wg.Go(func() {
				name := mustName(t, fmt.Sprintf("example.com/r%d:%d", round, i))
				if _, err := s.Import(p, ImportOptions{Name: name}); (err == nil) != (p == good) {
					t.Errorf("import %s: %v", filepath.Base(p), err)
				}
			})
		}
		wg.Wait()
		s, _ := Open(root)
		checkImported(t, s, fmt.Sprintf("example.com/r%d:1", round), want)
		checkReachable(t, s)
		if _, _, err := s.GC(); err != nil {
			t.Fatal(err)
		}
		if err := s.Untag(mustName(t, fmt.Sprintf("example.com/r%d:1", round))); err != nil {
			t.Fatal(err)
		}
	}
}
