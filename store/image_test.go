package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestTagResolveDockerNames(t *testing.T) {
	s := openStore(t)
	imgs := map[string]testImage{}
	for i, name := range []string{"busybox", "busybox:1.36", "ghcr.io/acme/app:v2", "localhost:5000/x:1"} {
		img := writeImage(t, s, imageOpts{Files: map[string]string{"f": name, "n": fmt.Sprint(i)}})
		if err := s.Tag(mustName(t, name), img.Manifest); err != nil {
			t.Fatal(err)
		}
		imgs[name] = img
	}
	// index.json carries both annotations.
	ix := readIndexJSON(t, s)
	if len(ix.Manifests) != 4 {
		t.Fatalf("index.json has %d descriptors", len(ix.Manifests))
	}
	if a := ix.Manifests[0].Annotations; a[AnnotationImageName] != "docker.io/library/busybox:latest" || a[AnnotationRefName] != "latest" {
		t.Fatalf("annotations %v", a)
	}

	bb, b136 := imgs["busybox"], imgs["busybox:1.36"]
	for _, c := range []struct {
		ref  string
		want testImage
		name string
	}{
		{"busybox", bb, "docker.io/library/busybox:latest"},
		{"busybox:latest", bb, "docker.io/library/busybox:latest"},
		{"docker.io/library/busybox", bb, "docker.io/library/busybox:latest"},
		{"docker.io/busybox:latest", bb, "docker.io/library/busybox:latest"},
		{"library/busybox", bb, "docker.io/library/busybox:latest"},
		{"busybox:1.36", b136, "docker.io/library/busybox:1.36"},
		{"ghcr.io/acme/app:v2", imgs["ghcr.io/acme/app:v2"], "ghcr.io/acme/app:v2"},
		{"localhost:5000/x:1", imgs["localhost:5000/x:1"], "localhost:5000/x:1"},
		{"busybox@" + b136.Manifest.Digest.String(), b136, "docker.io/library/busybox:1.36"},
		{"busybox:1.36@" + b136.Manifest.Digest.String(), b136, "docker.io/library/busybox:1.36"},
		{b136.Config.String(), b136, "docker.io/library/busybox:1.36"},
		{b136.Config.Encoded(), b136, "docker.io/library/busybox:1.36"},
		{b136.Config.Encoded()[:12], b136, "docker.io/library/busybox:1.36"},
		{"sha256:" + b136.Config.Encoded()[:12], b136, "docker.io/library/busybox:1.36"},
	} {
		got, err := s.Resolve(c.ref)
		if err != nil {
			t.Errorf("Resolve(%q): %v", c.ref, err)
			continue
		}
		if got.ID != c.want.Config || got.Descriptor.Digest != c.want.Manifest.Digest ||
			got.Name == nil || got.Name.String() != c.name || len(got.Manifest.Layers) != 1 {
			t.Errorf("Resolve(%q) = %v %s %s, want %s %s", c.ref, got.Name, got.ID, got.Descriptor.Digest, c.name, c.want.Config)
		}
	}

	for _, c := range []struct{ ref, err string }{
		{"busybox:1.0", "no such image: busybox:1.0"},
		{"alpine", "no such image: alpine"},
		{"ghcr.io/acme/app", "no such image: ghcr.io/acme/app"},
		{"busybox@" + digest.FromString("x").String(), "no such image: busybox@" + digest.FromString("x").String()},
		{"alpine@" + b136.Manifest.Digest.String(), "no such image: alpine@"},              // right digest, wrong name
		{"0123456789ab", "no such image: 0123456789ab"},                                    // prefix of nothing
		{"sha256:0123", "invalid image ID"},                                                // too short
		{"Busybox", "invalid image reference"},                                             // uppercase
		{strings.Repeat("f", 64), "no such image: " + strings.Repeat("f", 64)},             // full ID of nothing
		{b136.Manifest.Digest.String(), "no such image: " + b136.Manifest.Digest.String()}, // manifest digest is not an ID
	} {
		_, err := s.Resolve(c.ref)
		if err == nil || !strings.Contains(err.Error(), c.err) || strings.Contains(err.Error(), "\n") {
			t.Errorf("Resolve(%q) = %v, want %q", c.ref, err, c.err)
		}
		if strings.HasPrefix(c.err, "no such image") && !errors.Is(err, ErrNoSuchImage) {
			t.Errorf("Resolve(%q): %v is not ErrNoSuchImage", c.ref, err)
		}
	}

	got, err := s.Images()
	if err != nil || len(got) != 4 {
		t.Fatalf("Images = %d, %v", len(got), err)
	}
	for _, img := range got {
		if img.ID != imgs[reference.FamiliarString(img.Name)].Config && img.ID != bb.Config {
			t.Errorf("Images: %s has ID %s", img.Name, img.ID)
		}
	}
}

func TestTagReplacesAndUntag(t *testing.T) {
	s := openStore(t)
	a := writeImage(t, s, imageOpts{Files: map[string]string{"a": "a"}})
	b := writeImage(t, s, imageOpts{Files: map[string]string{"b": "b"}})
	for _, img := range []testImage{a, b} {
		if err := s.Tag(mustName(t, "app"), img.Manifest); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Tag(mustName(t, "app:old"), a.Manifest); err != nil {
		t.Fatal(err)
	}
	if n := len(readIndexJSON(t, s).Manifests); n != 2 {
		t.Fatalf("index.json has %d descriptors, want 2", n)
	}
	if img, err := s.Resolve("app"); err != nil || img.ID != b.Config {
		t.Fatalf("app = %v, %v; want the retagged image", img.ID, err)
	}
	if err := s.Tag(mustName(t, "app@"+a.Manifest.Digest.String()), a.Manifest); err == nil {
		t.Fatal("Tag with a digest name succeeded")
	}
	missing := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("nope"), Size: 4}
	if err := s.Tag(mustName(t, "ghost"), missing); err == nil {
		t.Fatal("Tag of a manifest not in the store succeeded")
	}

	if err := s.Untag(mustName(t, "app")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Resolve("app"); !errors.Is(err, ErrNoSuchImage) {
		t.Fatalf("after Untag: %v", err)
	}
	if err := s.Untag(mustName(t, "app")); err == nil || err.Error() != "no such image: app:latest" {
		t.Fatalf("Untag twice = %v", err)
	}

	// Untagged: reachable by ID only, added once.
	for range 2 {
		if err := s.AddUntagged(b.Manifest); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(readIndexJSON(t, s).Manifests); n != 2 {
		t.Fatalf("index.json has %d descriptors, want 2 (app:old, untagged b)", n)
	}
	img, err := s.Resolve(b.Config.Encoded()[:12])
	if err != nil || img.Name != nil || img.ID != b.Config {
		t.Fatalf("untagged by ID = %v %v, %v", img.Name, img.ID, err)
	}
}

func TestResolveAmbiguousPrefix(t *testing.T) {
	// Two IDs sharing 12 hex digits cannot be made; lower the minimum to find a pair
	// sharing one.
	defer func(n int) { minIDPrefix = n }(minIDPrefix)
	minIDPrefix = 1
	s := openStore(t)
	seen := map[byte]digest.Digest{}
	var prefix string
	for i := 0; prefix == ""; i++ {
		img := writeImage(t, s, imageOpts{Files: map[string]string{"i": fmt.Sprint(i)}})
		if err := s.AddUntagged(img.Manifest); err != nil {
			t.Fatal(err)
		}
		c := img.Config.Encoded()[0]
		if other, ok := seen[c]; ok {
			prefix = string(c)
			_, err := s.Resolve(prefix)
			if !errors.Is(err, ErrAmbiguous) || !strings.Contains(err.Error(), other.String()) ||
				!strings.Contains(err.Error(), img.Config.String()) {
				t.Fatalf("Resolve(%q) = %v, want both candidates", prefix, err)
			}
		}
		seen[c] = img.Config
	}
	// Several names of one image are not ambiguous.
	s2 := openStore(t)
	img := writeImage(t, s2, imageOpts{})
	s2.Tag(mustName(t, "a"), img.Manifest)
	s2.Tag(mustName(t, "b"), img.Manifest)
	if got, err := s2.Resolve(img.Config.Encoded()[:12]); err != nil || got.ID != img.Config {
		t.Fatalf("two names, one ID: %v", err)
	}
}

func TestMultiArch(t *testing.T) {
	for _, docker := range []bool{false, true} {
		t.Run(fmt.Sprintf("docker=%v", docker), func(t *testing.T) {
			s := openStore(t)
			host := writeImage(t, s, imageOpts{Docker: docker, Files: map[string]string{"arch": "host"}})
			other := writeImage(t, s, imageOpts{Docker: docker, Platform: otherPlatform(), Files: map[string]string{"arch": "other"}})
			attest := writeImage(t, s, imageOpts{Platform: ocispec.Platform{OS: "unknown", Architecture: "unknown"}})
			idx := writeIndex(t, s, docker,
				withPlatform(other.Manifest, otherPlatform()),
				withPlatform(host.Manifest, hostPlatform),
				withPlatform(attest.Manifest, ocispec.Platform{OS: "unknown", Architecture: "unknown"}))
			if err := s.Tag(mustName(t, "multi:1"), idx); err != nil {
				t.Fatal(err)
			}
			img, err := s.Resolve("multi:1")
			if err != nil || img.ID != host.Config || img.Descriptor.Digest != host.Manifest.Digest || img.Target.Digest != idx.Digest {
				t.Fatalf("host: %s %s, %v", img.ID, img.Descriptor.Digest, err)
			}
			// A platform's own manifest digest, by name.
			img, err = s.Resolve("multi@" + other.Manifest.Digest.String())
			if err != nil || img.ID != other.Config {
				t.Fatalf("multi@<other manifest>: %v %v", img.ID, err)
			}

			p := otherPlatform()
			p.Variant = "" // arm64 without variant is arm64/v8
			s2, _ := Open(s.Root())
			s2.Platform = &p
			img, err = s2.Resolve("multi:1")
			if err != nil || img.ID != other.Config {
				t.Fatalf("explicit %v: %s, %v", p, img.ID, err)
			}
			imgs, err := s2.Images()
			if err != nil || len(imgs) != 1 || imgs[0].ID != other.Config {
				t.Fatalf("Images explicit: %v, %v", imgs, err)
			}
			s3, _ := Open(s.Root())
			s3.Platform = &ocispec.Platform{OS: "linux", Architecture: "s390x"}
			if _, err := s3.Resolve("multi:1"); err == nil || !strings.Contains(err.Error(), "no manifest for linux/s390x") {
				t.Fatalf("s390x: %v", err)
			}
			if imgs, err := s3.Images(); len(imgs) != 0 || err == nil || strings.Contains(err.Error(), "\n") {
				t.Fatalf("Images s390x = %v, %v", imgs, err)
			}
		})
	}
}

func TestPlatformRank(t *testing.T) {
	arm7 := ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}
	for _, c := range []struct {
		want ocispec.Platform
		p    ocispec.Platform
		ok   bool
	}{
		{arm7, ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}, true},
		{arm7, ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v6"}, true},
		{arm7, ocispec.Platform{OS: "linux", Architecture: "arm"}, true},
		{arm7, ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v8"}, false},
		{arm7, ocispec.Platform{OS: "linux", Architecture: "arm64"}, false},
		{ocispec.Platform{OS: "linux", Architecture: "arm64"}, ocispec.Platform{OS: "linux", Architecture: "aarch64", Variant: "v8"}, true},
		{ocispec.Platform{OS: "linux", Architecture: "amd64"}, ocispec.Platform{OS: "linux", Architecture: "x86_64"}, true},
		{ocispec.Platform{OS: "linux", Architecture: "amd64"}, ocispec.Platform{OS: "windows", Architecture: "amd64"}, false},
	} {
		if got := platformRank(c.want, &c.p) >= 0; got != c.ok {
			t.Errorf("platformRank(%v, %v) match = %v", c.want, c.p, got)
		}
	}
	if platformRank(arm7, &ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}) >=
		platformRank(arm7, &ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v6"}) {
		t.Error("v6 preferred to v7 on v7")
	}
}

// index.json as other tools write it: names in ref.name, fields and annotations we do not
// model, artifacts. Ours must read it by the name rules and keep it all when rewriting.
func TestForeignIndexJSON(t *testing.T) {
	s := openStore(t)
	a := writeImage(t, s, imageOpts{Files: map[string]string{"a": "1"}})
	b := writeImage(t, s, imageOpts{Files: map[string]string{"b": "2"}})
	c := writeImage(t, s, imageOpts{Files: map[string]string{"c": "3"}})
	art := putBlob(t, s, "application/vnd.acme.thing", []byte("not an image"))
	entry := func(d ocispec.Descriptor, ann map[string]string, extra string) string {
		d.Annotations = ann
		j, _ := json.Marshal(d)
		if extra != "" {
			j = append(j[:len(j)-1], ","+extra+"}"...)
		}
		return string(j)
	}
	index := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","x-tool":{"v":1},"manifests":[` +
		entry(a.Manifest, map[string]string{AnnotationRefName: "busybox:latest", "com.acme.note": "kept"}, `"x-extra":[1,2]`) + "," +
		entry(b.Manifest, map[string]string{AnnotationRefName: "other/app:1"}, "") + "," +
		entry(c.Manifest, map[string]string{AnnotationRefName: "latest"}, "") + "," +
		entry(art, map[string]string{AnnotationRefName: "thing:1"}, "") + "]}"
	if err := os.WriteFile(filepath.Join(s.Root(), "index.json"), []byte(index), 0o644); err != nil {
		t.Fatal(err)
	}
	check := func(nImages int) {
		t.Helper()
		for ref, want := range map[string]digest.Digest{"busybox": a.Config, "other/app:1": b.Config, "docker.io/other/app:1": b.Config} {
			if img, err := s.Resolve(ref); err != nil || img.ID != want {
				t.Errorf("Resolve(%q) = %v, %v", ref, img.ID, err)
			}
		}
		if _, err := s.Resolve("latest"); !errors.Is(err, ErrNoSuchImage) {
			t.Errorf("a bare ref.name tag names an image: %v", err)
		}
		if img, err := s.Resolve(c.Config.Encoded()[:16]); err != nil || img.Name != nil {
			t.Errorf("bare-tag entry by ID: %v, %v", img.Name, err)
		}
		imgs, err := s.Images()
		if err != nil || len(imgs) != nImages {
			t.Errorf("Images = %d, %v (the artifact is not an image)", len(imgs), err)
		}
	}
	check(3)
	d := writeImage(t, s, imageOpts{Files: map[string]string{"d": "4"}})
	if err := s.Tag(mustName(t, "new:1"), d.Manifest); err != nil {
		t.Fatal(err)
	}
	check(4)
	data, _ := os.ReadFile(filepath.Join(s.Root(), "index.json"))
	for _, want := range []string{`"x-tool":{"v":1}`, `"x-extra":[1,2]`, `"com.acme.note":"kept"`, `"thing:1"`,
		`"mediaType":"application/vnd.oci.image.index.v1+json"`} {
		if !strings.Contains(string(data), want) {
			t.Errorf("index.json lost %s:\n%s", want, data)
		}
	}
	// Tagging a name given only by ref.name replaces that entry.
	if err := s.Tag(mustName(t, "busybox"), d.Manifest); err != nil {
		t.Fatal(err)
	}
	if n := len(readIndexJSON(t, s).Manifests); n != 5 {
		t.Fatalf("%d descriptors after retagging busybox, want 5", n)
	}
	if img, _ := s.Resolve("busybox"); img.ID != d.Config {
		t.Fatal("busybox not retagged")
	}
}
