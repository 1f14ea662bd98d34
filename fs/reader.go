package fs

import (
	"os"
	"sync"

	"github.com/imgfs/imgfs/layerindex"
	"github.com/opencontainers/go-digest"
)

// blobReader is the reader of one layer blob's uncompressed stream, shared by every image
// and file using the layer; the blob stays open until the FS is closed.
type blobReader struct {
	mu sync.Mutex
	f  *os.File
	r  *layerindex.Reader
}

func (b *blobReader) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.r != nil {
		b.r.Close()
		b.f.Close()
		b.r, b.f = nil, nil
	}
}

// reader returns the reader of the layer ix indexes, opening its blob on first use. A
// failure is not kept: the next call tries again.
func (f *FS) reader(ix *layerindex.Index) (*layerindex.Reader, error) {
	f.blobsMu.Lock()
	b, ok := f.blobs[ix.BlobDigest]
	if !ok {
		b = new(blobReader)
		f.blobs[ix.BlobDigest] = b
	}
	f.blobsMu.Unlock()

	b.mu.Lock()
	defer b.mu.Unlock()
	if b.r != nil {
		return b.r, nil
	}
	file, err := f.store.OpenBlob(ix.BlobDigest)
	if err != nil {
		return nil, err
	}
	r, err := layerindex.NewReader(file, ix, f.cache)
	if err != nil {
		file.Close()
		return nil, err
	}
	b.f, b.r = file, r
	return r, nil
}

// readFailed logs a failed read of layer d (empty: of no layer) with msg and args, unless
// one of d was logged already: a damaged layer fails every read that reaches the damage,
// thousands in a walk, and the first line says which layer and where. The reads go on
// failing with EIO.
func (f *FS) readFailed(d digest.Digest, msg string, args ...any) {
	if d != "" {
		f.failedMu.Lock()
		logged := f.failed[d]
		if f.failed == nil {
			f.failed = make(map[digest.Digest]bool)
		}
		f.failed[d] = true
		f.failedMu.Unlock()
		if logged {
			return
		}
		msg += " (later failures of this layer are not logged)"
		args = append(args, "layer", d)
	}
	f.log.Error(msg, args...)
}
