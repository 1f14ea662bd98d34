package main

import (
	"github.com/imgfs/imgfs/store"
	"github.com/opencontainers/go-digest"
)

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
			if ix, _ := z.s.StoredIndex(l); ix != nil {
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
