package store

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
)

// countingSource is the store's blobs, counting the opens of each.
type countingSource struct {
	src   BlobSource
	mu    sync.Mutex
	opens map[digest.Digest]int
}

func (c *countingSource) Open(d digest.Digest) (Blob, error) {
	c.mu.Lock()
	c.opens[d]++
	c.mu.Unlock()
	return c.src.Open(d)
}

// TestLayers: the pool opens each layer's blob once, from the source it is given, however
// many readers ask at once; its streams read the layer's tar, and read on after the
// blob's file is removed; a failed open is tried again; Close closes them.
func TestLayers(t *testing.T) {
	s := openStore(t)
	img := writeImage(t, s, imageOpts{Files: map[string]string{"etc/hostname": "pool\n"}})
	src := &countingSource{src: s.Blobs(), opens: map[digest.Digest]int{}}
	l := s.NewLayers(src, 0)

	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if _, _, err := l.Layer(img.Layer); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := src.opens[img.Layer.Digest]; n != 1 {
		t.Fatalf("blob opened %d times by 8 readers, want 1", n)
	}
	if err := os.Remove(s.BlobPath(img.Layer.Digest)); err != nil {
		t.Fatal(err)
	}
	r, size, err := l.Layer(img.Layer)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(io.NewSectionReader(r, 0, size))
	h, err := tr.Next()
	if err != nil || h.Name != "etc/hostname" {
		t.Fatalf("first entry %v, %v", h, err)
	}
	if b, _ := io.ReadAll(tr); !bytes.Equal(b, []byte("pool\n")) {
		t.Fatalf("etc/hostname reads %q", b)
	}

	// A layer whose blob is missing fails, and is tried again next time.
	other := writeImage(t, s, imageOpts{Files: map[string]string{"a": "b"}})
	p := s.BlobPath(other.Layer.Digest)
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.Layer(other.Layer); err == nil {
		t.Fatal("a layer without its blob opened")
	}
	if err := os.WriteFile(p, data, 0o444); err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.Layer(other.Layer); err != nil {
		t.Fatalf("open after the blob came back: %v", err)
	}

	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.Layer(img.Layer); err == nil {
		t.Fatal("Layer after Close succeeded")
	}
}
