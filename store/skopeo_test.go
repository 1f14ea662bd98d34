package store

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// skopeo runs skopeo, failing the test (not skipping it) when it is not installed: the
// interoperability it checks is a promise of the store.
func skopeo(t *testing.T, args ...string) {
	t.Helper()
	if _, err := exec.LookPath("skopeo"); err != nil {
		t.Fatal("skopeo not found: apt-get install skopeo")
	}
	// No policy.json needed, no registry touched: oci: to oci: only.
	args = append([]string{"--insecure-policy"}, args...)
	cmd := exec.Command("skopeo", args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("skopeo %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
}

// writeLayout writes index.json of an OCI layout by hand, each descriptor named the way
// skopeo's oci:DIR:name transport does (ref.name only).
func writeLayout(t *testing.T, root string, refs map[string]ocispec.Descriptor) {
	t.Helper()
	ix := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex}
	ix.SchemaVersion = 2
	for ref, d := range refs {
		d.Annotations = map[string]string{ocispec.AnnotationRefName: ref}
		ix.Manifests = append(ix.Manifests, d)
	}
	data, _ := json.Marshal(ix)
	if err := os.WriteFile(filepath.Join(root, "index.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// skopeo copies images into the store, naming them its way, and reads images we tagged.
func TestSkopeo(t *testing.T) {
	// The source layout, made with our own code.
	src, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	bb := writeImage(t, src, imageOpts{Files: map[string]string{"bin/busybox": "ELF"}})
	host := writeImage(t, src, imageOpts{Files: map[string]string{"arch": "host"}})
	other := writeImage(t, src, imageOpts{Files: map[string]string{"arch": "other"}, Platform: otherPlatform()})
	idx := writeIndex(t, src, false, withPlatform(host.Manifest, hostPlatform), withPlatform(other.Manifest, otherPlatform()))
	writeLayout(t, src.Root(), map[string]ocispec.Descriptor{"busybox:latest": bb.Manifest, "multi:1": idx})

	s := openStore(t)
	skopeo(t, "copy", "oci:"+src.Root()+":busybox:latest", "oci:"+s.Root()+":busybox:latest")
	skopeo(t, "copy", "--all", "oci:"+src.Root()+":multi:1", "oci:"+s.Root()+":multi:1")

	img, err := s.Resolve("busybox")
	if err != nil {
		t.Fatal(err)
	}
	if img.Name.String() != "docker.io/library/busybox:latest" || img.ID != bb.Config || img.Descriptor.Digest != bb.Manifest.Digest {
		t.Fatalf("busybox = %v %s %s", img.Name, img.ID, img.Descriptor.Digest)
	}
	if ix, err := s.LayerIndex(img.Manifest.Layers[0]); err != nil || ix.TOC.Len() != 1 || ix.TOC.Name(0) != "bin/busybox" {
		t.Fatalf("LayerIndex of skopeo's copy: %v", err)
	}
	if img, err := s.Resolve("multi:1"); err != nil || img.ID != host.Config {
		t.Fatalf("multi:1 (host) = %s, %v", img.ID, err)
	}
	p := otherPlatform()
	s.Platform = &p
	if img, err := s.Resolve("docker.io/library/multi:1"); err != nil || img.ID != other.Config {
		t.Fatalf("multi:1 (%s) = %s, %v", platformString(p), img.ID, err)
	}
	s.Platform = nil

	// Our tags next to skopeo's, then GC: skopeo's images are reachable.
	mine := writeImage(t, s, imageOpts{Files: map[string]string{"mine": "1"}})
	if err := s.Tag(mustName(t, "ghcr.io/acme/mine:v1"), mine.Manifest); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.GC(); err != nil {
		t.Fatal(err)
	}
	imgs, err := s.Images()
	if err != nil || len(imgs) != 3 {
		t.Fatalf("Images = %d, %v", len(imgs), err)
	}

	// skopeo reads what we tag: our ref.name is the tag alone.
	s2 := openStore(t)
	mine2 := writeImage(t, s2, imageOpts{Files: map[string]string{"ours": "1"}})
	if err := s2.Tag(mustName(t, "ours:v3"), mine2.Manifest); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	skopeo(t, "copy", "oci:"+s2.Root()+":v3", "oci:"+out+":copied")
	for _, d := range []string{mine2.Manifest.Digest.Encoded(), mine2.Config.Encoded(), mine2.Layer.Digest.Encoded()} {
		if _, err := os.Stat(filepath.Join(out, "blobs", "sha256", d)); err != nil {
			t.Errorf("skopeo's copy of our image: %v", err)
		}
	}
}
