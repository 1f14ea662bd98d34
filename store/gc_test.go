package store

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestGC(t *testing.T) {
	s := openStore(t)
	shared := map[string]string{"shared": "layer"}
	keep := writeImage(t, s, imageOpts{Files: shared})
	// Same layer, another config: the layer stays reachable when this one goes.
	drop := writeImage(t, s, imageOpts{Files: shared, Platform: otherPlatform()})
	dropOwn := writeImage(t, s, imageOpts{Files: map[string]string{"own": "layer"}})
	// A multi-arch image: the index reaches both platforms' manifests.
	mHost := writeImage(t, s, imageOpts{Files: map[string]string{"m": "host"}})
	mOther := writeImage(t, s, imageOpts{Files: map[string]string{"m": "other"}, Platform: otherPlatform()})
	idx := writeIndex(t, s, false, withPlatform(mHost.Manifest, hostPlatform), withPlatform(mOther.Manifest, otherPlatform()))
	untagged := writeImage(t, s, imageOpts{Files: map[string]string{"u": "u"}})
	stray := putBlob(t, s, "", []byte("stray"))

	for name, d := range map[string]ocispec.Descriptor{"keep": keep.Manifest, "drop": drop.Manifest, "dropown": dropOwn.Manifest, "multi": idx} {
		if err := s.Tag(mustName(t, name), d); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.AddUntagged(untagged.Manifest); err != nil {
		t.Fatal(err)
	}
	for _, l := range []ocispec.Descriptor{keep.Layer, dropOwn.Layer} {
		if _, err := s.LayerIndex(l); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []string{"drop", "dropown"} {
		if err := s.Untag(mustName(t, n)); err != nil {
			t.Fatal(err)
		}
	}
	old := filepath.Join(s.tmpDir(), "blob-old")
	fresh := filepath.Join(s.tmpDir(), "blob-fresh")
	os.WriteFile(old, []byte("killed import"), 0o600)
	os.WriteFile(fresh, []byte("import in progress"), 0o600)
	past := time.Now().Add(-2 * TmpMaxAge)
	os.Chtimes(old, past, past)
	// A layer index whose blob is gone.
	orphan := digest.FromString("orphan")
	os.WriteFile(s.layerIndexPath(orphan), []byte("x"), 0o644)

	removed, freed, err := s.GC()
	if err != nil {
		t.Fatal(err)
	}
	gone := []digest.Digest{drop.Manifest.Digest, drop.Config, dropOwn.Manifest.Digest, dropOwn.Config, dropOwn.Layer.Digest, stray.Digest}
	kept := []digest.Digest{keep.Manifest.Digest, keep.Config, keep.Layer.Digest, idx.Digest,
		mHost.Manifest.Digest, mHost.Config, mHost.Layer.Digest, mOther.Manifest.Digest, mOther.Config, mOther.Layer.Digest,
		untagged.Manifest.Digest, untagged.Config, untagged.Layer.Digest}
	for _, d := range gone {
		if s.HasBlob(d) {
			t.Errorf("unreachable %s kept", d)
		}
	}
	for _, d := range kept {
		if !s.HasBlob(d) {
			t.Errorf("reachable %s removed", d)
		}
	}
	// 6 blobs, 2 layer indexes (dropOwn's, the orphan), 1 tmp file.
	if removed != 9 || freed <= 0 {
		t.Errorf("GC = %d removed, %d bytes", removed, freed)
	}
	for p, want := range map[string]bool{
		old: false, fresh: true, s.layerIndexPath(orphan): false,
		s.layerIndexPath(dropOwn.Layer.Digest): false, s.layerIndexPath(keep.Layer.Digest): true,
	} {
		if _, err := os.Stat(p); (err == nil) != want {
			t.Errorf("%s exists = %v, want %v", p, err == nil, want)
		}
	}
	for _, ref := range []string{"keep", "multi", untagged.Config.String()} {
		if _, err := s.Resolve(ref); err != nil {
			t.Errorf("after GC: %v", err)
		}
	}
	if r, _, err := s.GC(); err != nil || r != 0 {
		t.Errorf("second GC = %d, %v", r, err)
	}
}

// A manifest GC cannot read stops it: it cannot know what that manifest reaches.
func TestGCStopsOnDamagedManifest(t *testing.T) {
	s := openStore(t)
	img := writeImage(t, s, imageOpts{})
	if err := s.Tag(mustName(t, "x"), img.Manifest); err != nil {
		t.Fatal(err)
	}
	stray := putBlob(t, s, "", []byte("stray"))
	os.WriteFile(s.BlobPath(img.Manifest.Digest), []byte("{}"), 0o644)
	if _, _, err := s.GC(); err == nil {
		t.Fatal("GC with a damaged manifest succeeded")
	}
	if !s.HasBlob(stray.Digest) || !s.HasBlob(img.Layer.Digest) {
		t.Fatal("GC deleted blobs although it could not read a manifest")
	}
}

// Hold keeps GC away from blobs written but not tagged yet.
func TestGCWaitsForHold(t *testing.T) {
	s := openStore(t)
	release, err := s.Hold()
	if err != nil {
		t.Fatal(err)
	}
	img := writeImage(t, s, imageOpts{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, _, err := s.GC(); err != nil {
			t.Error(err)
		}
	}()
	select {
	case <-done:
		t.Fatal("GC ran while Hold was held")
	case <-time.After(100 * time.Millisecond):
	}
	if err := s.Tag(mustName(t, "x"), img.Manifest); err != nil {
		t.Fatal(err)
	}
	release()
	<-done
	if !s.HasBlob(img.Layer.Digest) {
		t.Fatal("GC removed the held import's layer")
	}
}

// A GC held back by an import says so once, naming the process that holds the store.
func TestGCSaysWhatItWaitsFor(t *testing.T) {
	s := openStore(t)
	release, err := s.Hold()
	if err != nil {
		t.Fatal(err)
	}
	told := make(chan []int, 2)
	s.GCWaiting = func(pids []int) { told <- pids }
	done := make(chan error)
	start := time.Now()
	go func() {
		_, _, err := s.GC()
		done <- err
	}()
	select {
	case pids := <-told:
		if waited := time.Since(start); waited < GCWaitNotice {
			t.Errorf("told after %v", waited)
		}
		if !slices.Contains(pids, os.Getpid()) {
			t.Errorf("holders %v, want %d among them", pids, os.Getpid())
		}
	case err := <-done:
		t.Fatalf("GC ran while Hold was held: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("GC did not say it waits")
	}
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(told) > 0 {
		t.Error("told twice")
	}

	// Not held: GC says nothing.
	s.GCWaiting = func([]int) { t.Error("GC said it waits with nothing to wait for") }
	if _, _, err := s.GC(); err != nil {
		t.Fatal(err)
	}
}
