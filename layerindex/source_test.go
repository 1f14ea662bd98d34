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
