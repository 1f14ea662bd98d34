package tests

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imgfs/imgfs/store"
	"github.com/imgfs/imgfs/store/chunks"
)

// TestLazyFirstSmallFile: an empty store's mount reads the first file of an image's top
// layer (a small one, in the layer's first span), the image pushed by imgfs push with its
// layer indexes. The registry is asked once for the top layer's bytes, one Range GET of
// no more than the first span's compressed bytes (from the layer's start to the next
// checkpoint, in whole chunks): the span comes in one request, not a request per piece
// the decoder reads, and no span after it is decoded (and fetched) ahead for a small
// file. Nothing of the lower layer is fetched. Before any of it, once it serves, the
// mount asks for the registry's catalog by itself.
func TestLazyFirstSmallFile(t *testing.T) {
	r := startRegistry(t)
	tmp := t.TempDir()
	ref := r.host + "/test/first:1"
	orig := filepath.Join(tmp, "orig")
	s := must(store.Open(orig))
	top := lazyLayer("c", 3)
	top = slices.Insert(top, 1, file("c/first", 0o644, "the first file of c\n"))
	img, err := writeImage(s, ref, lazyLayer("a", 1), top)
	if err != nil {
		t.Fatal(err)
	}
	ix, err := s.LayerIndex(img.layers[1])
	if err != nil {
		t.Fatal(err)
	}
	if len(ix.Checkpoints) < 3 {
		t.Fatalf("the top layer's index has %d checkpoints, want a few", len(ix.Checkpoints))
	}
	imgfsOK(t, orig, "push", "-q", ref)

	lazy := filepath.Join(tmp, "lazy")
	mnt := t.TempDir()
	catalogs := func() int {
		n := 0
		for _, l := range r.accessLog(t) {
			if strings.Contains(l, `"GET /v2/_catalog`) {
				n++
			}
		}
		return n
	}
	before := catalogs()
	imgfsOK(t, lazy, "mount", "--registry", r.host, mnt)
	t.Cleanup(func() { unmountQuietly(mnt) })
	// Once it serves, the mount asks for the registry's repositories by itself, so that
	// the first lookup under the registry does not wait for them.
	for i := 0; catalogs() == before; i++ {
		if i == 100 {
			t.Fatal("no catalog GET in 5 s after the mount, with nothing looked up")
		}
		time.Sleep(50 * time.Millisecond)
	}
	gets := len(r.blobGets(t))
	got, err := os.ReadFile(filepath.Join(mnt, r.host, "test/first/1/rootfs/c/first"))
	if err != nil || string(got) != "the first file of c\n" {
		t.Fatalf("reading the top layer's first file: %q, %v\nmount log:\n%s", got, err, mountLog(lazy))
	}
	r.blobBytes(t) // waits for the access log to be still
	cs := int64(chunks.DefaultChunkSize)
	maxBytes := (ix.Checkpoints[1].In + 64 + cs - 1) / cs * cs
	var topGets []string
	for _, l := range r.blobGets(t)[gets:] {
		switch {
		case strings.Contains(l, img.layers[0].Digest.String()):
			t.Errorf("the lower layer was fetched: %s", l)
		case strings.Contains(l, img.layers[1].Digest.String()):
			topGets = append(topGets, l)
		}
	}
	if len(topGets) != 1 {
		t.Fatalf("the top layer was asked for %d times, want once:\n%s", len(topGets), strings.Join(topGets, "\n"))
	}
	m := rangeLine.FindStringSubmatch(topGets[0])
	if m == nil || m[1] != "206" {
		t.Fatalf("the top layer's GET is not a Range GET: %s", topGets[0])
	}
	if n := must(strconv.ParseInt(m[2], 10, 64)); n <= 0 || n > maxBytes {
		t.Errorf("the Range GET sent %d bytes, want some and at most %d (the first span's, in whole chunks)", n, maxBytes)
	}
}
