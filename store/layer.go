package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"syscall"

	"github.com/imgfs/imgfs/layerindex"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// buildCall is a LayerIndex load or build in flight, which concurrent askers for the same
// layer wait on instead of building it again.
type buildCall struct {
	done chan struct{}
	ix   *layerindex.Index
	err  error
}

// layerIndexPath is where the layer index of blob d is stored.
func (s *Store) layerIndexPath(d digest.Digest) string {
	return s.path(".imgfs", "index", string(d.Algorithm()), d.Encoded())
}

// LayerIndex returns the layer index of the layer blob desc describes. It is kept in
// memory once loaded, as the filesystem asks for it on every lookup. A stored index that
// is missing, damaged (layerindex.ErrCorruptIndex), of an older format
// (layerindex.ErrIndexVersion), of another blob or not a readable file (a directory) is
// rebuilt from the blob, which verifies the blob's digest, and stored again; the rebuild of
// one that was there is logged. Failing to store it on a read-only store is not an error:
// the rebuilt index is still returned.
func (s *Store) LayerIndex(desc ocispec.Descriptor) (*layerindex.Index, error) {
	return s.layerIndex(desc, nil)
}

// layerIndex is LayerIndex, building a missing index from src when blobs/ lacks the blob
// and src can stream it (a Streamer: a registry).
func (s *Store) layerIndex(desc ocispec.Descriptor, src BlobSource) (*layerindex.Index, error) {
	if err := desc.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("store: layer %q: %w", desc.Digest, err)
	}
	s.cacheMu.Lock()
	if ix, ok := s.layers[desc.Digest]; ok && matches(ix, desc) {
		s.cacheMu.Unlock()
		return ix, nil
	}
	if c, ok := s.building[desc.Digest]; ok {
		s.cacheMu.Unlock()
		<-c.done
		if c.err == nil && !matches(c.ix, desc) {
			// Built for a descriptor disagreeing with this one about the size; the
			// blob is what it is, and the index says so.
			return nil, fmt.Errorf("store: layer %s: blob is %d bytes, descriptor says %d",
				desc.Digest, c.ix.BlobSize, desc.Size)
		}
		return c.ix, c.err
	}
	c := &buildCall{done: make(chan struct{})}
	s.building[desc.Digest] = c
	s.cacheMu.Unlock()

	c.ix, c.err = s.loadOrBuild(desc, src)

	s.cacheMu.Lock()
	delete(s.building, desc.Digest)
	if c.err == nil {
		s.layers[desc.Digest] = c.ix
	}
	s.cacheMu.Unlock()
	close(c.done)
	return c.ix, c.err
}

// matches reports whether ix can serve as the index of the blob desc describes.
func matches(ix *layerindex.Index, desc ocispec.Descriptor) bool {
	return ix.BlobDigest == desc.Digest && (desc.Size <= 0 || ix.BlobSize == desc.Size)
}

// LayerStream returns what reading the uncompressed stream of layer blob desc needs: its
// layer index without the entries (layerindex.Index.UnmarshalWithoutEntries), or the full
// index when that is loaded already. An export reads the streams of all its layers, and
// planning it must not wait for the tables of contents of them all, most of the time and
// memory of loading an index. An index that cannot be loaded that way goes through
// LayerIndex, which rebuilds it.
func (s *Store) LayerStream(desc ocispec.Descriptor) (*layerindex.Index, error) {
	return s.layerStream(desc, nil)
}

// layerStream is LayerStream, building a missing index as layerIndex does.
func (s *Store) layerStream(desc ocispec.Descriptor, src BlobSource) (*layerindex.Index, error) {
	if err := desc.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("store: layer %q: %w", desc.Digest, err)
	}
	s.cacheMu.Lock()
	for _, m := range []map[digest.Digest]*layerindex.Index{s.layers, s.streams} {
		if ix, ok := m[desc.Digest]; ok && matches(ix, desc) {
			s.cacheMu.Unlock()
			return ix, nil
		}
	}
	s.cacheMu.Unlock()
	if data, err := os.ReadFile(s.layerIndexPath(desc.Digest)); err == nil {
		ix := new(layerindex.Index)
		if ix.UnmarshalWithoutEntries(data) == nil && matches(ix, desc) {
			s.cacheMu.Lock()
			s.streams[desc.Digest] = ix
			s.cacheMu.Unlock()
			return ix, nil
		}
	}
	return s.layerIndex(desc, src)
}

// HasLayerIndex says whether the store holds a usable index of the layer blob desc
// describes (in memory, or stored: of this blob, of this format), without building one
// and without reading the stored one's table of contents.
func (s *Store) HasLayerIndex(desc ocispec.Descriptor) bool {
	if desc.Digest.Validate() != nil {
		return false
	}
	s.cacheMu.Lock()
	for _, m := range []map[digest.Digest]*layerindex.Index{s.layers, s.streams} {
		if ix, ok := m[desc.Digest]; ok && matches(ix, desc) {
			s.cacheMu.Unlock()
			return true
		}
	}
	s.cacheMu.Unlock()
	data, err := os.ReadFile(s.layerIndexPath(desc.Digest))
	if err != nil {
		return false
	}
	ix := new(layerindex.Index)
	return ix.UnmarshalWithoutEntries(data) == nil && matches(ix, desc)
}

func (s *Store) loadOrBuild(desc ocispec.Descriptor, src BlobSource) (*layerindex.Index, error) {
	p := s.layerIndexPath(desc.Digest)
	ix, unusable := loadIndex(p, desc)
	if ix != nil {
		return ix, nil
	}
	f, err := s.streamBlob(desc.Digest, src)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ix, err = layerindex.Build(f, layerindex.BuildOptions{Digest: desc.Digest, MediaType: desc.MediaType})
	if err != nil {
		return nil, fmt.Errorf("store: indexing layer %s: %w", desc.Digest, err)
	}
	if desc.Size > 0 && ix.BlobSize != desc.Size {
		return nil, fmt.Errorf("store: layer %s: blob is %d bytes, descriptor says %d", desc.Digest, ix.BlobSize, desc.Size)
	}
	if unusable != nil {
		// What is in the way of the rename that stores the index (a directory, say) is
		// derived data too, and goes.
		if fi, err := os.Lstat(p); err == nil && !fi.Mode().IsRegular() {
			os.RemoveAll(p)
		}
	}
	err = s.putLayerIndex(ix)
	if err != nil && !readOnly(err) {
		return nil, err
	}
	if unusable != nil {
		level := slog.LevelWarn
		if errors.Is(unusable, layerindex.ErrIndexVersion) {
			level = slog.LevelInfo // another version of imgfs wrote it: nothing is wrong
		}
		s.log().Log(context.Background(), level, "layer index rebuilt", "file", p, "reason", unusable, "stored", err == nil)
	}
	return ix, nil
}

// loadIndex reads the stored index at p of the blob desc describes. When there is a file
// (or anything) at p that cannot serve, it returns why: damaged
// (layerindex.ErrCorruptIndex), of another format version (layerindex.ErrIndexVersion),
// another blob's, or not readable as a file. It returns nil, nil when there is none.
func loadIndex(p string, desc ocispec.Descriptor) (*layerindex.Index, error) {
	data, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	ix := new(layerindex.Index)
	if err := ix.UnmarshalBinary(data); err != nil {
		return nil, err
	}
	if !matches(ix, desc) {
		return nil, fmt.Errorf("it indexes blob %s of %d bytes", ix.BlobDigest, ix.BlobSize)
	}
	return ix, nil
}

// readOnly reports whether err comes from a store we may read but not write.
func readOnly(err error) bool {
	return errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS)
}

// PutLayerIndex stores the layer index of blob ix.BlobDigest, atomically, and keeps it in
// memory. Importers call it (or WriteLayer) so the first mount need not read the layer.
func (s *Store) PutLayerIndex(ix *layerindex.Index) error {
	if err := s.putLayerIndex(ix); err != nil {
		return err
	}
	s.cacheIndex(ix)
	return nil
}

// PutLayerIndexData is PutLayerIndex of an index given with its encoding, data (what
// ix was decoded from, as a registry shares it), which is stored as it is: encoding an
// index again costs far more than decoding it (its checkpoints' windows are compressed
// at the best level).
func (s *Store) PutLayerIndexData(ix *layerindex.Index, data []byte) error {
	if err := s.writeLayerIndex(ix, data); err != nil {
		return err
	}
	s.cacheIndex(ix)
	return nil
}

// cacheIndex keeps the stored layer index ix in memory.
func (s *Store) cacheIndex(ix *layerindex.Index) {
	s.cacheMu.Lock()
	s.layers[ix.BlobDigest] = ix
	s.cacheMu.Unlock()
}

func (s *Store) putLayerIndex(ix *layerindex.Index) error {
	data, err := ix.MarshalBinary()
	if err != nil {
		return fmt.Errorf("store: layer index of %s: %w", ix.BlobDigest, err)
	}
	return s.writeLayerIndex(ix, data)
}

// writeLayerIndex stores data, the encoding of ix, as the layer index of blob
// ix.BlobDigest, atomically.
func (s *Store) writeLayerIndex(ix *layerindex.Index, data []byte) error {
	if err := ix.BlobDigest.Validate(); err != nil {
		return fmt.Errorf("store: layer index: blob digest %q: %w", ix.BlobDigest, err)
	}
	release, err := s.Hold()
	if err != nil {
		return err
	}
	defer release()
	return s.writeFileAtomic(s.layerIndexPath(ix.BlobDigest), data)
}

// IndexState is what the store holds for a layer's index, as inspect reports it.
type IndexState string

const (
	IndexBuilt   IndexState = "built"   // stored, and of this blob
	IndexMissing IndexState = "missing" // not built yet: built on first use
	IndexStale   IndexState = "stale"   // of an older format or another blob: rebuilt on first use
	IndexCorrupt IndexState = "corrupt" // damaged: rebuilt on first use
)

// StoredIndex returns the layer index stored for the layer desc describes, and its state,
// without ever building one (LayerIndex would, reading the whole blob).
func (s *Store) StoredIndex(desc ocispec.Descriptor) (*layerindex.Index, IndexState) {
	if desc.Digest.Validate() != nil {
		return nil, IndexMissing
	}
	data, err := os.ReadFile(s.layerIndexPath(desc.Digest))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, IndexMissing
	}
	if err != nil {
		return nil, IndexCorrupt
	}
	ix := new(layerindex.Index)
	switch err := ix.UnmarshalBinary(data); {
	case errors.Is(err, layerindex.ErrIndexVersion):
		return nil, IndexStale
	case err != nil:
		return nil, IndexCorrupt
	}
	if !matches(ix, desc) {
		return nil, IndexStale
	}
	return ix, IndexBuilt
}
