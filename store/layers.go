package store

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/imgfs/imgfs/layerindex"
)

// Blob is an open blob: its bytes at any offset, and its size.
type Blob interface {
	io.ReaderAt
	io.Closer
	Size() int64
}

// BlobSource opens blobs by digest. The store's blobs/ directory is one (Store.Blobs); a
// registry read with HTTP Range requests, or an archive read in place, can be others.
type BlobSource interface {
	Open(d digest.Digest) (Blob, error)
}

// Blobs returns the store's blobs/ directory as a BlobSource.
func (s *Store) Blobs() BlobSource { return dirBlobs{s} }

type dirBlobs struct{ s *Store }

func (b dirBlobs) Open(d digest.Digest) (Blob, error) {
	f, err := b.s.OpenBlob(d)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("store: blob %s: %w", d, err)
	}
	return fileBlob{f, fi.Size()}, nil
}

type fileBlob struct {
	*os.File
	size int64
}

func (b fileBlob) Size() int64 { return b.size }

// Layers is the one owner of readable layers: a pool in which each layer blob is opened
// once, from its source, and read through its layer index, with the decoded spans of all
// of them in one cache, so that the files of rootfs/ and layers/N/ and the exports of a
// mount decode each span once. A layer stays open until Close: a reader handed out reads
// on when its image is removed and its blob collected.
type Layers struct {
	s     *Store
	src   BlobSource
	cache *layerindex.Cache

	mu     sync.Mutex
	open   map[digest.Digest]*openLayer // by blob digest
	closed bool
}

// openLayer is one layer of the pool. Its own lock is held while its blob is opened, so
// that opening one layer waits for no other.
type openLayer struct {
	mu   sync.Mutex
	blob Blob
	r    *layerindex.Reader
}

// NewLayers returns a pool of the layers of s read from src (nil: s.Blobs()), keeping
// cacheSize bytes of decoded spans (<= 0: layerindex.DefaultCacheSize).
func (s *Store) NewLayers(src BlobSource, cacheSize int64) *Layers {
	if src == nil {
		src = s.Blobs()
	}
	return &Layers{s: s, src: src, cache: layerindex.NewCache(cacheSize), open: make(map[digest.Digest]*openLayer)}
}

// Layer returns the uncompressed stream of the layer desc describes (a manifest's layer
// descriptor) and its size, opening the layer's blob on first use. The stream is a
// *layerindex.Reader, which can also lend its bytes (ReadPinned). A failure is not kept:
// the next call tries again.
func (l *Layers) Layer(desc ocispec.Descriptor) (io.ReaderAt, int64, error) {
	r, err := l.openLayer(desc)
	if err != nil {
		return nil, 0, err
	}
	return r, r.Size(), nil
}

func (l *Layers) openLayer(desc ocispec.Descriptor) (*layerindex.Reader, error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, fmt.Errorf("store: layer %s: the layers are closed", desc.Digest)
	}
	o, ok := l.open[desc.Digest]
	if !ok {
		o = new(openLayer)
		l.open[desc.Digest] = o
	}
	l.mu.Unlock()

	o.mu.Lock()
	defer o.mu.Unlock()
	if o.r != nil {
		return o.r, nil
	}
	// The stream needs the checkpoints, not the table of contents: LayerStream reads no
	// more of the index than that, unless the whole is loaded already.
	ix, err := l.s.LayerStream(desc)
	if err != nil {
		return nil, err
	}
	blob, err := l.src.Open(ix.BlobDigest)
	if err != nil {
		return nil, err
	}
	r, err := layerindex.NewReader(blob, ix, l.cache)
	if err != nil {
		blob.Close()
		return nil, err
	}
	o.blob, o.r = blob, r
	return r, nil
}

// Close closes every layer opened. Reads in flight must have returned.
func (l *Layers) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	var errs []error
	for d, o := range l.open {
		o.mu.Lock()
		if o.r != nil {
			errs = append(errs, o.r.Close(), o.blob.Close())
		}
		o.mu.Unlock()
		delete(l.open, d)
	}
	return errors.Join(errs...)
}
