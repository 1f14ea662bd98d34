package tests

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/imgfs/imgfs/store"
)

// TestDamagedLayerLoggedOnce: a layer blob damaged after it was indexed, gzip or one zstd
// frame, fails every read past the damage with EIO, through rootfs/, layers/0/ and
// export.tar, and the mount log names the layer once.
func TestDamagedLayerLoggedOnce(t *testing.T) {
	st := filepath.Join(t.TempDir(), "store")
	s, err := store.Open(st)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]string{"test/gz": ocispec.MediaTypeImageLayerGzip, "test/zst": ocispec.MediaTypeImageLayerZstd}
	layers := map[string]string{} // name -> layer digest
	for name, mt := range names {
		// 10 MiB of files that do not compress: the damage is in the middle of the
		// compressed bytes and of the stream, with many files after it.
		r := rand.NewChaCha8([32]byte{byte(len(name))})
		var ents []entry
		for i := range 160 {
			body := make([]byte, 64<<10)
			r.Read(body)
			ents = append(ents, file(fmt.Sprintf("f%03d", i), 0o644, string(body)))
		}
		img, err := writeImageAs(s, name+":v1", mt, ents)
		if err != nil {
			t.Fatal(err)
		}
		layers[name] = img.layers[0].Digest.String()
		damage(t, s.BlobPath(img.layers[0].Digest))
	}
	mnt, _ := mountStore(t, st)
	for name := range names {
		failed := 0
		for _, dir := range []string{"rootfs", "layers/0", "rootfs"} {
			for i := range 160 {
				if _, err := os.ReadFile(filepath.Join(mnt, name, "v1", dir, fmt.Sprintf("f%03d", i))); err != nil {
					failed++
				}
			}
		}
		for range 3 {
			if _, err := os.ReadFile(filepath.Join(mnt, name, "v1", "export.tar")); err != nil {
				failed++
			}
		}
		if failed < 100 {
			t.Errorf("%s: %d reads failed, want most of those past the damage", name, failed)
		}
	}
	log, err := os.ReadFile(filepath.Join(st, ".imgfs", "mount.log"))
	if err != nil {
		t.Fatal(err)
	}
	for name, d := range layers {
		var lines []string
		for l := range strings.Lines(string(log)) {
			if strings.Contains(l, d) {
				lines = append(lines, l)
			}
		}
		if len(lines) != 1 {
			t.Errorf("%s: the mount log names its damaged layer %s on %d lines, want 1:\n%s", name, d, len(lines), strings.Join(lines[:min(5, len(lines))], ""))
		}
	}
}

// damage flips a bit in the middle of the file at p.
func damage(t *testing.T, p string) {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0x10
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestIndexDirectoryRebuilt: a directory where a layer index belongs does not make the
// image unreadable: the mount rebuilds the index, stores it as a file, and logs so once.
func TestIndexDirectoryRebuilt(t *testing.T) {
	st := newStore(t)
	idx, err := filepath.Glob(filepath.Join(st, ".imgfs", "index", "sha256", "*"))
	if err != nil || len(idx) != 1 {
		t.Fatalf("layer indexes %q, %v; want one", idx, err)
	}
	if err := os.Remove(idx[0]); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(idx[0], "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	mnt, _ := mountStore(t, st)
	for range 3 {
		if got := ok(t, mnt, "cat", "test/one/latest/rootfs/one.txt", "test/one/latest/layers/0/one.txt"); got != "one\none\n" {
			t.Fatalf("cat: %q", got)
		}
	}
	if fi, err := os.Lstat(idx[0]); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("the index is not stored as a file again: %v", err)
	}
	log, _ := os.ReadFile(filepath.Join(st, ".imgfs", "mount.log"))
	if n := strings.Count(string(log), "layer index rebuilt"); n != 1 || !strings.Contains(string(log), "file="+idx[0]) {
		t.Errorf("mount.log has %d lines of the rebuild, want 1 naming %s:\n%s", n, idx[0], log)
	}
}

// TestDamagedPlainLayer: a plain (uncompressed) layer blob changed in the store after its
// import, one byte in one file's data, makes that file EIO on the mount and imgfs save
// fail naming the layer; the rest of the layer still reads. No wrong byte is served.
func TestDamagedPlainLayer(t *testing.T) {
	st := filepath.Join(t.TempDir(), "store")
	s, err := store.Open(st)
	if err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("0123456789abcdef", 200<<10/16)
	tarball, _, err := makeTar([]entry{file("big", 0o644, big), file("pad", 0o644, strings.Repeat("p", 300<<10)), file("small", 0o644, "small\n")})
	if err != nil {
		t.Fatal(err)
	}
	layer := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: digest.FromBytes(tarball), Size: int64(len(tarball))}
	if _, err := s.WriteLayer(bytes.NewReader(tarball), layer); err != nil {
		t.Fatal(err)
	}
	cfg := ocispec.Image{Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"}, RootFS: ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{layer.Digest}}}
	cd, err := putJSON(s, ocispec.MediaTypeImageConfig, cfg)
	if err != nil {
		t.Fatal(err)
	}
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: cd, Layers: []ocispec.Descriptor{layer}}
	m.SchemaVersion = 2
	md, err := putJSON(s, ocispec.MediaTypeImageManifest, m)
	if err != nil {
		t.Fatal(err)
	}
	name, err := reference.ParseNormalizedNamed("test/damaged")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Tag(name, md); err != nil {
		t.Fatal(err)
	}

	// big's data starts after its 512-byte header.
	p := s.BlobPath(layer.Digest)
	blob, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	blob[512+100000] ^= 0x01
	if err := os.WriteFile(p, blob, 0o444); err != nil {
		t.Fatal(err)
	}

	mnt, _ := mountStore(t, st)
	img := filepath.Join(mnt, "test", "damaged", "latest")
	r := runIn(t, "", "cat", filepath.Join(img, "rootfs", "big"))
	if r.code == 0 || !strings.Contains(r.stderr, "Input/output error") {
		t.Errorf("cat of the damaged file: exit %d, stderr %q, want Input/output error", r.code, r.stderr)
	}
	if len(r.stdout) > 100000 || !strings.HasPrefix(big, r.stdout) {
		t.Errorf("cat of the damaged file printed %d bytes, not all of them right, or the damaged one", len(r.stdout))
	}
	if got := ok(t, "", "cat", filepath.Join(img, "rootfs", "small")); got != "small\n" {
		t.Errorf("cat of an undamaged file = %q", got)
	}
	if r := runIn(t, "", "cmp", filepath.Join(img, "layers", "0", "big"), filepath.Join(img, "rootfs", "big")); r.code != 2 {
		t.Errorf("cmp of layers/0/big: exit %d, want 2 (a read error)", r.code)
	}
	r = imgfs(t, st, "save", "-o", filepath.Join(t.TempDir(), "out.tar"), "test/damaged")
	if r.code != 1 || !strings.Contains(r.stderr, layer.Digest.Encoded()) {
		t.Errorf("imgfs save of the damaged image: exit %d, stderr %q, want 1 naming the layer", r.code, r.stderr)
	}
	log, _ := os.ReadFile(filepath.Join(st, ".imgfs", "mount.log"))
	lines := 0
	for l := range bytes.Lines(log) {
		if bytes.Contains(l, []byte(layer.Digest.Encoded())) {
			lines++
		}
	}
	if lines != 1 || !bytes.Contains(log, []byte("checksum")) {
		t.Errorf("mount.log does not name the damaged layer and its checksum once:\n%s", log)
	}
}
