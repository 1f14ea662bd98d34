package tests

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/distribution/reference"
	"github.com/imgfs/imgfs/store"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// mtime of every entry of the test layers.
var mtime = time.Unix(1700000000, 0)

// capability is a security.capability value (VFS_CAP_REVISION_2, cap_net_bind_service
// permitted and effective).
var capability = []byte{0x01, 0, 0, 0x02, 0x00, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}

// bigFile is the 5 MiB file of layer 0: more than one 4 MiB decoding span.
var bigFile = func() []byte {
	b := make([]byte, 5<<20)
	r := rand.New(rand.NewChaCha8([32]byte{1}))
	for i := 0; i < len(b); i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < len(b); j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}()

// entry is one member of a test layer.
type entry struct {
	hdr  tar.Header
	body []byte
}

func dir(name string, mode int64) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode}}
}

func file(name string, mode int64, body string) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(body))}, body: []byte(body)}
}

// layer0 has one of every kind of entry.
func layer0() []entry {
	cap := file("bin/cap", 0o755, "#!/bin/sh\necho cap\n")
	cap.hdr.PAXRecords = map[string]string{
		"SCHILY.xattr.user.foo":            "bar",
		"SCHILY.xattr.security.capability": string(capability),
	}
	owned := file("etc/hello.txt", 0o640, "hello\n")
	owned.hdr.Uid, owned.hdr.Gid = 1000, 1001
	big := entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "big/5m", Mode: 0o644, Size: int64(len(bigFile))}, body: bigFile}
	return []entry{
		dir("bin/", 0o755),
		file("bin/tool", 0o755, "#!/bin/sh\necho tool\n"),
		{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/link", Linkname: "tool", Mode: 0o777}},
		{hdr: tar.Header{Typeflag: tar.TypeLink, Name: "bin/tool2", Linkname: "bin/tool", Mode: 0o755}},
		file("bin/su", 0o4755, "setuid\n"),
		cap,
		dir("big/", 0o755),
		big,
		dir("dev/", 0o755),
		{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "dev/null", Mode: 0o666, Devmajor: 1, Devminor: 3}},
		{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "dev/tty300", Mode: 0o620, Devmajor: 4, Devminor: 300}},
		{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "dev/fifo", Mode: 0o644}},
		dir("etc/", 0o755),
		owned,
		file("gone.txt", 0o644, "to be deleted\n"),
		dir("old/", 0o755),
		file("old/a", 0o644, "a\n"),
		file("old/b", 0o644, "b\n"),
		dir("opq/", 0o755),
		file("opq/x", 0o644, "x\n"),
		dir("tmp/", 0o1777),
	}
}

// layer1 deletes, hides, changes and links to what layer 0 has.
func layer1() []entry {
	return []entry{
		file(".wh.gone.txt", 0o644, ""),
		{hdr: tar.Header{Typeflag: tar.TypeLink, Name: "bin/tool3", Linkname: "bin/tool", Mode: 0o755}}, // into layer 0
		file("etc/hello.txt", 0o644, "hello again\n"),
		file("old/.wh.a", 0o644, ""),
		dir("opq/", 0o755),
		file("opq/.wh..wh..opq", 0o644, ""),
		file("opq/y", 0o644, "y\n"),
	}
}

// makeTar writes entries as a tar and its gzip.
func makeTar(entries []entry) (tarball, gz []byte, err error) {
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	for _, e := range entries {
		h := e.hdr
		h.ModTime = mtime
		if h.PAXRecords != nil {
			h.Format = tar.FormatPAX
		}
		if err := tw.WriteHeader(&h); err != nil {
			return nil, nil, fmt.Errorf("%s: %v", h.Name, err)
		}
		if _, err := tw.Write(e.body); err != nil {
			return nil, nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, nil, err
	}
	var zb bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&zb, gzip.BestSpeed)
	zw.Write(tb.Bytes())
	if err := zw.Close(); err != nil {
		return nil, nil, err
	}
	return tb.Bytes(), zb.Bytes(), nil
}

// image is a test image written into a store.
type image struct {
	manifest ocispec.Descriptor
	id       digest.Digest
	layers   []ocispec.Descriptor
	diffIDs  []digest.Digest
}

// writeImage writes an image of the given layers (tar+gzip) into s with the store's API
// and, if name is not empty, tags it.
func writeImage(s *store.Store, name string, layers ...[]entry) (image, error) {
	return writeImageAs(s, name, ocispec.MediaTypeImageLayerGzip, layers...)
}

// writeImageAs is writeImage with layers of mediaType: tar+gzip, tar+zstd in one frame, or
// plain tar.
func writeImageAs(s *store.Store, name, mediaType string, layers ...[]entry) (image, error) {
	return writeImageWith(s, name, mediaType, nil, layers...)
}

// writeImageWith is writeImageAs with history as the config's.
func writeImageWith(s *store.Store, name, mediaType string, history []ocispec.History, layers ...[]entry) (image, error) {
	var img image
	for _, ents := range layers {
		tarball, blob, err := makeTar(ents)
		if err != nil {
			return img, err
		}
		switch mediaType {
		case ocispec.MediaTypeImageLayerZstd:
			enc, _ := zstd.NewWriter(nil)
			blob = enc.EncodeAll(tarball, nil)
			enc.Close()
		case ocispec.MediaTypeImageLayer:
			blob = tarball
		}
		desc := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(blob), Size: int64(len(blob))}
		if _, err := s.WriteLayer(bytes.NewReader(blob), desc); err != nil {
			return img, err
		}
		img.layers = append(img.layers, desc)
		img.diffIDs = append(img.diffIDs, digest.FromBytes(tarball))
	}
	created := mtime
	cfg := ocispec.Image{
		Created:  &created,
		Platform: ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: img.diffIDs},
		History:  history,
	}
	cd, err := putJSON(s, ocispec.MediaTypeImageConfig, cfg)
	if err != nil {
		return img, err
	}
	img.id = cd.Digest
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: cd, Layers: img.layers}
	m.SchemaVersion = 2
	if img.manifest, err = putJSON(s, ocispec.MediaTypeImageManifest, m); err != nil {
		return img, err
	}
	if name != "" {
		n, err := reference.ParseNormalizedNamed(name)
		if err != nil {
			return img, err
		}
		if err := s.Tag(n, img.manifest); err != nil {
			return img, err
		}
	}
	return img, nil
}

func putJSON(s *store.Store, mediaType string, v any) (ocispec.Descriptor, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	d, n, err := s.WriteBlob(bytes.NewReader(data), digest.FromBytes(data))
	return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: n}, err
}

// fixture is a store with the test images, mounted.
type fixture struct {
	tmp, store, mnt string
	pid             int
	app             image  // test/app:v1 and ghcr.io/acme/app:v2
	helloID         string // the image ID of hello-world, imported from the docker save fixture
}

// appDir is test/app:v1's directory in the mount.
func (f *fixture) appDir() string { return filepath.Join(f.mnt, "test", "app", "v1") }

func newFixture() (*fixture, error) {
	tmp, err := os.MkdirTemp("", "imgfs-e2e-store-")
	if err != nil {
		return nil, err
	}
	f := &fixture{tmp: tmp, store: filepath.Join(tmp, "store"), mnt: filepath.Join(tmp, "mnt")}
	fail := func(err error) (*fixture, error) {
		f.close()
		return nil, err
	}
	s, err := store.Open(f.store)
	if err != nil {
		return fail(err)
	}
	if f.app, err = writeImage(s, "test/app:v1", layer0(), layer1()); err != nil {
		return fail(err)
	}
	n, _ := reference.ParseNormalizedNamed("ghcr.io/acme/app:v2")
	if err := s.Tag(n, f.app.manifest); err != nil {
		return fail(err)
	}
	out, err := exec.Command(imgfsBin, "--store", f.store, "import", "-q", "../../shared/fixtures/hello-world-v25.tar").CombinedOutput()
	if err != nil {
		return fail(fmt.Errorf("imgfs import hello-world: %v: %s", err, out))
	}
	m := regexp.MustCompile(`sha256:[0-9a-f]{64}`).FindString(string(out))
	if m == "" {
		return fail(fmt.Errorf("imgfs import hello-world printed %q: no image ID", out))
	}
	f.helloID = m
	if err := os.Mkdir(f.mnt, 0o755); err != nil {
		return fail(err)
	}
	out, err = exec.Command(imgfsBin, "--store", f.store, "mount", f.mnt).CombinedOutput()
	if err != nil {
		return fail(fmt.Errorf("imgfs mount: %v: %s", err, out))
	}
	_, rest, _ := strings.Cut(string(out), "(pid ")
	f.pid, _ = strconv.Atoi(strings.SplitN(rest, ",", 2)[0])
	return f, nil
}

func (f *fixture) close() {
	unmountQuietly(f.mnt)
	os.RemoveAll(f.tmp)
}
