package tests

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// lent is one member of a layer written by writeLayout: a tar header (ModTime zero means
// "the layer's default") and its body.
type lent struct {
	hdr  tar.Header
	body []byte
}

func ldir(name string, mode int64) lent {
	return lent{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode}}
}

func lfile(name string, mode int64, body string) lent {
	return lent{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(body))}, body: []byte(body)}
}

func lsym(name, target string) lent {
	return lent{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777}}
}

func llink(name, target string) lent {
	return lent{hdr: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target, Mode: 0o644}}
}

// writeLayout writes an OCI image layout at dir (created) holding one image of the given
// layers (tar+gzip, BestSpeed), named ref (a bare tag) by org.opencontainers.image.ref.name.
// Entry i of layer l without a ModTime gets base + l*100000 + i seconds, so mtimes differ.
func writeLayout(dir, ref string, base time.Time, layers ...[]lent) error {
	blobs := filepath.Join(dir, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, ocispec.ImageLayoutFile), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
		return err
	}
	var descs []ocispec.Descriptor
	var diffIDs []digest.Digest
	for l, ents := range layers {
		desc, diffID, err := writeLayer(blobs, ents, base.Add(time.Duration(l)*100000*time.Second))
		if err != nil {
			return fmt.Errorf("layer %d: %v", l, err)
		}
		descs = append(descs, desc)
		diffIDs = append(diffIDs, diffID)
	}
	created := base
	cfg := ocispec.Image{
		Created:  &created,
		Platform: ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: diffIDs},
	}
	cd, err := writeJSONBlob(blobs, ocispec.MediaTypeImageConfig, cfg)
	if err != nil {
		return err
	}
	m := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: cd, Layers: descs}
	md, err := writeJSONBlob(blobs, ocispec.MediaTypeImageManifest, m)
	if err != nil {
		return err
	}
	md.Annotations = map[string]string{ocispec.AnnotationRefName: ref}
	ix := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{md}}
	data, err := json.Marshal(ix)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "index.json"), data, 0o644)
}

// writeLayer streams ents as tar+gzip into blobs, hashing the tar (diffID) and the blob.
func writeLayer(blobs string, ents []lent, base time.Time) (ocispec.Descriptor, digest.Digest, error) {
	var desc ocispec.Descriptor
	f, err := os.CreateTemp(blobs, "layer-")
	if err != nil {
		return desc, "", err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	blobH, diffH := sha256.New(), sha256.New()
	cw := &countWriter{w: io.MultiWriter(f, blobH)}
	zw, _ := gzip.NewWriterLevel(cw, gzip.BestSpeed)
	tw := tar.NewWriter(io.MultiWriter(zw, diffH))
	for i, e := range ents {
		h := e.hdr
		if h.ModTime.IsZero() {
			h.ModTime = base.Add(time.Duration(i) * time.Second)
		}
		if h.PAXRecords != nil {
			h.Format = tar.FormatPAX
		}
		if err := tw.WriteHeader(&h); err != nil {
			return desc, "", fmt.Errorf("%s: %v", h.Name, err)
		}
		if _, err := tw.Write(e.body); err != nil {
			return desc, "", fmt.Errorf("%s: %v", h.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return desc, "", err
	}
	if err := zw.Close(); err != nil {
		return desc, "", err
	}
	if err := f.Close(); err != nil {
		return desc, "", err
	}
	sum := hex.EncodeToString(blobH.Sum(nil))
	if err := os.Rename(f.Name(), filepath.Join(blobs, sum)); err != nil {
		return desc, "", err
	}
	desc = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.Digest("sha256:" + sum), Size: cw.n}
	return desc, digestOf(diffH), nil
}

func digestOf(h hash.Hash) digest.Digest {
	return digest.Digest("sha256:" + hex.EncodeToString(h.Sum(nil)))
}

func writeJSONBlob(blobs, mediaType string, v any) (ocispec.Descriptor, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	d := digest.FromBytes(data)
	if err := os.WriteFile(filepath.Join(blobs, d.Encoded()), data, 0o644); err != nil {
		return ocispec.Descriptor{}, err
	}
	return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(data))}, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
