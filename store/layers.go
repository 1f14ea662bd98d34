package store

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
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

// Streamer is a BlobSource that can also give a blob's bytes in order from its start, as
// building a layer's index reads them: a registry sends them with one GET, where reading
// them at offsets would cost a request each.
type Streamer interface {
	Stream(d digest.Digest) (io.ReadCloser, error)
}

// streamBlob opens blob d from its start: from blobs/ when the store has it, else from
// src when that is a Streamer.
func (s *Store) streamBlob(d digest.Digest, src BlobSource) (io.ReadCloser, error) {
	f, err := s.OpenBlob(d)
	if err == nil {
		return f, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if st, ok := src.(Streamer); ok {
		return st.Stream(d)
	}
	return nil, err
}

// Sources returns the BlobSource that opens a blob from the first of srcs that has it
// (the store's blobs/ first, then registries: blobs are content-addressed, any source of
// the digest will do). It is a Streamer through those of srcs that are.
func Sources(srcs ...BlobSource) BlobSource { return sources(srcs) }

type sources []BlobSource

func (ss sources) Open(d digest.Digest) (Blob, error) {
	return first(ss, func(src BlobSource) (Blob, error) { return src.Open(d) })
}

func (ss sources) Stream(d digest.Digest) (io.ReadCloser, error) {
	return first(ss, func(src BlobSource) (io.ReadCloser, error) {
		if st, ok := src.(Streamer); ok {
			return st.Stream(d)
		}
		if db, ok := src.(dirBlobs); ok {
			return db.s.streamBlob(d, nil)
		}
		return nil, fmt.Errorf("store: blob %s: %w", d, fs.ErrNotExist)
	})
}

// first returns what open gives for the first of ss that has the blob: the first answer
// that is not "not there", or the first "not there" when none has it.
func first[T any](ss sources, open func(BlobSource) (T, error)) (T, error) {
	var firstErr error
	for _, src := range ss {
		v, err := open(src)
		if err == nil || !errors.Is(err, fs.ErrNotExist) {
			return v, err
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	var zero T
	if firstErr == nil {
		firstErr = errors.New("store: no blob sources")
	}
	return zero, firstErr
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
	ix, err := l.s.layerStream(desc, l.src)
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

// LayerIndex is Store.LayerIndex, building a missing index from the pool's source when
// the store lacks the blob (a registry's layer, streamed once).
func (l *Layers) LayerIndex(desc ocispec.Descriptor) (*layerindex.Index, error) {
	return l.s.layerIndex(desc, l.src)
}

// LayerStream is Store.LayerStream, building a missing index as LayerIndex does.
func (l *Layers) LayerStream(desc ocispec.Descriptor) (*layerindex.Index, error) {
	return l.s.layerStream(desc, l.src)
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
