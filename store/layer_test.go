package store

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/imgfs/imgfs/layerindex"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestLayerIndex(t *testing.T) {
	s := openStore(t)
	a := writeImage(t, s, imageOpts{Files: map[string]string{"etc/a": "aaa", "bin/sh": "#!"}})
	b := writeImage(t, s, imageOpts{Files: map[string]string{"etc/b": "bbb"}})
	path := s.layerIndexPath(a.Layer.Digest)
	if _, err := os.Stat(path); err == nil {
		t.Fatal("index exists before it was asked for")
	}

	// Built on first ask, by concurrent askers, and stored.
	var wg sync.WaitGroup
	results := make([]*layerindex.Index, 4)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ix, err := s.LayerIndex(a.Layer)
			if err != nil {
				t.Error(err)
			}
			results[i] = ix
		}()
	}
	wg.Wait()
	ix := results[0]
	if ix == nil || ix.BlobDigest != a.Layer.Digest || ix.Compression != layerindex.Gzip || ix.TOC.Len() != 2 {
		t.Fatalf("LayerIndex = %+v", ix)
	}
	if again, _ := s.LayerIndex(a.Layer); again != ix {
		t.Fatal("not cached in memory")
	}
	stored, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// A new Store loads it from disk without rebuilding (the file is not replaced).
	fi0, _ := os.Stat(path)
	s2, _ := Open(s.Root())
	if ix2, err := s2.LayerIndex(a.Layer); err != nil || ix2.DiffID != ix.DiffID {
		t.Fatalf("reload: %v", err)
	}
	if fi, _ := os.Stat(path); !os.SameFile(fi0, fi) {
		t.Fatal("stored index rewritten on load")
	}

	// Truncated: detected, rebuilt, stored again whole.
	os.WriteFile(path, stored[:len(stored)/2], 0o644)
	s3, _ := Open(s.Root())
	if ix3, err := s3.LayerIndex(a.Layer); err != nil || ix3.DiffID != ix.DiffID {
		t.Fatalf("truncated: %v", err)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, stored) {
		t.Fatal("truncated index not rewritten")
	}

	// Another blob's index in its place: rebuilt.
	ixb, err := s3.LayerIndex(b.Layer)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := os.ReadFile(s.layerIndexPath(b.Layer.Digest))
	os.WriteFile(path, other, 0o644)
	s4, _ := Open(s.Root())
	ix4, err := s4.LayerIndex(a.Layer)
	if err != nil || ix4.BlobDigest != a.Layer.Digest || ix4.DiffID == ixb.DiffID {
		t.Fatalf("foreign index: %v", err)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, stored) {
		t.Fatal("foreign index not replaced")
	}

	// A damaged blob fails the rebuild rather than indexing the wrong bytes.
	os.Remove(path)
	os.WriteFile(s.BlobPath(a.Layer.Digest), gzipLayer(t, map[string]string{"x": "y"}), 0o644)
	s5, _ := Open(s.Root())
	if _, err := s5.LayerIndex(a.Layer); err == nil {
		t.Fatal("damaged blob indexed")
	}
	// A missing one says which.
	missing := ocispec.Descriptor{Digest: digest.FromString("none")}
	if _, err := s5.LayerIndex(missing); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing blob: %v", err)
	}
}

// LayerStream loads the index without its entries, the full one when that is loaded,
// and goes through LayerIndex (rebuilding) for an index it cannot use.
func TestLayerStream(t *testing.T) {
	s := openStore(t)
	a := writeImage(t, s, imageOpts{Files: map[string]string{"etc/a": "aaa", "bin/sh": "#!"}})
	b := writeImage(t, s, imageOpts{Files: map[string]string{"etc/b": "bbb"}})
	path := s.layerIndexPath(a.Layer.Digest)

	// No stored index yet: built (with entries) and stored.
	built, err := s.LayerStream(a.Layer)
	if err != nil || built.TOC.Len() != 2 {
		t.Fatalf("LayerStream with no stored index = %+v, %v", built, err)
	}
	stored, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	// A new store loads the stored one without entries, once.
	s2, _ := Open(s.Root())
	lean, err := s2.LayerStream(a.Layer)
	if err != nil {
		t.Fatal(err)
	}
	if lean.TOC != nil || lean.DiffID != built.DiffID || lean.Size != built.Size ||
		len(lean.Checkpoints) != len(built.Checkpoints) {
		t.Fatalf("LayerStream = %+v, want the index %+v without entries", lean, built)
	}
	if again, _ := s2.LayerStream(a.Layer); again != lean {
		t.Fatal("not kept in memory")
	}
	if full, _ := s2.LayerIndex(a.Layer); full.TOC.Len() != 2 {
		t.Fatal("LayerIndex after LayerStream has no entries")
	}
	s3, _ := Open(s.Root())
	full, _ := s3.LayerIndex(a.Layer)
	if got, _ := s3.LayerStream(a.Layer); got != full {
		t.Fatal("LayerStream loaded the index again beside the full one")
	}

	// Truncated, or another blob's: rebuilt and stored whole.
	if _, err := s.LayerIndex(b.Layer); err != nil {
		t.Fatal(err)
	}
	other, _ := os.ReadFile(s.layerIndexPath(b.Layer.Digest))
	for name, bad := range map[string][]byte{"truncated": stored[:len(stored)/2], "foreign": other} {
		os.WriteFile(path, bad, 0o644)
		s4, _ := Open(s.Root())
		ix, err := s4.LayerStream(a.Layer)
		if err != nil || ix.BlobDigest != a.Layer.Digest || ix.DiffID != built.DiffID {
			t.Fatalf("%s index: %+v, %v", name, ix, err)
		}
		if got, _ := os.ReadFile(path); !bytes.Equal(got, stored) {
			t.Fatalf("%s index not rewritten", name)
		}
	}
}

// A stored index that cannot serve, damaged or a directory in its place, is rebuilt and
// stored as a file, and the store logs that once, naming the file.
func TestLayerIndexRebuiltLogged(t *testing.T) {
	s := openStore(t)
	a := writeImage(t, s, imageOpts{Files: map[string]string{"etc/a": "aaa"}})
	if _, err := s.LayerIndex(a.Layer); err != nil {
		t.Fatal(err)
	}
	path := s.layerIndexPath(a.Layer.Digest)
	stored, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for name, spoil := range map[string]func() error{
		"truncated": func() error { return os.WriteFile(path, stored[:len(stored)/2], 0o644) },
		"directory": func() error {
			if err := os.Remove(path); err != nil {
				return err
			}
			return os.MkdirAll(filepath.Join(path, "x"), 0o755)
		},
	} {
		t.Run(name, func(t *testing.T) {
			if err := spoil(); err != nil {
				t.Fatal(err)
			}
			s2, _ := Open(s.Root())
			var log bytes.Buffer
			s2.Logger = slog.New(slog.NewTextHandler(&log, nil))
			for range 3 {
				if _, err := s2.LayerStream(a.Layer); err != nil {
					t.Fatalf("LayerStream: %v", err)
				}
				if _, err := s2.LayerIndex(a.Layer); err != nil {
					t.Fatalf("LayerIndex: %v", err)
				}
			}
			if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, stored) {
				t.Errorf("index not stored again: %v", err)
			}
			lines := strings.Split(strings.TrimSpace(log.String()), "\n")
			if len(lines) != 1 || !strings.Contains(lines[0], "level=WARN") || !strings.Contains(lines[0], "file="+path) {
				t.Errorf("log: %q, want one warning naming %s", log.String(), path)
			}
		})
	}
}

// WriteLayer stores the blob and its index from one read of the stream.
func TestWriteLayer(t *testing.T) {
	s := openStore(t)
	blob := gzipLayer(t, map[string]string{"a": "1", "b": "2"})
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromBytes(blob), Size: int64(len(blob))}
	r := &layerindex.CountingReader{R: bytes.NewReader(blob)}
	ix, err := s.WriteLayer(r, desc)
	if err != nil {
		t.Fatal(err)
	}
	if r.N != int64(len(blob)) || !s.HasBlob(desc.Digest) || ix.TOC.Len() != 2 || ix.MediaType != desc.MediaType {
		t.Fatalf("read %d of %d bytes; index %+v", r.N, len(blob), ix)
	}
	if _, err := os.Stat(s.layerIndexPath(desc.Digest)); err != nil {
		t.Fatal(err)
	}
	// Not a layer: the blob is stored, the error says why there is no index.
	bad := []byte("not a tar at all, not even close")
	_, err = s.WriteLayer(bytes.NewReader(bad), ocispec.Descriptor{Digest: digest.FromBytes(bad)})
	if err == nil {
		t.Fatal("WriteLayer of garbage succeeded")
	}
	// A wrong digest: nothing stored.
	_, err = s.WriteLayer(bytes.NewReader(blob[:len(blob)-1]), desc)
	if !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("WriteLayer(truncated) = %v", err)
	}
}

// TestHasLayerIndex: a layer has an index once one is built or put, in memory or on disk
// (a new Store sees the stored one), and not when what is stored is another blob's.
func TestHasLayerIndex(t *testing.T) {
	s := openStore(t)
	a := writeImage(t, s, imageOpts{Files: map[string]string{"etc/a": "aaa"}})
	b := writeImage(t, s, imageOpts{Files: map[string]string{"etc/b": "bbb"}})
	if s.HasLayerIndex(a.Layer) {
		t.Fatal("an index before any was built")
	}
	ix, err := s.LayerIndex(a.Layer)
	if err != nil {
		t.Fatal(err)
	}
	if !s.HasLayerIndex(a.Layer) {
		t.Fatal("no index after LayerIndex")
	}
	s2, _ := Open(s.Root())
	if !s2.HasLayerIndex(a.Layer) {
		t.Fatal("a new Store does not see the stored index")
	}
	wrongSize := a.Layer
	wrongSize.Size++
	if s2.HasLayerIndex(wrongSize) {
		t.Fatal("an index for a descriptor of another size")
	}
	// b's path holding a's index: not b's.
	data, _ := os.ReadFile(s.layerIndexPath(a.Layer.Digest))
	os.MkdirAll(filepath.Dir(s.layerIndexPath(b.Layer.Digest)), 0o755)
	os.WriteFile(s.layerIndexPath(b.Layer.Digest), data, 0o644)
	s3, _ := Open(s.Root())
	if s3.HasLayerIndex(b.Layer) {
		t.Fatal("another blob's index taken for b's")
	}
	if err := s3.PutLayerIndex(ix); err != nil || !s3.HasLayerIndex(a.Layer) {
		t.Fatalf("after PutLayerIndex: %v", err)
	}
	// PutLayerIndexData stores the bytes given (those a registry sent), which a new Store
	// loads as they are.
	os.Remove(s.layerIndexPath(a.Layer.Digest))
	s4, _ := Open(s.Root())
	if err := s4.PutLayerIndexData(ix, data); err != nil || !s4.HasLayerIndex(a.Layer) {
		t.Fatalf("after PutLayerIndexData: %v", err)
	}
	if got, err := os.ReadFile(s.layerIndexPath(a.Layer.Digest)); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("PutLayerIndexData stored other bytes than given (%v)", err)
	}
	s5, _ := Open(s.Root())
	if got, err := s5.LayerIndex(a.Layer); err != nil || got.DiffID != ix.DiffID {
		t.Fatalf("the index PutLayerIndexData stored does not load: %v", err)
	}
}
