package tests

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgfs/imgfs/store"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// wholeLayerGets counts the GETs answered whole (200) of each of layers in access log
// lines: a lazy mount's index build streams a layer so, its reads ask for Ranges.
func wholeLayerGets(lines []string, layers []ocispec.Descriptor) map[digest.Digest]int {
	n := map[digest.Digest]int{}
	for _, l := range lines {
		m := rangeLine.FindStringSubmatch(l)
		if m == nil || m[1] != "200" {
			continue
		}
		for _, d := range layers {
			if strings.Contains(l, "/blobs/"+d.Digest.String()+" ") {
				n[d.Digest]++
			}
		}
	}
	return n
}

// TestLazySharedIndexes is index sharing, simulated with three stores and three mounts on
// this machine and one registry: the lazy image (two layers of 32 MiB) pushed by imgfs
// push, which pushes its layer indexes, and by skopeo, whose copy gets them from imgfs
// index push. Each of three empty stores mounts the registry and reads one small file of
// each copy: no mount streams a layer to index it (no whole GET of a layer in the access
// log, only Range GETs), each fetches under 5% of the layer bytes, the mount log says the
// indexes came from the registry and refuses none, and the index each store keeps is the
// one the pushing store built, byte for byte.
func TestLazySharedIndexes(t *testing.T) {
	r := startRegistry(t)
	tmp := t.TempDir()
	orig := filepath.Join(tmp, "orig")
	s := must(store.Open(orig))
	img, err := writeImage(s, r.host+"/test/shared:1", lazyLayer("a", 1), lazyLayer("b", 2))
	if err != nil {
		t.Fatal(err)
	}
	var layerBytes int64
	want := map[digest.Digest][]byte{} // the pushing store's index files
	for _, l := range img.layers {
		layerBytes += l.Size
		if _, err := s.LayerIndex(l); err != nil {
			t.Fatal(err)
		}
		want[l.Digest] = must(os.ReadFile(filepath.Join(orig, ".imgfs/index/sha256", l.Digest.Encoded())))
	}
	imgfsOK(t, orig, "push", "-q", r.host+"/test/shared:1")
	r.skopeoPush(t, orig, "1", "test/sk:1")
	imgfsOK(t, filepath.Join(tmp, "indexer"), "index", "push", r.host+"/test/sk:1")

	for _, repo := range []string{"test/shared", "test/sk"} {
		for i := range 3 {
			lazy := filepath.Join(tmp, fmt.Sprintf("%s-%d", strings.ReplaceAll(repo, "/", "-"), i))
			mnt := t.TempDir()
			_, _, before := r.blobBytes(t)
			logBefore := len(r.blobGets(t))
			imgfsOK(t, lazy, "mount", "--registry", r.host, mnt)
			t.Cleanup(func() { unmountQuietly(mnt) })
			p := filepath.Join(mnt, r.host, repo, "1/rootfs/b/small")
			small, err := os.ReadFile(p)
			if err != nil || string(small) != "the small file of b\n" {
				t.Fatalf("%s: reading a small file: %q, %v\nmount log:\n%s", p, small, err, mountLog(lazy))
			}
			_, _, after := r.blobBytes(t)
			fetched := after - before
			t.Logf("%s, store %d: a small file fetched %d bytes in Range GETs, of %d layer bytes (%.2f%%)",
				repo, i, fetched, layerBytes, 100*float64(fetched)/float64(layerBytes))
			if fetched <= 0 || fetched*20 >= layerBytes {
				t.Errorf("%s, store %d: one small file fetched %d bytes with Range GETs, want some and under 5%% of the layers' %d",
					repo, i, fetched, layerBytes)
			}
			for d, n := range wholeLayerGets(r.blobGets(t)[logBefore:], img.layers) {
				t.Errorf("%s, store %d: layer %s fetched whole %d times: the mount built its index", repo, i, d, n)
			}
			log := mountLog(lazy)
			if !strings.Contains(log, "layer indexes from the registry") || strings.Contains(log, "not used") {
				t.Errorf("%s, store %d: the mount log does not say the indexes came from the registry, or refuses some:\n%s", repo, i, log)
			}
			for _, l := range img.layers {
				got, err := os.ReadFile(filepath.Join(lazy, ".imgfs/index/sha256", l.Digest.Encoded()))
				if err != nil || !bytes.Equal(got, want[l.Digest]) {
					t.Errorf("%s, store %d: layer %s: the stored index is not the pushing store's (%v)", repo, i, l.Digest, err)
				}
			}
		}
	}
}
