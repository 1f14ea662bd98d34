package main

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/imgfs/imgfs/layerindex"
	"github.com/imgfs/imgfs/store"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Layer index states, as inspect reports them.
const (
	indexBuilt   = "built"   // stored, and of this blob
	indexMissing = "missing" // not built yet: built on first use
	indexStale   = "stale"   // of an older format or another blob: rebuilt on first use
	indexCorrupt = "corrupt" // damaged: rebuilt on first use
)

// storedIndex returns the layer index stored for the layer desc describes, without ever
// building one (store.LayerIndex would, reading the whole blob): it reads the file the
// store keeps it in, .imgfs/index/<alg>/<hex>, and says what state it is in.
func storedIndex(s *store.Store, desc ocispec.Descriptor) (*layerindex.Index, string) {
	if desc.Digest.Validate() != nil {
		return nil, indexMissing
	}
	p := filepath.Join(s.Root(), ".imgfs", "index", string(desc.Digest.Algorithm()), desc.Digest.Encoded())
	data, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, indexMissing
	}
	if err != nil {
		return nil, indexCorrupt
	}
	ix := new(layerindex.Index)
	switch err := ix.UnmarshalBinary(data); {
	case errors.Is(err, layerindex.ErrIndexVersion):
		return nil, indexStale
	case err != nil:
		return nil, indexCorrupt
	}
	if ix.BlobDigest != desc.Digest || (desc.Size > 0 && ix.BlobSize != desc.Size) {
		return nil, indexStale
	}
	return ix, indexBuilt
}

// sizer sums image sizes, remembering each layer's uncompressed size (layers are shared
// between images, and reading an index decodes all of it).
type sizer struct {
	s     *store.Store
	sizes map[digest.Digest]int64 // uncompressed size, -1 when no index is stored
}

func newSizer(s *store.Store) *sizer {
	return &sizer{s: s, sizes: make(map[digest.Digest]int64)}
}

// size returns the image's size as docker reports it, the sum of its layers' uncompressed
// sizes, when every layer has its index built; otherwise the sum of the compressed sizes
// (known from the manifest), with uncompressed false. Nothing is built to find out.
func (z *sizer) size(img store.Image) (size, compressed int64, uncompressed bool) {
	uncompressed = true
	for _, l := range img.Manifest.Layers {
		compressed += l.Size
		n, ok := z.sizes[l.Digest]
		if !ok {
			n = -1
			if ix, _ := storedIndex(z.s, l); ix != nil {
				n = ix.Size
			}
			z.sizes[l.Digest] = n
		}
		if n < 0 {
			uncompressed = false
		}
		size += n
	}
	if !uncompressed {
		size = compressed
	}
	return size, compressed, uncompressed
}
