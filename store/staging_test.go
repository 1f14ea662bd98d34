package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// stagedImage is a one-layer image's blobs, not in any store: what a pull stages.
type stagedImage struct {
	layer, config, manifest ocispec.Descriptor
	layerData, configData   []byte
	manifestData            []byte
	diffID                  digest.Digest
}

func newStagedImage(t *testing.T, content string) stagedImage {
	t.Helper()
	var im stagedImage
	im.layerData = gzipLayer(t, map[string]string{"etc/hello": content})
	im.layer = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromBytes(im.layerData), Size: int64(len(im.layerData))}
	var err error
	if im.diffID, err = gzipDiffID(im.layerData); err != nil {
		t.Fatal(err)
	}
	cfg := ocispec.Image{Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"},
		RootFS: ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{im.diffID}}}
	im.configData, _ = json.Marshal(cfg)
	im.config = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(im.configData), Size: int64(len(im.configData))}
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: im.config, Layers: []ocispec.Descriptor{im.layer}}
	m.SchemaVersion = 2
	im.manifestData, _ = json.Marshal(m)
	im.manifest = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(im.manifestData), Size: int64(len(im.manifestData))}
	return im
}

// stage stages the config and the layer of im in st.
func (im stagedImage) stage(t *testing.T, st *Staging) {
	t.Helper()
	if err := st.Blob(bytes.NewReader(im.configData), im.config); err != nil {
		t.Fatal(err)
	}
	ix, err := st.Layer(bytes.NewReader(im.layerData), im.layer)
	if err != nil {
		t.Fatal(err)
	}
	if ix.DiffID != im.diffID {
		t.Fatalf("staged layer's diffID %s, want %s", ix.DiffID, im.diffID)
	}
}

// TestStagingKeepsAndAdopts: a Staging closed without Commit leaves blobs/ and index.json as
// they were and keeps the verified blobs; the next Staging adopts them (the layer with its
// index, no bytes read again) and commits them into blobs/, taking them out of temp.
func TestStagingKeepsAndAdopts(t *testing.T) {
	s := openStore(t)
	im := newStagedImage(t, "hello\n")
	before := snapshot(t, s.Root())

	st, err := s.Stage()
	if err != nil {
		t.Fatal(err)
	}
	im.stage(t, st)
	st.Close()
	after := snapshot(t, s.Root())
	for _, p := range []string{"index.json", "blobs", "blobs/sha256", ".imgfs/index"} {
		if before[p] != after[p] {
			t.Errorf("%s changed by a Staging closed without Commit: %q -> %q", p, before[p], after[p])
		}
	}
	if s.HasBlob(im.layer.Digest) || s.HasBlob(im.config.Digest) {
		t.Fatal("blobs/ has a blob of a Staging closed without Commit")
	}
	for _, p := range []string{s.keptPath(im.layer.Digest), s.keptPath(im.layer.Digest) + ".index", s.keptPath(im.config.Digest)} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("not kept: %v", err)
		}
	}

	st, err = s.Stage()
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ix, ok := st.AdoptLayer(im.layer)
	if !ok || ix.DiffID != im.diffID || ix.BlobDigest != im.layer.Digest {
		t.Fatalf("AdoptLayer: %v, %v; want the kept layer's index", ix, ok)
	}
	data, ok := st.AdoptBlob(im.config, MaxConfigSize)
	if !ok || !bytes.Equal(data, im.configData) {
		t.Fatalf("AdoptBlob: %q, %v", data, ok)
	}
	if err := st.Blob(bytes.NewReader(im.manifestData), im.manifest); err != nil {
		t.Fatal(err)
	}
	if err := st.Commit(mustName(t, "test/kept:1"), im.manifest); err != nil {
		t.Fatal(err)
	}
	img, err := s.Resolve("test/kept:1")
	if err != nil {
		t.Fatal(err)
	}
	if img.ID != im.config.Digest {
		t.Errorf("committed image ID %s, want %s", img.ID, im.config.Digest)
	}
	for _, d := range []digest.Digest{im.layer.Digest, im.config.Digest, im.manifest.Digest} {
		if !s.blobIntact(d) {
			t.Errorf("blob %s not stored intact", d)
		}
	}
	if _, state := s.StoredIndex(im.layer); state != IndexBuilt {
		t.Errorf("layer index after Commit: %s", state)
	}
	if left := dirNames(t, s.keptDir()); len(left) != 0 {
		t.Errorf("temp keeps %v after Commit", left)
	}
}

// TestStagingAdoptRefuses: a kept copy is passed by when it is not what the descriptor
// says: another size, cut short, without its layer index, or a config that no longer
// hashes to its digest.
func TestStagingAdoptRefuses(t *testing.T) {
	for _, c := range []struct {
		name  string
		spoil func(s *Store, im stagedImage) (ocispec.Descriptor, bool) // the descriptor asked for, and whether it is a layer
	}{
		{"other size", func(s *Store, im stagedImage) (ocispec.Descriptor, bool) {
			d := im.layer
			d.Size++
			return d, true
		}},
		{"cut short", func(s *Store, im stagedImage) (ocispec.Descriptor, bool) {
			os.Truncate(s.keptPath(im.layer.Digest), im.layer.Size-1)
			return im.layer, true
		}},
		{"no index", func(s *Store, im stagedImage) (ocispec.Descriptor, bool) {
			os.Remove(s.keptPath(im.layer.Digest) + ".index")
			return im.layer, true
		}},
		{"damaged index", func(s *Store, im stagedImage) (ocispec.Descriptor, bool) {
			os.WriteFile(s.keptPath(im.layer.Digest)+".index", []byte("not an index"), 0o644)
			return im.layer, true
		}},
		{"no size", func(s *Store, im stagedImage) (ocispec.Descriptor, bool) {
			d := im.layer
			d.Size = 0
			return d, true
		}},
		{"config changed", func(s *Store, im stagedImage) (ocispec.Descriptor, bool) {
			data := bytes.Clone(im.configData)
			data[len(data)-1] = ' '
			os.WriteFile(s.keptPath(im.config.Digest), data, 0o644)
			return im.config, false
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := openStore(t)
			im := newStagedImage(t, "hello\n")
			st, err := s.Stage()
			if err != nil {
				t.Fatal(err)
			}
			im.stage(t, st)
			st.Close()
			desc, layer := c.spoil(s, im)
			st, err = s.Stage()
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			if layer {
				if _, ok := st.AdoptLayer(desc); ok {
					t.Error("AdoptLayer took it")
				}
			} else if _, ok := st.AdoptBlob(desc, MaxConfigSize); ok {
				t.Error("AdoptBlob took it")
			}
			if len(st.staged) != 0 || len(st.indexes) != 0 {
				t.Errorf("staged %v after a refused adoption", st.staged)
			}
		})
	}
}

// TestStagingSameBlobAtOnce: Stagings of the same blobs at once (two pulls of one image)
// neither fail nor corrupt each other, whichever commits first; the other commits fine
// after, and the blobs are intact.
func TestStagingSameBlobAtOnce(t *testing.T) {
	s := openStore(t)
	im := newStagedImage(t, "same\n")
	const n = 4
	var names []reference.Named
	for i := range n {
		names = append(names, mustName(t, fmt.Sprintf("test/same:%d", i)))
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := s.Stage()
			if err != nil {
				errs <- err
				return
			}
			defer st.Close()
			if i%2 == 1 {
				// Adopt what another has kept, if there is something yet.
				if _, ok := st.AdoptLayer(im.layer); ok {
					if err := st.Blob(bytes.NewReader(im.manifestData), im.manifest); err != nil {
						errs <- err
						return
					}
					if _, ok := st.AdoptBlob(im.config, MaxConfigSize); !ok {
						if err := st.Blob(bytes.NewReader(im.configData), im.config); err != nil {
							errs <- err
							return
						}
					}
					errs <- st.Commit(names[i], im.manifest)
					return
				}
			}
			if err := st.Blob(bytes.NewReader(im.configData), im.config); err != nil {
				errs <- err
				return
			}
			if _, err := st.Layer(bytes.NewReader(im.layerData), im.layer); err != nil {
				errs <- err
				return
			}
			if err := st.Blob(bytes.NewReader(im.manifestData), im.manifest); err != nil {
				errs <- err
				return
			}
			errs <- st.Commit(names[i], im.manifest)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	for _, d := range []digest.Digest{im.layer.Digest, im.config.Digest, im.manifest.Digest} {
		if !s.blobIntact(d) {
			t.Errorf("blob %s not intact", d)
		}
	}
	for i := range n {
		if _, err := s.Resolve(fmt.Sprintf("test/same:%d", i)); err != nil {
			t.Error(err)
		}
	}
	// What is left in temp is whole, verified copies only (each Commit takes its own).
	for _, name := range dirNames(t, s.keptDir()) {
		p := filepath.Join(s.keptDir(), name)
		if filepath.Ext(name) == ".index" {
			continue
		}
		data, _ := os.ReadFile(p)
		if fmt.Sprintf("%s-%s", digest.FromBytes(data).Algorithm(), digest.FromBytes(data).Encoded()) != name {
			t.Errorf("kept %s does not hash to its name", name)
		}
	}
}

// TestGCRemovesKept: GC removes the blobs a Staging kept, however young, and nothing else of
// the store; a kept blob is then fetched again, not adopted.
func TestGCRemovesKept(t *testing.T) {
	s := openStore(t)
	keep := writeImage(t, s, imageOpts{})
	if err := s.Tag(mustName(t, "test/keep:1"), keep.Manifest); err != nil {
		t.Fatal(err)
	}
	im := newStagedImage(t, "hello\n")
	st, err := s.Stage()
	if err != nil {
		t.Fatal(err)
	}
	im.stage(t, st)
	st.Close()
	before := snapshot(t, filepath.Join(s.Root(), "blobs"))

	removed, freed, err := s.GC()
	if err != nil {
		t.Fatal(err)
	}
	if removed != 3 || freed < im.layer.Size+im.config.Size {
		t.Errorf("GC removed %d files, %d bytes; want 3 (layer, its index, config), at least %d bytes",
			removed, freed, im.layer.Size+im.config.Size)
	}
	if left := dirNames(t, s.keptDir()); len(left) != 0 {
		t.Errorf("GC left %v kept", left)
	}
	if d := diffSnapshots(before, snapshot(t, filepath.Join(s.Root(), "blobs"))); len(d) > 0 {
		t.Errorf("GC changed blobs/: %v", d)
	}
	st, err = s.Stage()
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, ok := st.AdoptLayer(im.layer); ok {
		t.Error("a layer GC removed was adopted")
	}
}

// dirNames returns the names in dir (none if it does not exist).
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}
