package fs

import (
	"fmt"

	"github.com/imgfs/imgfs/layerindex"
	"github.com/imgfs/imgfs/layerindex/overlay"
)

// rootfsTree returns the image's merged tree, built on first use from its layer indexes
// and kept (images never change).
func (im *image) rootfsTree() (*overlay.Tree, error) {
	im.rootfsMu.Lock()
	defer im.rootfsMu.Unlock()
	if im.rootfs != nil {
		return im.rootfs, nil
	}
	// A failure is not kept (a layer index may be built or mended meanwhile): the next
	// lookup tries again.
	ixs := make([]*layerindex.Index, len(im.img.Manifest.Layers))
	for i := range ixs {
		ix, err := im.layerIndex(i)
		if err != nil {
			return nil, fmt.Errorf("layer %d (%s): %w", i, im.img.Manifest.Layers[i].Digest, err)
		}
		ixs[i] = ix
	}
	t, err := overlay.Merge(ixs)
	if err != nil {
		return nil, err
	}
	if n := t.Dropped(); n > 0 {
		im.fs.log.Warn("rootfs: tar entries left out (empty or NUL names, hard links to nothing, unknown types)",
			"image", im.label, "count", n)
	}
	im.rootfs = t
	return im.rootfs, nil
}
