package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/imgfs/imgfs/internal/testimg"
)

// ociLayout writes an OCI image layout of a one-layer image into a new directory and
// returns it with the layer's digest. refName is the index.json annotation ("" for none);
// a layer of bigSize random bytes (incompressible, so the blob is as big) if > 0.
func ociLayout(t *testing.T, refName string, bigSize int) (string, digest.Digest) {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{"etc/hostname": refName + "\n"}
	if bigSize > 0 {
		b := make([]byte, bigSize)
		r := rand.NewChaCha8([32]byte{1})
		r.Read(b)
		files["big"] = string(b)
	}
	tarball, gz := layerTar(t, files)
	put := func(data []byte) digest.Digest {
		return testimg.WriteBlob(t, dir, "", data).Digest
	}
	mustJSON := func(v any) []byte {
		data, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	layer := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: put(gz), Size: int64(len(gz))}
	cfg := mustJSON(ocispec.Image{
		Platform: ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{digest.FromBytes(tarball)}},
	})
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest,
		Config: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: put(cfg), Size: int64(len(cfg))},
		Layers: []ocispec.Descriptor{layer}}
	m.SchemaVersion = 2
	md := mustJSON(m)
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: put(md), Size: int64(len(md))}
	if refName != "" {
		desc.Annotations = map[string]string{ocispec.AnnotationRefName: refName}
	}
	ix := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{desc}}
	ix.SchemaVersion = 2
	if err := os.WriteFile(filepath.Join(dir, "index.json"), mustJSON(ix), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, layer.Digest
}

// tarDir makes an oci-archive of a layout directory.
func tarDir(t *testing.T, dir string) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	if err := tw.AddFS(os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestImport(t *testing.T) {
	store := t.TempDir()
	big, bigLayer := ociLayout(t, "example.com/app:v1", 1_500_000)

	// Progress of the big layer, as lines: stderr is no terminal here.
	r := imgfsOK(t, store, "import", big)
	if r.stdout != "Loaded image: example.com/app:v1\n" {
		t.Errorf("import: stdout %q", r.stdout)
	}
	short := "sha256:" + bigLayer.Encoded()[:12] + "…"
	if want := "Importing " + short + " (1.5MB)\n" + short + ": done\n"; r.stderr != want {
		t.Errorf("import: stderr %q, want %q", r.stderr, want)
	}
	if r := imgfsOK(t, store, "ls", "example.com/app"); !regexp.MustCompile(`\nexample.com/app +v1 +[0-9a-f]{12} +N/A +1\.5\d?MB\n$`).MatchString(r.stdout) {
		t.Errorf("ls after import:\n%s", r.stdout)
	}

	// --quiet: no progress; --name names the image.
	r = imgfsOK(t, store, "load", "--quiet", "--name", "busybox:1", big)
	if !strings.Contains(r.stdout, "Loaded image: busybox:1\n") || r.stderr != "" {
		t.Errorf("import --quiet --name: %+v", r)
	}

	// From stdin, an oci-archive; an image without name is loaded by ID.
	anon, _ := ociLayout(t, "", 0)
	r = imgfsIn(t, tarDir(t, anon), nil, "--store", store, "import", "-")
	if r.code != 0 || !regexp.MustCompile(`^Loaded image ID: sha256:[0-9a-f]{64}\n$`).MatchString(r.stdout) || r.stderr != "" {
		t.Errorf("import - (no name): %+v", r)
	}

	// Failures: one line each, the others still imported; usage errors.
	small, _ := ociLayout(t, "small:v1", 0)
	r = imgfsIn(t, nil, nil, "--store", store, "import", filepath.Join(store, "nope"), small)
	if r.code != 1 || r.stdout != "Loaded image: small:v1\n" || strings.Count(r.stderr, "\n") != 1 ||
		!strings.HasPrefix(r.stderr, "imgfs: ") || !strings.Contains(r.stderr, "nope") {
		t.Errorf("import nope small: %+v", r)
	}
	for _, args := range [][]string{{"import"}, {"import", "--name", "a:b", big, small}, {"import", "-", "-"}} {
		if r := imgfsIn(t, nil, nil, append([]string{"--store", store}, args...)...); r.code != 2 {
			t.Errorf("imgfs %s: %+v", strings.Join(args, " "), r)
		}
	}
}
