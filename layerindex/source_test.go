package layerindex

import (
	"bytes"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
)

// flakyBlob fails its reads while down is set, as a registry that is gone for a while.
type flakyBlob struct {
	*bytes.Reader
	down atomic.Bool
}

var errGone = errors.New("registry gone")

func (b *flakyBlob) ReadAt(p []byte, off int64) (int, error) {
	if b.down.Load() {
		return 0, errGone
	}
	return b.Reader.ReadAt(p, off)
}

// TestReaderBlobGoneForAWhile: a span whose blob could not be read fails with the read's
// error, and is read when the blob can be again: unlike bad bytes, such a failure is not
// remembered.
func TestReaderBlobGoneForAWhile(t *testing.T) {
	data := goTar(t)
	for _, c := range []struct {
		name string
		blob []byte
	}{{"gzip", gzipLevel(t, data, 6)}, {"zstd", zstdFrames(t, data, 300<<10)}} {
		t.Run(c.name, func(t *testing.T) {
			ix := build(t, c.blob, testSpan)
			b := &flakyBlob{Reader: bytes.NewReader(c.blob)}
			r, err := NewReader(b, ix, NewCache(0))
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			got := make([]byte, len(data))
			b.down.Store(true)
			if _, err := r.ReadAt(got, 0); !errors.Is(err, errGone) {
				t.Fatalf("reading with the blob gone: %v, want its read's error", err)
			}
			// The decoders the failed read started ahead fail too, once they run: a read
			// that joins one still in flight gets its error. The reads after them do not.
			r.ahead.Wait()
			b.down.Store(false)
			if n, err := r.ReadAt(got, 0); n != len(data) || !bytes.Equal(got, data) {
				t.Fatalf("reading with the blob back: %d bytes, %v; want the whole stream", n, err)
			}
		})
	}
}

// TestReadAheadStartsAtTheNextSpan: two reads in one span (a tar header checked, then the
// file's data) decode nothing ahead; a read that moves on into the next span does.
func TestReadAheadStartsAtTheNextSpan(t *testing.T) {
	data := goTar(t)
	blob := gzipLevel(t, data, 6)
	// Spans of a quarter of the usual size: eight of them even in -short's smaller tar.
	ix := build(t, blob, testSpan/4)
	r, err := NewReader(bytes.NewReader(blob), ix, NewCache(8<<20))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if len(r.spans) < 8 {
		t.Fatalf("%d spans, want 8 or more", len(r.spans))
	}
	p := make([]byte, 100)
	at := r.spans[4].start
	for _, off := range []int64{at + 100, at + 1000} {
		if _, err := r.ReadAt(p, off); err != nil {
			t.Fatal(err)
		}
	}
	r.ahead.Wait()
	if r.cache.has(r.key(5)) {
		t.Fatal("two reads in one span decoded the next ahead")
	}
	if _, err := r.ReadAt(p, r.spans[5].start+10); err != nil {
		t.Fatal(err)
	}
	r.ahead.Wait()
	if !r.cache.has(r.key(6)) {
		t.Fatal("a read moving on into the next span decoded nothing ahead")
	}
}

// TestReadAheadFromTheStart: a layer's first read, in its first span but not at its start
// (a small file's header checked, then its data), decodes nothing ahead; a first read at
// the stream's start (a reader of the whole stream) does.
func TestReadAheadFromTheStart(t *testing.T) {
	data := goTar(t)
	blob := gzipLevel(t, data, 6)
	ix := build(t, blob, testSpan/4)
	p := make([]byte, 512)
	for _, c := range []struct {
		offs  []int64
		ahead bool
	}{{[]int64{512, 1024}, false}, {[]int64{0}, true}} {
		r, err := NewReader(bytes.NewReader(blob), ix, NewCache(8<<20))
		if err != nil {
			t.Fatal(err)
		}
		for _, off := range c.offs {
			if _, err := r.ReadAt(p, off); err != nil {
				t.Fatal(err)
			}
		}
		r.ahead.Wait()
		if got := r.cache.has(r.key(1)); got != c.ahead {
			t.Errorf("first reads at %v: span 1 decoded ahead %v, want %v", c.offs, got, c.ahead)
		}
		r.Close()
	}
}

// readsBlob is a Fetcher blob that records the reads a Reader makes of it; its Fetch
// reads the range.
type readsBlob struct {
	*bytes.Reader
	mu    sync.Mutex
	reads []section
}

func (b *readsBlob) Fetch(off, n int64) error {
	_, err := b.ReadAt(make([]byte, n), off)
	return err
}

// Prefetch does nothing: the reads a Reader makes itself are what the tests count.
func (b *readsBlob) Prefetch(off, n int64) {}

func (b *readsBlob) ReadAt(p []byte, off int64) (int, error) {
	b.mu.Lock()
	b.reads = append(b.reads, section{off, off + int64(len(p))})
	b.mu.Unlock()
	return b.Reader.ReadAt(p, off)
}

// TestFetchInput: a reader's first read of a span that is a whole checkpoint interval,
// from a Fetcher blob (a registry's), fetches the span's compressed bytes at once (from
// its checkpoint to the next, and ISA-L's slack beyond) before its decoder reads them in
// pieces: one request for the span, not one per piece.
func TestFetchInput(t *testing.T) {
	data := goTar(t)
	blob := gzipLevel(t, data, 6)
	ix := build(t, blob, testSpan/4)
	b := &readsBlob{Reader: bytes.NewReader(blob)}
	r, err := NewReader(b, ix, NewCache(8<<20))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	s := r.spans[2]
	if s.split {
		t.Fatal("span 2 is a piece of a longer interval")
	}
	p := make([]byte, 100)
	for _, off := range []int64{s.start + 10, s.start + 1000} {
		if _, err := r.ReadAt(p, off); err != nil {
			t.Fatal(err)
		}
	}
	r.ahead.Wait()
	cps := ix.Checkpoints
	want := section{cps[s.cp].In, min(cps[s.cp+1].In+isalSlack, ix.BlobSize)}
	if len(b.reads) == 0 || b.reads[0] != want {
		t.Errorf("reading span 2: reads %v, want the first of %v", b.reads, want)
	}
}
