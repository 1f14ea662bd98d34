package export

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/distribution/reference"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/imgfs/imgfs/internal/testimg"
	"github.com/imgfs/imgfs/store"
)

// fixture is Docker 25's own save of hello-world, in ../shared beside the checkout.
const fixture = "../../shared/fixtures/hello-world-v25.tar"

func fixturePath(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(fixture); err != nil {
		t.Fatalf("the fixture of this test (../shared must be beside the checkout): %v", err)
	}
	return fixture
}

func openStore(t *testing.T) *store.Store {
	t.Helper()
	s, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// rawMember is a member of a USTAR archive as bytes: its header block and its content.
type rawMember struct {
	name    string
	hdr     []byte
	content []byte
}

// rawMembers splits a USTAR archive (no PAX, no long names) into its members.
func rawMembers(t *testing.T, b []byte) []rawMember {
	t.Helper()
	var out []rawMember
	for pos := 0; pos+512 <= len(b); {
		h := b[pos : pos+512]
		if bytes.Equal(h, make([]byte, 512)) {
			break
		}
		name := string(bytes.TrimRight(h[:100], "\x00"))
		size, err := strconv.ParseInt(strings.TrimRight(string(h[124:136]), "\x00 "), 8, 64)
		if err != nil {
			t.Fatalf("member %q: size: %v", name, err)
		}
		pos += 512
		out = append(out, rawMember{name: name, hdr: h, content: b[pos : pos+int(size)]})
		pos += int((size + 511) / 512 * 512)
	}
	return out
}

func find(t *testing.T, ms []rawMember, name string) rawMember {
	t.Helper()
	for _, m := range ms {
		if m.name == name {
			return m
		}
	}
	t.Fatalf("no member %s", name)
	return rawMember{}
}

func stream(t *testing.T, a *Archive) []byte {
	t.Helper()
	var b bytes.Buffer
	n, err := a.WriteTo(&b)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(b.Len()) || n != a.Size() {
		t.Fatalf("WriteTo wrote %d bytes (counted %d), Size %d", b.Len(), n, a.Size())
	}
	return b.Bytes()
}

func newArchive(t *testing.T, s *store.Store, images []store.Image) *Archive {
	t.Helper()
	l := s.NewLayers(nil, 0)
	t.Cleanup(func() { l.Close() })
	a, err := New(s, images, l)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

const (
	helloConfig   = "ee301c921b8aadc002973b2e0c3da17d701dcd994b606769a7e6eaa100b81d44"
	helloLayer    = "12660636fe55438cc3ae7424da7ac56e845cdb52493ff9cf949c47a7f57f8b43"
	helloManifest = "411caf340c828657e915a83ed561a79d2b8150dabad4dc079d881cbfe6f86afe"
	helloV1JSON   = "ac09ed77c1b58dc3f93528f17515cb1c5487fa8f304ba2ed54d0f14686f1136e"
	helloV1ID     = "78d0dd34c5b3cf2b40239eb3836a9bccfdbc80d313591426617ee4a221e205bd"
)

// TestFixture exports the image of a real Docker 25 save and compares it with that save.
func TestFixture(t *testing.T) {
	path := fixturePath(t)
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fx := rawMembers(t, want)
	s := openStore(t)
	imgs, err := s.Import(path, store.ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 1 || imgs[0].Name != nil {
		t.Fatalf("import: %+v", imgs)
	}

	got := rawMembers(t, stream(t, newArchive(t, s, imgs)))
	var names []string
	for _, m := range got {
		names = append(names, m.name)
	}
	wantNames := []string{"blobs/", "blobs/sha256/", "blobs/sha256/" + helloLayer, "blobs/sha256/" + helloManifest,
		"blobs/sha256/" + helloV1JSON, "blobs/sha256/" + helloConfig, "index.json", "manifest.json", "oci-layout"}
	if !slices.Equal(names, wantNames) {
		t.Fatalf("members:\n%q\nwant\n%q", names, wantNames)
	}
	// Byte for byte, headers included: the members whose mtime Docker 25 and 29 agree on.
	for _, n := range []string{"blobs/", "blobs/sha256/" + helloLayer, "blobs/sha256/" + helloManifest,
		"blobs/sha256/" + helloV1JSON, "blobs/sha256/" + helloConfig, "manifest.json", "oci-layout"} {
		g, w := find(t, got, n), find(t, fx, n)
		if !bytes.Equal(g.hdr, w.hdr) {
			t.Errorf("%s: header\n%q\nwant\n%q", n, g.hdr, w.hdr)
		}
		if !bytes.Equal(g.content, w.content) {
			t.Errorf("%s: content\n%s\nwant\n%s", n, g.content, w.content)
		}
	}
	if v1 := find(t, got, "blobs/sha256/"+helloV1JSON).content; !bytes.Contains(v1, []byte(`{"id":"`+helloV1ID+`"`)) {
		t.Errorf("v1 JSON %s", v1)
	}
	// Docker 29: blobs/sha256/ and index.json at 0; an untagged image's bare descriptor.
	for _, n := range []string{"blobs/sha256/", "index.json"} {
		h, err := tar.NewReader(bytes.NewReader(slices.Concat(find(t, got, n).hdr, make([]byte, 1024)))).Next()
		if err != nil {
			t.Fatal(err)
		}
		if h.ModTime.Unix() != 0 {
			t.Errorf("%s: mtime %v", n, h.ModTime)
		}
	}
	wantIndex := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[` +
		`{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:` + helloManifest + `","size":447}]}`
	if g := string(find(t, got, "index.json").content); g != wantIndex {
		t.Errorf("index.json\n%s\nwant\n%s", g, wantIndex)
	}

	// Tagged.
	ref, _ := reference.ParseNormalizedNamed("hello-world")
	ref = reference.TagNameOnly(ref)
	if err := s.Tag(ref, imgs[0].Descriptor); err != nil {
		t.Fatal(err)
	}
	imgs, err = s.Images()
	if err != nil {
		t.Fatal(err)
	}
	got = rawMembers(t, stream(t, newArchive(t, s, imgs)))
	wantIndex = `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[` +
		`{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:` + helloManifest + `","size":447,` +
		`"annotations":{"io.containerd.image.name":"docker.io/library/hello-world:latest","org.opencontainers.image.ref.name":"latest"}}]}`
	if g := string(find(t, got, "index.json").content); g != wantIndex {
		t.Errorf("index.json\n%s\nwant\n%s", g, wantIndex)
	}
	wantRepos := `{"hello-world":{"latest":"` + helloLayer + `"}}` + "\n"
	if g := string(find(t, got, "repositories").content); g != wantRepos {
		t.Errorf("repositories %q, want %q", g, wantRepos)
	}
	wantManifest := strings.Replace(string(find(t, fx, "manifest.json").content), `"RepoTags":null`, `"RepoTags":["hello-world:latest"]`, 1)
	if g := string(find(t, got, "manifest.json").content); g != wantManifest {
		t.Errorf("manifest.json\n%s\nwant\n%s", g, wantManifest)
	}
	if g, w := find(t, got, "blobs/sha256/"+helloV1JSON), find(t, fx, "blobs/sha256/"+helloV1JSON); !bytes.Equal(g.content, w.content) {
		t.Errorf("v1 JSON changed with a tag")
	}
	if last := got[len(got)-1].name; last != "repositories" {
		t.Errorf("last member %s", last)
	}
}

func randomBytes(seed int64, n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

func gz(t *testing.T, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	w := gzip.NewWriter(&out)
	w.Write(b)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

type testImage struct {
	ref     string
	created string
	layers  [][]byte // uncompressed
	config  string   // the "config" object
}

// testLayout writes an OCI layout of images with gzip layers and returns its directory.
func testLayout(t *testing.T, images []testImage) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	var idx ocispec.Index
	idx.SchemaVersion = 2
	idx.MediaType = ocispec.MediaTypeImageIndex
	for _, im := range images {
		var layers []ocispec.Descriptor
		var diffIDs []string
		for _, l := range im.layers {
			layers = append(layers, testimg.WriteBlob(t, dir, ocispec.MediaTypeImageLayerGzip, gz(t, l)))
			diffIDs = append(diffIDs, `"`+digest.FromBytes(l).String()+`"`)
		}
		cfg := fmt.Sprintf(`{"architecture":"amd64","os":"linux","created":%q,"config":%s,"rootfs":{"type":"layers","diff_ids":[%s]}}`,
			im.created, im.config, strings.Join(diffIDs, ","))
		m, err := json.Marshal(ocispec.Manifest{
			Versioned: specs.Versioned{SchemaVersion: 2},
			MediaType: ocispec.MediaTypeImageManifest,
			Config:    testimg.WriteBlob(t, dir, ocispec.MediaTypeImageConfig, []byte(cfg)),
			Layers:    layers,
		})
		if err != nil {
			t.Fatal(err)
		}
		d := testimg.WriteBlob(t, dir, ocispec.MediaTypeImageManifest, m)
		n, err := reference.ParseNormalizedNamed(im.ref)
		if err != nil {
			t.Fatal(err)
		}
		d.Annotations = map[string]string{store.AnnotationImageName: n.String()}
		idx.Manifests = append(idx.Manifests, d)
	}
	data, _ := json.Marshal(idx)
	if err := os.WriteFile(filepath.Join(dir, "index.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// multiStore holds two images sharing their bottom layer, the first with two tags.
func multiStore(t *testing.T) (*store.Store, []store.Image, [][]byte) {
	t.Helper()
	l1 := testimg.Tar(t, map[string][]byte{"big": randomBytes(1, 5<<20+123), "etc/hostname": []byte("x\n")})
	l2 := testimg.Tar(t, map[string][]byte{"app/bin": randomBytes(2, 3<<20+77), "app/conf": []byte("a=<b>&c\n")})
	l3 := testimg.Tar(t, map[string][]byte{"base/file": randomBytes(3, 70000)})
	dir := testLayout(t, []testImage{
		{ref: "example.com/team/app:v1", created: "2024-03-04T05:06:07.891Z", layers: [][]byte{l1, l2},
			config: `{"Env":["PATH=/bin","X=<&>"],"Cmd":["serve"],"ExposedPorts":{"8080/tcp":{},"53/udp":{}},` +
				`"Labels":{"b":"2","a":"1"},"Healthcheck":{"Test":["CMD","true"],"Interval":30000000000},"StopSignal":"SIGINT","Unknown":1}`},
		{ref: "base:latest", created: "2023-01-02T03:04:05+02:00", layers: [][]byte{l1, l3},
			config: `{"Entrypoint":["/bin/sh","-c"],"OnBuild":["RUN x"],"Volumes":{"/data":{}}}`},
	})
	s := openStore(t)
	if _, err := s.Import(dir, store.ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	imgs, err := s.Images()
	if err != nil {
		t.Fatal(err)
	}
	for _, im := range imgs {
		if im.Name != nil && im.Name.String() == "example.com/team/app:v1" {
			latest, _ := reference.ParseNormalizedNamed("example.com/team/app:latest")
			if err := s.Tag(latest, im.Descriptor); err != nil {
				t.Fatal(err)
			}
		}
	}
	if imgs, err = s.Images(); err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 3 {
		t.Fatalf("images: %d", len(imgs))
	}
	return s, imgs, [][]byte{l1, l2, l3}
}

func TestMultiImage(t *testing.T) {
	s, imgs, layers := multiStore(t)
	a := newArchive(t, s, imgs)
	all := stream(t, a)

	// The same bytes whatever the order of the images given.
	rev := slices.Clone(imgs)
	slices.Reverse(rev)
	if !bytes.Equal(stream(t, newArchive(t, s, rev)), all) {
		t.Fatal("the archive depends on the order of the images")
	}

	// Each layer once, named by its diffID, its bytes; the docker documents.
	tr := tar.NewReader(bytes.NewReader(all))
	seen := map[string]int{}
	files := map[string][]byte{}
	var order []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		order = append(order, h.Name)
		seen[h.Name]++
		if h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" || h.Format != tar.FormatUSTAR {
			t.Errorf("%s: %d/%d %q/%q %v", h.Name, h.Uid, h.Gid, h.Uname, h.Gname, h.Format)
		}
		if (h.Typeflag == tar.TypeDir) != (h.Mode == 0o755) || (h.Typeflag == tar.TypeReg) != (h.Mode == 0o644) {
			t.Errorf("%s: type %c mode %o", h.Name, h.Typeflag, h.Mode)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(h.Name, "blobs/sha256/") && len(h.Name) > len("blobs/sha256/") {
			sum := sha256.Sum256(data)
			if hex.EncodeToString(sum[:]) != strings.TrimPrefix(h.Name, "blobs/sha256/") {
				t.Errorf("%s: content hashes to %x", h.Name, sum)
			}
		}
		files[h.Name] = data
	}
	if !slices.IsSorted(order) {
		t.Errorf("members not in order: %q", order)
	}
	for _, l := range layers {
		n := "blobs/sha256/" + digest.FromBytes(l).Encoded()
		if seen[n] != 1 || !bytes.Equal(files[n], l) {
			t.Errorf("layer %s: %d times", n, seen[n])
		}
	}
	var items []struct {
		Config       string
		RepoTags     []string
		Layers       []string
		LayerSources map[string]ocispec.Descriptor
	}
	if err := json.Unmarshal(files["manifest.json"], &items); err != nil {
		t.Fatal(err)
	}
	if len(items) != 2 || !slices.Equal(items[0].RepoTags, []string{"base:latest"}) ||
		!slices.Equal(items[1].RepoTags, []string{"example.com/team/app:latest", "example.com/team/app:v1"}) {
		t.Errorf("manifest.json %s", files["manifest.json"])
	}
	for _, it := range items {
		if len(it.LayerSources) != len(it.Layers) {
			t.Errorf("LayerSources %v", it.LayerSources)
		}
		for _, l := range it.Layers {
			d := digest.Digest("sha256:" + strings.TrimPrefix(l, "blobs/sha256/"))
			src := it.LayerSources[string(d)]
			if src.Digest != d || src.MediaType != ocispec.MediaTypeImageLayer || src.Size != int64(len(files[l])) {
				t.Errorf("LayerSources[%s] = %+v", d, src)
			}
		}
	}
	wantRepos := fmt.Sprintf(`{"base":{"latest":%q},"example.com/team/app":{"latest":%q,"v1":%q}}`+"\n",
		digest.FromBytes(layers[2]).Encoded(), digest.FromBytes(layers[1]).Encoded(), digest.FromBytes(layers[1]).Encoded())
	if string(files["repositories"]) != wantRepos {
		t.Errorf("repositories %s, want %s", files["repositories"], wantRepos)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(files["index.json"], &idx); err != nil {
		t.Fatal(err)
	}
	var refs []string
	for _, d := range idx.Manifests {
		refs = append(refs, d.Annotations[store.AnnotationImageName]+" "+d.Annotations[store.AnnotationRefName])
		if _, ok := files["blobs/sha256/"+d.Digest.Encoded()]; !ok {
			t.Errorf("index.json names %s, not in the archive", d.Digest)
		}
	}
	wantRefs := []string{"docker.io/library/base:latest latest", "example.com/team/app:latest latest", "example.com/team/app:v1 v1"}
	if !slices.Equal(refs, wantRefs) {
		t.Errorf("index.json refs %q", refs)
	}
	// The v1 JSONs: three for the base chain (shared bottom written once), ids chained.
	v1s := 0
	for n, data := range files {
		var v struct {
			ID      string `json:"id"`
			Parent  string `json:"parent"`
			Created string `json:"created"`
		}
		if !strings.HasPrefix(n, "blobs/sha256/") || json.Unmarshal(data, &v) != nil || v.ID == "" {
			continue
		}
		v1s++
		if v.Parent == "" && v.Created != "1970-01-01T00:00:00Z" {
			t.Errorf("bottom v1 JSON %s", data)
		}
	}
	if v1s != 3 {
		t.Errorf("%d v1 JSONs, want 3", v1s)
	}

	// Random reads, across member boundaries and past the end.
	var bounds []int64
	for _, m := range a.members {
		bounds = append(bounds, m.off, m.off+int64(len(m.hdr)), m.off+int64(len(m.hdr))+m.size, m.end())
	}
	bounds = append(bounds, a.size-trailerSize, a.size)
	rng := rand.New(rand.NewSource(42))
	check := func(rng *rand.Rand) error {
		var off int64
		if rng.Intn(2) == 0 {
			off = bounds[rng.Intn(len(bounds))] + int64(rng.Intn(1100)) - 550
		} else {
			off = rng.Int63n(a.size + 2000)
		}
		off = max(off, 0)
		// Up to 3 MiB, short ones more often (the race detector is slow at copying).
		p := make([]byte, rng.Intn(3<<20+1)>>rng.Intn(10))
		var n int
		var err error
		if rng.Intn(2) == 0 {
			n, err = a.ReadAt(p, off)
		} else { // lent, not copied: the same bytes
			var bufs [][]byte
			var release func()
			bufs, release, err = a.ReadPinned(p, off)
			got := bytes.Join(bufs, nil) // p may hold some of it: join before copying
			n = copy(p, got)
			release()
		}
		want := all[min(off, int64(len(all))):min(off+int64(len(p)), int64(len(all)))]
		if n != len(want) || !bytes.Equal(p[:n], want) {
			return fmt.Errorf("ReadAt(%d bytes, %d) = %d bytes, want %d, equal %v", len(p), off, n, len(want), bytes.Equal(p[:n], want))
		}
		if (n < len(p)) != (err == io.EOF) || err != nil && err != io.EOF {
			return fmt.Errorf("ReadAt(%d bytes, %d) = %d, %v", len(p), off, n, err)
		}
		return nil
	}
	for i := 0; i < 1000; i++ {
		if err := check(rng); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for g := 0; g < 2; g++ {
		wg.Add(1)
		go func(seed int64) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(seed))
			for i := 0; i < 100; i++ {
				if err := check(rng); err != nil {
					errs <- err
					return
				}
			}
		}(int64(g))
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n, err := a.ReadAt(make([]byte, 10), a.size); n != 0 || err != io.EOF {
		t.Errorf("ReadAt at the end: %d, %v", n, err)
	}

	// Loaded again, the same images under the same names.
	path := filepath.Join(t.TempDir(), "save.tar")
	if err := os.WriteFile(path, all, 0o644); err != nil {
		t.Fatal(err)
	}
	s2 := openStore(t)
	back, err := s2.Import(path, store.ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	names := func(imgs []store.Image) []string {
		var out []string
		for _, im := range imgs {
			n := "<none>"
			if im.Name != nil {
				n = im.Name.String()
			}
			out = append(out, n+" "+im.ID.String())
		}
		slices.Sort(out)
		return out
	}
	if g, w := names(back), names(imgs); !slices.Equal(g, w) {
		t.Errorf("re-imported\n%q\nwant\n%q", g, w)
	}
	// A second export of the re-imported images reuses the manifests: the same archive.
	if imgs2, err := s2.Images(); err != nil {
		t.Fatal(err)
	} else if !bytes.Equal(stream(t, newArchive(t, s2, imgs2)), all) {
		t.Error("exporting the re-imported images gives another archive")
	}

	// go-containerregistry reads it.
	tag, err := name.NewTag("example.com/team/app:v1")
	if err != nil {
		t.Fatal(err)
	}
	gi, err := tarball.ImageFromPath(path, &tag)
	if err != nil {
		t.Fatal(err)
	}
	cfgName, err := gi.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	var app store.Image
	for _, im := range imgs {
		if im.Name != nil && im.Name.String() == tag.String() {
			app = im
		}
	}
	if cfgName.String() != app.ID.String() {
		t.Errorf("ggcr config %s, want %s", cfgName, app.ID)
	}
	gl, err := gi.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(gl) != 2 {
		t.Fatalf("ggcr: %d layers", len(gl))
	}
	for i, l := range gl {
		d, err := l.DiffID()
		if err != nil {
			t.Fatal(err)
		}
		if want := digest.FromBytes(layers[i]).String(); d.String() != want {
			t.Errorf("ggcr layer %d: diffID %s, want %s", i, d, want)
		}
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		io.Copy(h, rc)
		rc.Close()
		if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != d.String() {
			t.Errorf("ggcr layer %d: content %s", i, got)
		}
	}
}

// fakeLayers serves layers from a function.
type fakeLayers func(desc ocispec.Descriptor) (io.ReaderAt, int64, error)

func (f fakeLayers) Layer(desc ocispec.Descriptor) (io.ReaderAt, int64, error) { return f(desc) }

// shortReader is a layer that ends before its size says.
type shortReader struct {
	data []byte
}

func (r shortReader) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(r.data)) {
		return 0, io.EOF
	}
	n := copy(p, r.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func TestLayerErrors(t *testing.T) {
	path := fixturePath(t)
	s := openStore(t)
	imgs, err := s.Import(path, store.ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	good := newArchive(t, s, imgs)
	all := stream(t, good)
	layerOff := int64(3 * 512) // blobs/, blobs/sha256/, then the layer's header
	// A layer that cannot be opened, or is not the size its index says, fails the plan.
	for name, layers := range map[string]fakeLayers{
		"error": func(ocispec.Descriptor) (io.ReaderAt, int64, error) { return nil, 0, errors.New("gone") },
		"size": func(ocispec.Descriptor) (io.ReaderAt, int64, error) {
			return shortReader{all[layerOff : layerOff+5000]}, 5000, nil
		},
	} {
		if _, err := New(s, imgs, layers); err == nil || !strings.Contains(err.Error(), "sha256:"+helloLayer) {
			t.Errorf("%s: New: %v, want an error naming the layer", name, err)
		}
	}
	// One that ends early fails the reads of it.
	cases := map[string]fakeLayers{
		"short": func(ocispec.Descriptor) (io.ReaderAt, int64, error) {
			return shortReader{all[layerOff : layerOff+5000]}, 10752, nil
		},
		"short pinned": func(ocispec.Descriptor) (io.ReaderAt, int64, error) {
			return shortPinner{shortReader{all[layerOff : layerOff+5000]}}, 10752, nil
		},
	}
	for name, layers := range cases {
		t.Run(name, func(t *testing.T) {
			a, err := New(s, imgs, layers)
			if err != nil {
				t.Fatal(err)
			}
			if a.Size() != good.Size() {
				t.Fatalf("size %d, want %d", a.Size(), good.Size())
			}
			p := make([]byte, 12000)
			n, err := a.ReadAt(p, 512)
			if err == nil || !strings.Contains(err.Error(), "sha256:"+helloLayer) {
				t.Fatalf("ReadAt: %d, %v", n, err)
			}
			if !bytes.Equal(p[:n], all[512:512+n]) {
				t.Fatalf("ReadAt returned %d bytes that are not the archive's", n)
			}
			bufs, release, err := a.ReadPinned(make([]byte, 12000), 512)
			if err == nil || !strings.Contains(err.Error(), "sha256:"+helloLayer) {
				t.Fatalf("ReadPinned: %v", err)
			}
			if got := bytes.Join(bufs, nil); !bytes.Equal(got, all[512:512+len(got)]) {
				t.Fatalf("ReadPinned returned %d bytes that are not the archive's", len(got))
			}
			release()
			if _, err := a.WriteTo(io.Discard); err == nil || !strings.Contains(err.Error(), "sha256:"+helloLayer) {
				t.Fatalf("WriteTo: %v", err)
			}
			// What is not the layer still reads.
			if n, err := a.ReadAt(p[:1024], 0); n != 1024 || err != nil || !bytes.Equal(p[:1024], all[:1024]) {
				t.Fatalf("ReadAt of the directories: %d, %v", n, err)
			}
			tail := a.Size() - 3000
			if n, err := a.ReadAt(p[:3000], tail); n != 3000 || err != nil || !bytes.Equal(p[:3000], all[tail:]) {
				t.Fatalf("ReadAt of the end: %d, %v", n, err)
			}
		})
	}
}

// TestLayersHeldFromPlan: an archive opens its layers as it is planned, so it reads whole
// after their blobs are removed from the store (imgfs rm and gc while an export.tar is
// read), and reads open nothing more.
func TestLayersHeldFromPlan(t *testing.T) {
	s := openStore(t)
	imgs, err := s.Import(fixturePath(t), store.ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := stream(t, newArchive(t, s, imgs))
	opened := 0
	l := s.NewLayers(nil, 0)
	t.Cleanup(func() { l.Close() })
	a, err := New(s, imgs, fakeLayers(func(desc ocispec.Descriptor) (io.ReaderAt, int64, error) {
		opened++
		return l.Layer(desc)
	}))
	if err != nil {
		t.Fatal(err)
	}
	for _, desc := range imgs[0].Manifest.Layers {
		if err := os.Remove(s.BlobPath(desc.Digest)); err != nil {
			t.Fatal(err)
		}
	}
	if got := stream(t, a); !bytes.Equal(got, want) {
		t.Errorf("after the layer blobs were removed: %d bytes, not the %d of the archive", len(got), len(want))
	}
	if n := len(imgs[0].Manifest.Layers); opened != n {
		t.Errorf("Layers.Layer called %d times for %d layers", opened, n)
	}
}

// shortPinner lends what shortReader has.
type shortPinner struct{ shortReader }

func (r shortPinner) ReadPinned(p []byte, off int64) ([][]byte, func(), error) {
	b := make([]byte, len(p))
	k, err := r.ReadAt(b, off)
	return [][]byte{b[:k]}, func() {}, err
}

// zeroReader is a layer of zeros of any size.
type zeroReader struct{}

func (zeroReader) ReadAt(p []byte, off int64) (int, error) { clear(p); return len(p), nil }

// TestHugeLayer checks the PAX header of a member of 8 GiB or more, without 8 GiB.
func TestHugeLayer(t *testing.T) {
	const size = 8<<30 + 1000
	d := digest.FromString("huge")
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: d, Size: 1}
	cfg := []byte(`{"created":"2020-01-01T00:00:00Z","rootfs":{"type":"layers","diff_ids":["` + d.String() + `"]}}`)
	var ij imageJSON
	if err := json.Unmarshal(cfg, &ij); err != nil {
		t.Fatal(err)
	}
	v1, err := v1Layers(&ij, []digest.Digest{d})
	if err != nil {
		t.Fatal(err)
	}
	im := &image{id: digest.FromBytes(cfg), config: cfg, created: time.Unix(1577836800, 0), diffIDs: []digest.Digest{d},
		layers: []ocispec.Descriptor{desc}, sizes: []int64{size}, v1: v1}
	if im.manifest, err = ociManifest(im.id, int64(len(cfg)), im.diffIDs, im.sizes); err != nil {
		t.Fatal(err)
	}
	a, err := plan([]*image{im}, fakeLayers(func(ocispec.Descriptor) (io.ReaderAt, int64, error) { return zeroReader{}, size, nil }))
	if err != nil {
		t.Fatal(err)
	}
	// Read all but the layer's content, and feed that to archive/tar.
	var m *member
	for i := range a.members {
		if a.members[i].desc != nil {
			m = &a.members[i]
		}
	}
	if m == nil || len(m.hdr) != 3*512 {
		t.Fatalf("layer member %+v", m)
	}
	r := io.MultiReader(io.NewSectionReader(a, 0, m.off+int64(len(m.hdr))+4096), io.LimitReader(zeroReader2{}, size-4096),
		io.NewSectionReader(a, m.off+int64(len(m.hdr))+size, a.size))
	tr := tar.NewReader(r)
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if h.Name == "blobs/sha256/"+d.Encoded() && (h.Size != size || h.Format != tar.FormatPAX) {
			t.Errorf("huge member: size %d format %v", h.Size, h.Format)
		}
	}
	if len(names) != 9 {
		t.Errorf("members %q", names)
	}
}

type zeroReader2 struct{}

func (zeroReader2) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestDocuments checks documents the fixture has no example of against docker's encoding.
func TestDocuments(t *testing.T) {
	a, b := digest.FromString("a"), digest.FromString("b")
	m, err := ociManifest(digest.FromString("c"), 12, []digest.Digest{a, b}, []int64{1024, 2048})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` +
		digest.FromString("c").String() + `","size":12},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"` + a.String() +
		`","size":1024},{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"` + b.String() + `","size":2048}]}`
	if string(m) != want {
		t.Errorf("OCI manifest\n%s\nwant\n%s", m, want)
	}
	if c := chainIDs([]digest.Digest{a, b}); c[0] != a || c[1] != digest.FromString(a.String()+" "+b.String()) {
		t.Errorf("chain IDs %v", c)
	}

	// Cmd as a string, a parent that is not the v1 one, fields docker drops.
	cfg := `{"created":"2023-01-02T03:04:05.5+02:00","parent":"sha256:x","os":"linux","config":{"Cmd":"serve","Foo":1,"Labels":{"z":"<","a":"&"}},` +
		`"rootfs":{"type":"layers","diff_ids":["` + a.String() + `","` + b.String() + `"]},"history":[{}]}`
	var ij imageJSON
	if err := json.Unmarshal([]byte(cfg), &ij); err != nil {
		t.Fatal(err)
	}
	v1, err := v1Layers(&ij, ij.RootFS.DiffIDs)
	if err != nil {
		t.Fatal(err)
	}
	empty := `"container_config":{"Hostname":"","Domainname":"","User":"","AttachStdin":false,"AttachStdout":false,"AttachStderr":false,` +
		`"Tty":false,"OpenStdin":false,"StdinOnce":false,"Env":null,"Cmd":null,"Image":"","Volumes":null,"WorkingDir":"","Entrypoint":null,"OnBuild":null,"Labels":null}`
	var bottom struct{ ID string }
	json.Unmarshal(v1[0], &bottom)
	if want := `{"id":"` + bottom.ID + `","created":"1970-01-01T00:00:00Z",` + empty + `,"os":"linux"}`; string(v1[0]) != want {
		t.Errorf("bottom v1 JSON\n%s\nwant\n%s", v1[0], want)
	}
	var top struct{ ID string }
	json.Unmarshal(v1[1], &top)
	want = `{"id":"` + top.ID + `","parent":"` + bottom.ID + `","created":"2023-01-02T03:04:05.5+02:00",` + empty +
		`,"config":{"Hostname":"","Domainname":"","User":"","AttachStdin":false,"AttachStdout":false,"AttachStderr":false,"Tty":false,"OpenStdin":false,"StdinOnce":false,` +
		`"Env":null,"Cmd":["serve"],"Image":"","Volumes":null,"WorkingDir":"","Entrypoint":null,"OnBuild":null,"Labels":{"a":"\u0026","z":"\u003c"}},"os":"linux"}`
	if string(v1[1]) != want {
		t.Errorf("top v1 JSON\n%s\nwant\n%s", v1[1], want)
	}
	// The ids are v1.CreateID's: the JSON without id, plus layer_id and parent, keys sorted.
	wantBottom := digest.FromString(`{"container_config":` + strings.TrimPrefix(empty, `"container_config":`) +
		`,"created":"1970-01-01T00:00:00Z","layer_id":"` + a.String() + `"}`)
	if bottom.ID != wantBottom.Encoded() {
		t.Errorf("bottom v1 id %s, want %s", bottom.ID, wantBottom.Encoded())
	}
}
