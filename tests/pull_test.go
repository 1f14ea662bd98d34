package tests

import (
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/distribution/reference"
	"github.com/imgfs/imgfs/store"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestPull: an image pushed to a registry with skopeo, pulled with imgfs pull into an
// empty store, is the same image: manifest digest, rootfs/ entry by entry, export.tar byte
// for byte. A second pull is up to date and fetches no blob; a missing tag is one line.
func TestPull(t *testing.T) {
	r := startRegistry(t)
	tmp := t.TempDir()
	ref := r.host + "/test/app:1"

	// The original, named as it will be pulled so that both export.tar name it alike.
	orig := filepath.Join(tmp, "orig")
	_, img := origImage(t, orig, ref)
	// The store's org.opencontainers.image.ref.name is the tag: skopeo's oci:DIR:1.
	r.skopeoPush(t, orig, "1", "test/app:1")

	pulled := filepath.Join(tmp, "pulled")
	res := imgfs(t, pulled, "pull", ref)
	if res.code != 0 {
		t.Fatalf("imgfs pull %s: exit %d\nstdout:\n%s\nstderr:\n%s\nregistry log:\n%s", ref, res.code, res.stdout, res.stderr, r.logTail())
	}
	for _, want := range []string{"Pulling fs layer", "Download complete", "Pull complete"} {
		if !strings.Contains(res.stderr, want) {
			t.Errorf("imgfs pull stderr lacks %q:\n%s", want, res.stderr)
		}
	}
	if want := "Digest: " + img.manifest.Digest.String() + "\nStatus: Downloaded newer image for " + ref + "\n"; res.stdout != want {
		t.Errorf("imgfs pull stdout:\n%s\nwant:\n%s", res.stdout, want)
	}
	got := resolveIn(t, pulled, ref)
	if got.Target.Digest != img.manifest.Digest || got.ID != img.id {
		t.Fatalf("pulled manifest %s, image ID %s; want %s, %s", got.Target.Digest, got.ID, img.manifest.Digest, img.id)
	}
	gets := len(r.blobGets(t))
	if gets != 3 {
		t.Errorf("first pull: %d blob GETs, want 3 (config, 2 layers):\n%s", gets, strings.Join(r.blobGets(t), "\n"))
	}

	mntOrig, _ := mountStore(t, orig)
	mntPulled, _ := mountStore(t, pulled)
	dir := filepath.Join(r.host, "test", "app", "1")
	diffs, err := compareTrees(filepath.Join(mntPulled, dir, "rootfs"), filepath.Join(mntOrig, dir, "rootfs"),
		cmpOpts{dirMtime: true, rootMeta: true})
	if err != nil {
		t.Fatal(err)
	}
	reportDiffs(t, "rootfs/ of the pulled image vs the original", diffs)
	ok(t, "", "cmp", filepath.Join(mntPulled, dir, "export.tar"), filepath.Join(mntOrig, dir, "export.tar"))

	// Again: up to date, no blob fetched.
	before, err := os.ReadFile(filepath.Join(pulled, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	res = imgfs(t, pulled, "pull", ref)
	if res.code != 0 {
		t.Fatalf("second imgfs pull: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if !strings.Contains(res.stdout, "Status: Image is up to date for "+ref) {
		t.Errorf("second pull stdout:\n%s\nwant \"Image is up to date\"", res.stdout)
	}
	if g := r.blobGets(t); len(g) != gets {
		t.Errorf("second pull fetched blobs again:\n%s", strings.Join(g[gets:], "\n"))
	}
	after, err := os.ReadFile(filepath.Join(pulled, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	if string(before) != string(after) {
		t.Errorf("index.json changed on an up-to-date pull:\n%s\nwas:\n%s", after, before)
	}

	// By digest into an empty store: unnamed, reachable by its image ID.
	byDigest := r.host + "/test/app@" + img.manifest.Digest.String()
	other := filepath.Join(tmp, "bydigest")
	res = imgfs(t, other, "pull", byDigest)
	if res.code != 0 || !strings.Contains(res.stdout, "Status: Downloaded newer image for "+byDigest) {
		t.Errorf("imgfs pull %s: exit %d\nstdout:\n%s\nstderr:\n%s", byDigest, res.code, res.stdout, res.stderr)
	}
	if out := imgfsOK(t, other, "inspect", img.id.String()); !strings.Contains(out, img.manifest.Digest.String()) {
		t.Errorf("imgfs inspect %s after a pull by digest:\n%s", img.id, out)
	}

	// -q: nothing.
	if res := imgfs(t, pulled, "pull", "-q", ref); res.code != 0 || res.stdout != "" || res.stderr != "" {
		t.Errorf("imgfs pull -q: exit %d, stdout %q, stderr %q", res.code, res.stdout, res.stderr)
	}

	// A missing tag, a missing repository: exit 1, one line naming it.
	for _, c := range []struct{ ref, want string }{
		{r.host + "/test/app:2", "tag 2 not found in repository test/app on registry " + r.host},
		{r.host + "/test/nothing:1", "repository test/nothing not found on registry " + r.host},
	} {
		res := imgfs(t, pulled, "pull", c.ref)
		lines := strings.Split(strings.TrimSpace(res.stderr), "\n")
		if res.code != 1 || len(lines) != 1 || !strings.Contains(lines[0], c.want) {
			t.Errorf("imgfs pull %s: exit %d, stderr:\n%s\nwant exit 1 and one line with %q", c.ref, res.code, res.stderr, c.want)
		}
	}
}

// TestPullWrongDiffID: an image whose config names other diffIDs than its layers have is
// refused, with one line naming the registry and the layer, and the store is left as it
// was: index.json the same, nothing in blobs/, nothing in .imgfs/tmp but the verified
// blobs it finished, kept for the next pull.
func TestPullWrongDiffID(t *testing.T) {
	r := startRegistry(t)
	tmp := t.TempDir()
	orig := filepath.Join(tmp, "orig")
	img := r.pushWrongDiffID(t, orig)

	pulled := filepath.Join(tmp, "pulled")
	if _, err := store.Open(pulled); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(filepath.Join(pulled, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	ref := r.host + "/test/bad:x"
	res := imgfs(t, pulled, "pull", ref)
	lines := strings.Split(strings.TrimSpace(res.stderr), "\n")
	last := lines[len(lines)-1]
	if res.code != 1 || !strings.Contains(last, "diffID") || !strings.Contains(last, r.host) ||
		!strings.Contains(last, img.layers[1].Digest.String()) {
		t.Errorf("imgfs pull %s: exit %d, stderr:\n%s\nwant exit 1, a last line naming the registry, layer %s and its diffID",
			ref, res.code, res.stderr, img.layers[1].Digest)
	}
	after, err := os.ReadFile(filepath.Join(pulled, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	if string(after) != string(before) {
		t.Errorf("index.json changed by a failed pull:\n%s", after)
	}
	if names := dirNames(t, filepath.Join(pulled, "blobs", "sha256")); len(names) > 0 {
		t.Errorf("a failed pull left blobs/sha256: %s", strings.Join(names, " "))
	}
	// Only the verified blobs it finished are kept in temp, for the next pull.
	if names := dirNames(t, filepath.Join(pulled, ".imgfs", "tmp")); len(names) > 1 || (len(names) == 1 && names[0] != "verified") {
		t.Errorf("a failed pull left .imgfs/tmp: %s", strings.Join(names, " "))
	}
	checkKept(t, pulled)
}

// dirNames returns the names in directory dir (none if it does not exist).
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// checkKept checks the blobs a failed pull kept in the store at dir (.imgfs/tmp/verified):
// each hashes to the digest it is named by, beside at most its layer index, and returns
// their digests.
func checkKept(t *testing.T, dir string) []digest.Digest {
	t.Helper()
	kept := filepath.Join(dir, ".imgfs", "tmp", "verified")
	var ds []digest.Digest
	for _, n := range dirNames(t, kept) {
		if strings.HasSuffix(n, ".index") {
			continue
		}
		alg, enc, _ := strings.Cut(n, "-")
		d := digest.NewDigestFromEncoded(digest.Algorithm(alg), enc)
		data, err := os.ReadFile(filepath.Join(kept, n))
		if err != nil {
			t.Fatal(err)
		}
		if d.Validate() != nil || digest.FromBytes(data) != d {
			t.Errorf("kept blob %s does not hash to its name", n)
		}
		ds = append(ds, d)
	}
	return ds
}

// TestPullMultiPlatform: of an image index pushed with skopeo --all, a pull takes the index
// and this machine's manifest, or --platform's.
func TestPullMultiPlatform(t *testing.T) {
	r := startRegistry(t)
	tmp := t.TempDir()
	orig := filepath.Join(tmp, "orig")
	mp := multiPlatformImage(t, r, orig, "test/multi:1")

	ref := r.host + "/test/multi:1"
	for _, c := range []struct {
		platform string
		want     ocispec.Descriptor
		id       digest.Digest
	}{
		{"", mp.host.manifest, mp.host.id},
		{"linux/" + mp.otherArch, mp.other, mp.otherConfig.Digest},
	} {
		dir := filepath.Join(tmp, "pulled-"+strings.ReplaceAll(c.platform, "/", "-"))
		args := []string{"pull", ref}
		if c.platform != "" {
			args = append([]string{"--platform", c.platform}, args...)
		}
		res := imgfs(t, dir, args...)
		if res.code != 0 || !strings.Contains(res.stdout, "Digest: "+mp.index.Digest.String()) {
			t.Fatalf("imgfs %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), res.code, res.stdout, res.stderr)
		}
		ps, err := store.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		if c.platform != "" {
			if ps.Platform, err = store.ParsePlatform(c.platform); err != nil {
				t.Fatal(err)
			}
		}
		img, err := ps.Resolve(ref)
		if err != nil {
			t.Fatalf("platform %q: %v", c.platform, err)
		}
		if img.Target.Digest != mp.index.Digest || img.Descriptor.Digest != c.want.Digest || img.ID != c.id {
			t.Errorf("platform %q: pulled index %s, manifest %s, ID %s; want %s, %s, %s", c.platform,
				img.Target.Digest, img.Descriptor.Digest, img.ID, mp.index.Digest, c.want.Digest, c.id)
		}
	}
}

// multiPlatform is the image multiPlatformImage makes: an image index of this machine's
// image (origImage's) and another architecture's of its first layer.
type multiPlatform struct {
	host        image
	other       ocispec.Descriptor // the other architecture's manifest
	otherConfig ocispec.Descriptor
	otherArch   string
	index       ocispec.Descriptor
}

// multiPlatformImage makes a store at dir with a multi-platform image in it, tagged as
// repoTag ("test/multi:1"), and pushes it to the registry as that with skopeo --all.
func multiPlatformImage(t *testing.T, r *testRegistry, dir, repoTag string) multiPlatform {
	t.Helper()
	s, host := origImage(t, dir, "")
	otherArch := "arm64"
	if runtime.GOARCH == "arm64" {
		otherArch = "amd64"
	}
	created := mtime
	cd, err := putJSON(s, ocispec.MediaTypeImageConfig, ocispec.Image{
		Created:  &created,
		Platform: ocispec.Platform{OS: "linux", Architecture: otherArch},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: host.diffIDs[:1]},
	})
	if err != nil {
		t.Fatal(err)
	}
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: cd, Layers: host.layers[:1]}
	m.SchemaVersion = 2
	other, err := putJSON(s, ocispec.MediaTypeImageManifest, m)
	if err != nil {
		t.Fatal(err)
	}
	hostDesc := host.manifest
	hostDesc.Platform = &ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH}
	otherDesc := other
	otherDesc.Platform = &ocispec.Platform{OS: "linux", Architecture: otherArch}
	ix := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{otherDesc, hostDesc}}
	ix.SchemaVersion = 2
	index, err := putJSON(s, ocispec.MediaTypeImageIndex, ix)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := reference.ParseNormalizedNamed(repoTag)
	if err := s.Tag(n, index); err != nil {
		t.Fatal(err)
	}
	skopeo := needProgram(t, "skopeo", "skopeo")
	tag := repoTag[strings.LastIndex(repoTag, ":")+1:]
	ok(t, "", skopeo, "copy", "--quiet", "--all", "--dest-tls-verify=false", "oci:"+dir+":"+tag, "docker://"+r.host+"/"+repoTag)
	return multiPlatform{host: host, other: other, otherConfig: cd, otherArch: otherArch, index: index}
}

// origImage makes a store at dir with the test image of two layers in it, named name
// ("": untagged): the original a test pushes to its registry.
func origImage(t *testing.T, dir, name string) (*store.Store, image) {
	t.Helper()
	s, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	img, err := writeImage(s, name, layer0(), layer1())
	if err != nil {
		t.Fatal(err)
	}
	return s, img
}

// resolveIn opens the store at dir and resolves ref in it.
func resolveIn(t *testing.T, dir, ref string) store.Image {
	t.Helper()
	s, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	img, err := s.Resolve(ref)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// pushWrongDiffID writes into a store at orig the image of layer0 and layer1 whose config
// gives layer 1 another diffID, as test/bad:x, and pushes it with skopeo to r as
// test/bad:x (skopeo checks no diffID). It returns the image the layers came from.
func (r *testRegistry) pushWrongDiffID(t *testing.T, orig string) image {
	t.Helper()
	s, img := origImage(t, orig, "")
	diffIDs := slices.Clone(img.diffIDs)
	diffIDs[1] = digest.FromString("not the layer")
	created := mtime
	cd, err := putJSON(s, ocispec.MediaTypeImageConfig, ocispec.Image{
		Created:  &created,
		Platform: ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: diffIDs},
	})
	if err != nil {
		t.Fatal(err)
	}
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: cd, Layers: img.layers}
	m.SchemaVersion = 2
	md, err := putJSON(s, ocispec.MediaTypeImageManifest, m)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := reference.ParseNormalizedNamed("test/bad:x")
	if err := s.Tag(n, md); err != nil {
		t.Fatal(err)
	}
	r.skopeoPush(t, orig, "x", "test/bad:x")
	return img
}
