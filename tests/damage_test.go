package tests

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/imgfs/imgfs/store"
)

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
	if !bytes.Contains(log, []byte(layer.Digest.Encoded())) || !bytes.Contains(log, []byte("checksum")) {
		t.Errorf("mount.log does not name the damaged layer and its checksum:\n%s", log)
	}
}
