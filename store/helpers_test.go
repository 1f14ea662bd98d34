package store

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"github.com/imgfs/imgfs/internal/testimg"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func openStore(t testing.TB) *Store {
	t.Helper()
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// gzipLayer makes a gzip-compressed tar layer holding files (name -> content).
func gzipLayer(t testing.TB, files map[string]string) []byte {
	t.Helper()
	bs := make(map[string][]byte, len(files))
	for n, body := range files {
		bs[n] = []byte(body)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(testimg.Tar(t, bs))
	zw.Close()
	return gz.Bytes()
}

// testImage is an image written into a store by writeImage.
type testImage struct {
	Manifest ocispec.Descriptor
	Config   digest.Digest
	Layer    ocispec.Descriptor
}

// imageOpts say how writeImage builds an image.
type imageOpts struct {
	Files    map[string]string // layer content; a default file if nil
	Platform ocispec.Platform  // config os/arch; host if empty
	Docker   bool              // Docker schema 2 media types instead of OCI
}

// putJSON stores v as a blob and returns its descriptor.
func putJSON(t testing.TB, s *Store, mediaType string, v any) ocispec.Descriptor {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return putBlob(t, s, mediaType, data)
}

func putBlob(t testing.TB, s *Store, mediaType string, data []byte) ocispec.Descriptor {
	t.Helper()
	d, n, err := s.WriteBlob(bytes.NewReader(data), digest.FromBytes(data))
	if err != nil {
		t.Fatal(err)
	}
	return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: n}
}

// writeImage writes a one-layer image's blobs (layer, config, manifest) into s.
func writeImage(t testing.TB, s *Store, o imageOpts) testImage {
	t.Helper()
	if o.Files == nil {
		o.Files = map[string]string{"etc/hostname": "imgfs\n"}
	}
	if o.Platform.OS == "" {
		o.Platform = ocispec.Platform{OS: hostPlatform.OS, Architecture: hostPlatform.Architecture, Variant: hostPlatform.Variant}
	}
	layerMT, configMT, manifestMT := ocispec.MediaTypeImageLayerGzip, ocispec.MediaTypeImageConfig, ocispec.MediaTypeImageManifest
	if o.Docker {
		layerMT, configMT, manifestMT = MediaTypeDockerLayerGzip, MediaTypeDockerConfig, MediaTypeDockerManifest
	}
	layer := gzipLayer(t, o.Files)
	ld := putBlob(t, s, layerMT, layer)
	ix, err := gzipDiffID(layer)
	if err != nil {
		t.Fatal(err)
	}
	cfg := ocispec.Image{Platform: o.Platform, RootFS: ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{ix}}}
	cd := putJSON(t, s, configMT, cfg)
	m := ocispec.Manifest{MediaType: manifestMT, Config: cd, Layers: []ocispec.Descriptor{ld}}
	m.SchemaVersion = 2
	md := putJSON(t, s, manifestMT, m)
	return testImage{Manifest: md, Config: cd.Digest, Layer: ld}
}

func gzipDiffID(blob []byte) (digest.Digest, error) {
	zr, err := gzip.NewReader(bytes.NewReader(blob))
	if err != nil {
		return "", err
	}
	return digest.FromReader(zr)
}

// writeIndex writes an image index of the given manifests (each with its platform).
func writeIndex(t testing.TB, s *Store, docker bool, children ...ocispec.Descriptor) ocispec.Descriptor {
	t.Helper()
	mt := ocispec.MediaTypeImageIndex
	if docker {
		mt = MediaTypeDockerManifestList
	}
	ix := ocispec.Index{MediaType: mt, Manifests: children}
	ix.SchemaVersion = 2
	return putJSON(t, s, mt, ix)
}

func withPlatform(d ocispec.Descriptor, p ocispec.Platform) ocispec.Descriptor {
	d.Platform = &p
	return d
}

// otherPlatform is a platform that is not the host's.
func otherPlatform() ocispec.Platform {
	if hostPlatform.Architecture == "arm64" {
		return ocispec.Platform{OS: "linux", Architecture: "amd64"}
	}
	return ocispec.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}
}

func mustName(t testing.TB, s string) reference.Named {
	t.Helper()
	n, err := reference.ParseNormalizedNamed(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// snapshot lists every file and directory under root with its mode and, for files, the
// sha256 of its content: two equal snapshots are byte-identical trees.
func snapshot(t testing.TB, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		v := fi.Mode().String()
		if fi.Mode().IsRegular() {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h := sha256.Sum256(data)
			v += " " + hex.EncodeToString(h[:])
		}
		out[rel] = v
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func diffSnapshots(a, b map[string]string) []string {
	var d []string
	for k, v := range a {
		if b[k] != v {
			d = append(d, k+": "+v+" -> "+b[k])
		}
	}
	for k, v := range b {
		if _, ok := a[k]; !ok {
			d = append(d, k+": (none) -> "+v)
		}
	}
	sort.Strings(d)
	return d
}

func readIndexJSON(t testing.TB, s *Store) ocispec.Index {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(s.Root(), "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ix ocispec.Index
	if err := json.Unmarshal(data, &ix); err != nil {
		t.Fatalf("index.json: %v\n%s", err, data)
	}
	return ix
}
