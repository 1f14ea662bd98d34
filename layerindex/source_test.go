package layerindex

import (
	"bytes"
	"errors"
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
