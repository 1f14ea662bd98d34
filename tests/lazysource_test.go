package tests

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imgfs/imgfs/layerindex"
	"github.com/imgfs/imgfs/registry"
	"github.com/imgfs/imgfs/store"
	"github.com/imgfs/imgfs/store/chunks"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// putBlob uploads data to repository repo of the registry as one monolithic upload (POST,
// then PUT with the digest) and returns its digest.
func (r *testRegistry) putBlob(t *testing.T, repo string, data []byte) digest.Digest {
	t.Helper()
	d := digest.FromBytes(data)
	resp, err := r.client.Post(r.url("/v2/"+repo+"/blobs/uploads/"), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusAccepted || loc == "" {
		t.Fatalf("starting an upload: %s", resp.Status)
	}
	if !strings.HasPrefix(loc, "http") {
		loc = r.url(loc)
	}
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	req, err := http.NewRequest(http.MethodPut, loc+sep+"digest="+d.String(), bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err = r.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("finishing an upload: %s", resp.Status)
	}
	return d
}

// rangeLine matches an access log line of a blob GET: its status and the bytes sent.
var rangeLine = regexp.MustCompile(`"GET /v2/[^"]*/blobs/sha256:[0-9a-f]{64} HTTP/[0-9.]+" (\d{3}) (\d+)`)

// blobBytes returns the blob GETs answered 206 (Range) and 200 (whole) and the bytes
// sent by the 206 ones, from the access log, once it has stopped growing for 300 ms (the
// registry writes a line after the answer is sent).
func (r *testRegistry) blobBytes(t *testing.T) (ranged, whole int, rangedBytes int64) {
	t.Helper()
	n := -1
	for range 50 {
		gets := len(r.blobGets(t))
		if gets == n {
			break
		}
		n = gets
		time.Sleep(300 * time.Millisecond)
	}
	for _, l := range r.blobGets(t) {
		m := rangeLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		n, _ := strconv.ParseInt(m[2], 10, 64)
		switch m[1] {
		case "206":
			ranged++
			rangedBytes += n
		case "200":
			whole++
		}
	}
	return
}

// TestRegistrySource reads a blob of the test registry at random offsets through a
// registry.Source: the bytes are the blob's, fetched with Range GETs, each once (a second
// read of the same bytes sends nothing, nor does a new Source over the same cache, as a
// restarted daemon would make), the cache's bound holds, and a blob whose bytes do not
// match its digest fails once whole.
func TestRegistrySource(t *testing.T) {
	r := startRegistry(t)
	rnd := rand.New(rand.NewSource(1))
	data := make([]byte, 3<<20+12345)
	rnd.Read(data)
	d := r.putBlob(t, "test/blob", data)
	cacheDir := filepath.Join(t.TempDir(), "cache")
	const chunk = 64 << 10

	client, err := registry.New(registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	newSource := func(max int64) *registry.Source {
		src, err := client.NewSource(r.host, chunks.New(cacheDir, chunk, max), nil)
		if err != nil {
			t.Fatal(err)
		}
		src.Saw("test/blob", d, int64(len(data)))
		return src
	}
	src := newSource(0)
	b, err := src.Open(d)
	if err != nil {
		t.Fatal(err)
	}
	if b.Size() != int64(len(data)) {
		t.Fatalf("size %d, want %d", b.Size(), len(data))
	}
	type span struct{ off, n int64 }
	var spans []span
	for range 40 {
		off := rnd.Int63n(int64(len(data)))
		spans = append(spans, span{off, 1 + rnd.Int63n(min(300<<10, int64(len(data))-off))})
	}
	spans = append(spans, span{int64(len(data)) - 10, 10}, span{0, 1})
	read := func(b interface {
		ReadAt([]byte, int64) (int, error)
	}) {
		t.Helper()
		for _, s := range spans {
			p := make([]byte, s.n)
			if n, err := b.ReadAt(p, s.off); int64(n) != s.n || (err != nil && s.off+s.n < int64(len(data))) {
				t.Fatalf("ReadAt(%d bytes, %d): %d, %v", s.n, s.off, n, err)
			}
			if !bytes.Equal(p, data[s.off:s.off+s.n]) {
				t.Fatalf("ReadAt(%d bytes, %d): wrong bytes", s.n, s.off)
			}
		}
	}
	read(b)
	if n, err := b.ReadAt(nil, 5*chunk); n != 0 || err != nil {
		t.Fatalf("ReadAt of no bytes: %d, %v", n, err)
	}
	ranged, whole, sent := r.blobBytes(t)
	if ranged == 0 || whole != 0 {
		t.Fatalf("%d Range GETs and %d whole GETs, want Range GETs only:\n%s", ranged, whole, strings.Join(r.blobGets(t), "\n"))
	}
	// Each chunk comes once: no more than the blob, and a run of missing chunks is one
	// request (fewer requests than reads touching new chunks could give).
	if sent > int64(len(data)) {
		t.Fatalf("%d bytes fetched for a blob of %d", sent, len(data))
	}
	if ranged > len(spans) {
		t.Fatalf("%d Range GETs for %d reads", ranged, len(spans))
	}

	read(b)
	if again, _, _ := r.blobBytes(t); again != ranged {
		t.Fatalf("reading the same bytes again sent %d more Range GETs", again-ranged)
	}
	read(must(newSource(0).Open(d)))
	if again, _, _ := r.blobBytes(t); again != ranged {
		t.Fatalf("a new Source over the same cache sent %d more Range GETs", again-ranged)
	}

	// The whole blob through a bounded cache: the bound holds, and the bytes are right.
	bounded := chunks.New(cacheDir, chunk, 1<<20)
	bsrc, err := client.NewSource(r.host, bounded, nil)
	if err != nil {
		t.Fatal(err)
	}
	bsrc.Saw("test/blob", d, int64(len(data)))
	bb := must(bsrc.Open(d))
	for off := int64(0); off < int64(len(data)); off += 100 << 10 {
		p := make([]byte, min(100<<10, int64(len(data))-off))
		if _, err := bb.ReadAt(p, off); err != nil && off+int64(len(p)) < int64(len(data)) {
			t.Fatal(err)
		}
		if !bytes.Equal(p, data[off:off+int64(len(p))]) {
			t.Fatalf("bounded cache: wrong bytes at %d", off)
		}
		if used := bounded.Used(); used > 1<<20 {
			t.Fatalf("cache holds %d bytes, bound 1 MiB", used)
		}
	}

	// Reads at once over the same chunks: each chunk is fetched once, by one of them.
	shared := make([]byte, 2<<20)
	rnd.Read(shared)
	sd := r.putBlob(t, "test/blob", shared)
	_, _, sentBefore := r.blobBytes(t)
	csrc, err := client.NewSource(r.host, chunks.New(filepath.Join(t.TempDir(), "cache"), chunk, 0), nil)
	if err != nil {
		t.Fatal(err)
	}
	csrc.Saw("test/blob", sd, int64(len(shared)))
	cb := must(csrc.Open(sd))
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range 20 {
				off := int64((w*7+k*13)%20) * 100 << 10
				p := make([]byte, 150<<10)
				n, err := cb.ReadAt(p, off)
				if err != nil && err != io.EOF {
					errs <- err
					return
				}
				if !bytes.Equal(p[:n], shared[off:off+int64(n)]) {
					errs <- fmt.Errorf("concurrent ReadAt(%d): wrong bytes", off)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if _, _, sentAfter := r.blobBytes(t); sentAfter-sentBefore != int64(len(shared)) {
		t.Errorf("8 reads at once over a blob of %d bytes fetched %d, want each chunk once", len(shared), sentAfter-sentBefore)
	}

	// A registry that serves other bytes than the digest says (its storage changed
	// behind its back, same length): the reads that complete the blob in the cache fail,
	// and so do all later ones.
	other := make([]byte, 200<<10)
	rnd.Read(other)
	od := r.putBlob(t, "test/blob", other)
	stored := filepath.Join(r.dir, "docker/registry/v2/blobs/sha256", od.Encoded()[:2], od.Encoded(), "data")
	forged := bytes.Clone(other)
	forged[chunk+7] ^= 0xff
	if err := os.WriteFile(stored, forged, 0o644); err != nil {
		t.Fatal(err)
	}
	lsrc := newSource(0)
	lsrc.Saw("test/blob", od, int64(len(other)))
	lb := must(lsrc.Open(od))
	p := make([]byte, 10)
	if _, err := lb.ReadAt(p, 0); err != nil {
		t.Fatalf("a read of part of the blob: %v", err) // not whole yet: nothing to check
	}
	all := make([]byte, len(other))
	if _, err := lb.ReadAt(all, 0); err == nil || !strings.Contains(err.Error(), "digest") {
		t.Fatalf("reading all of a blob whose bytes do not match its digest: %v, want a digest mismatch", err)
	}
	if _, err := lb.ReadAt(p, 0); err == nil {
		t.Fatal("a later read of the mismatched blob succeeded")
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(fmt.Sprint(err))
	}
	return v
}

// TestRegistryLayerIndex reads a gzip layer of the test registry through the store's pool
// with the registry behind blobs/: its index is built by streaming the layer once (one
// whole GET) and kept in the store's index directory, its stream reads back the tar, and
// gc keeps that index while the chunk cache holds the layer's chunks.
func TestRegistryLayerIndex(t *testing.T) {
	r := startRegistry(t)
	tarBytes, _, desc := r.randomGzipLayer(t, 2, 20, 50<<10)
	d := desc.Digest
	s := must(store.Open(t.TempDir()))
	layers := r.registryLayers(t, s, desc)
	ix, err := layers.LayerIndex(desc)
	if err != nil {
		t.Fatal(err)
	}
	if ix.Size != int64(len(tarBytes)) {
		t.Fatalf("index of %d bytes, the tar is %d", ix.Size, len(tarBytes))
	}
	if _, state := s.StoredIndex(desc); state != store.IndexBuilt {
		t.Fatalf("the index is %s in the store, want built", state)
	}
	if _, whole, _ := r.blobBytes(t); whole != 1 {
		t.Fatalf("%d whole GETs to index the layer, want 1", whole)
	}
	lr, size, err := layers.Layer(desc)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, size)
	if _, err := lr.ReadAt(got, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	if !bytes.Equal(got, tarBytes) {
		t.Fatal("the layer's stream from the registry is not its tar")
	}
	// The stream that built the index filled the chunk cache: the read asks for nothing.
	if ranged, whole, _ := r.blobBytes(t); ranged != 0 || whole != 1 {
		t.Fatalf("%d Range and %d whole GETs, want the one whole GET alone: the index build's stream fills the cache", ranged, whole)
	}
	if !chunks.New(s.ChunkCacheDir(), 0, 0).Verified(d) {
		t.Errorf("the blob streamed whole, its digest right, is not marked verified in the cache")
	}
	if _, _, err := s.GC(); err != nil {
		t.Fatal(err)
	}
	if _, state := s.StoredIndex(desc); state != store.IndexBuilt {
		t.Fatalf("gc left the index %s, want built: the cache holds the layer", state)
	}
	if err := chunks.New(s.ChunkCacheDir(), 0, 0).Remove(d); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.GC(); err != nil {
		t.Fatal(err)
	}
	if _, state := s.StoredIndex(desc); state != store.IndexMissing {
		t.Fatalf("gc left the index %s with nothing of the layer cached, want missing", state)
	}
}

// randomGzipLayer puts a gzip layer of n files of random bytes (file i of size+i) in
// repository test/layer of the registry, and returns its tar, its blob and its
// descriptor.
func (r *testRegistry) randomGzipLayer(t *testing.T, seed int64, n, size int) (tarBytes, blob []byte, desc ocispec.Descriptor) {
	t.Helper()
	rnd := rand.New(rand.NewSource(seed))
	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	for i := range n {
		data := make([]byte, size+i)
		rnd.Read(data)
		tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("f%02d", i), Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg})
		tw.Write(data)
	}
	tw.Close()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(tarBuf.Bytes())
	zw.Close()
	d := r.putBlob(t, "test/layer", gz.Bytes())
	return tarBuf.Bytes(), gz.Bytes(), ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: d, Size: int64(gz.Len())}
}

// registryLayers returns a pool of layers of store s read from its blobs/, then from the
// registry through a registry.Source that knows desc's blob is in test/layer.
func (r *testRegistry) registryLayers(t *testing.T, s *store.Store, desc ocispec.Descriptor) *store.Layers {
	t.Helper()
	client := must(registry.New(registry.Options{}))
	src := must(client.NewSource(r.host, chunks.New(s.ChunkCacheDir(), 0, 0), nil))
	src.Saw("test/layer", desc.Digest, desc.Size)
	layers := s.NewLayers(store.Sources(s.Blobs(), src), 0)
	t.Cleanup(func() { layers.Close() })
	return layers
}

// TestRegistryPrefetch reads a gzip layer of the test registry from start to end in the
// pieces FUSE reads in, through a registry.Source whose store has the layer's index (of
// small spans) but none of its bytes: the blob is fetched ahead of the reader in a few
// large Range requests (layerindex.Fetcher.Prefetch), not one per span, every byte of it exactly
// once, and the stream is the layer's tar.
func TestRegistryPrefetch(t *testing.T) {
	r := startRegistry(t)
	// Random bytes, stored by gzip: the blob is about as large as the tar.
	tarBytes, blob, desc := r.randomGzipLayer(t, 3, 12, 1<<20)
	s := must(store.Open(t.TempDir()))
	ix := must(layerindex.Build(bytes.NewReader(blob), layerindex.BuildOptions{Digest: desc.Digest, MediaType: desc.MediaType, SpanSize: 256 << 10}))
	if err := s.PutLayerIndex(ix); err != nil {
		t.Fatal(err)
	}
	layers := r.registryLayers(t, s, desc)
	lr, size, err := layers.Layer(desc)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, size)
	for off := int64(0); off < size; off += 128 << 10 {
		if _, err := lr.ReadAt(got[off:min(size, off+128<<10)], off); err != nil && err != io.EOF {
			t.Fatalf("read at %d: %v", off, err)
		}
	}
	if !bytes.Equal(got, tarBytes) {
		t.Fatal("the layer's stream from the registry is not its tar")
	}
	ranged, whole, rangedBytes := r.blobBytes(t)
	if whole != 0 || rangedBytes != int64(len(blob)) {
		t.Errorf("%d whole GETs and %d bytes by Range for a blob of %d: want each byte once, by Range", whole, rangedBytes, len(blob))
	}
	// One request per span would be len/span of them.
	if max := len(blob) / (1 << 20); ranged > max {
		t.Errorf("%d Range GETs for %d bytes read in order, want at most %d: fetched a span at a time, not ahead", ranged, len(blob), max)
	}
	t.Logf("%d bytes in %d Range GETs (%d spans)", rangedBytes, ranged, len(ix.Checkpoints))
}
