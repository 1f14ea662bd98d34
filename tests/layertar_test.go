package tests

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/imgfs/imgfs/store"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestLayerTars: layers/N.tar is layer N's uncompressed tar, whatever the blob's
// compression: sha256sum gives its diffID, cmp finds it equal to the tar the layer was
// made from, stat gives its size, and tar lists it. ls shows N and N.tar side by side.
func TestLayerTars(t *testing.T) {
	tmp := t.TempDir()
	dir := filepath.Join(tmp, "store")
	s, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]string{
		"gzip":  ocispec.MediaTypeImageLayerGzip,
		"zstd":  ocispec.MediaTypeImageLayerZstd,
		"plain": ocispec.MediaTypeImageLayer,
	}
	layers := [][]entry{layer0(), layer1()}
	imgs := map[string]image{}
	for kind, mt := range kinds {
		if imgs[kind], err = writeImageAs(s, "test/"+kind+":v1", mt, layers...); err != nil {
			t.Fatal(err)
		}
	}
	mnt, _ := mountStore(t, dir)
	for kind, img := range imgs {
		ld := filepath.Join(mnt, "test", kind, "v1", "layers")
		if got := ok(t, ld, "ls"); got != "0\n0.tar\n1\n1.tar\n" {
			t.Errorf("%s: ls layers: %q", kind, got)
		}
		for i, ents := range layers {
			name := strconv.Itoa(i) + ".tar"
			sum := strings.Fields(ok(t, ld, "sha256sum", name))[0]
			if "sha256:"+sum != img.diffIDs[i].String() {
				t.Errorf("%s: sha256sum layers/%s = %s, want the diffID %s", kind, name, sum, img.diffIDs[i])
			}
			tarball, _, err := makeTar(ents)
			if err != nil {
				t.Fatal(err)
			}
			want := filepath.Join(tmp, kind+name)
			if err := os.WriteFile(want, tarball, 0o644); err != nil {
				t.Fatal(err)
			}
			ok(t, ld, "cmp", name, want)
			if got := ok(t, ld, "stat", "-c", "%s %A", name); got != strconv.Itoa(len(tarball))+" -r--r--r--\n" {
				t.Errorf("%s: stat layers/%s: %q, want size %d, 0444", kind, name, got, len(tarball))
			}
			// Reads at every offset and length the kernel may send: dd in odd blocks.
			if got := ok(t, ld, "sh", "-c", "dd if="+name+" bs=4097 skip=1 status=none | cmp - "+want+" -i 0:4097 && echo same"); got != "same\n" {
				t.Errorf("%s: dd of layers/%s from offset 4097: %q", kind, name, got)
			}
			listed := ok(t, ld, "tar", "-tf", name)
			if c := strings.Count(listed, "\n"); c != len(ents) {
				t.Errorf("%s: tar -tf layers/%s lists %d entries, want %d:\n%s", kind, name, c, len(ents), listed)
			}
		}
		if r := runIn(t, ld, "cat", "2.tar"); r.code == 0 {
			t.Errorf("%s: cat layers/2.tar of a two-layer image succeeded", kind)
		}
		if r := runIn(t, ld, "cat", "01.tar"); r.code == 0 {
			t.Errorf("%s: cat layers/01.tar succeeded", kind)
		}
	}
}

// TestLayerTarsShared: sha256sum of every layers/N.tar of the shared fixture's images (a
// gzip image and hello-world, imported from a docker save) gives the config's diffID.
func TestLayerTarsShared(t *testing.T) {
	f := sharedFixture(t)
	for _, img := range []string{f.appDir(), filepath.Join(f.mnt, f.helloID)} {
		var cfg struct {
			RootFS struct {
				DiffIDs []string `json:"diff_ids"`
			} `json:"rootfs"`
		}
		if err := json.Unmarshal([]byte(ok(t, img, "cat", "config.json")), &cfg); err != nil {
			t.Fatal(err)
		}
		if len(cfg.RootFS.DiffIDs) == 0 {
			t.Fatalf("%s: no diffIDs in config.json", img)
		}
		for i, want := range cfg.RootFS.DiffIDs {
			name := filepath.Join("layers", strconv.Itoa(i)+".tar")
			if got := "sha256:" + strings.Fields(ok(t, img, "sha256sum", name))[0]; got != want {
				t.Errorf("%s: sha256sum %s = %s, want the diffID %s", img, name, got, want)
			}
		}
	}
}
