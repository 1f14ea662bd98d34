package fs

import (
	"fmt"
	"runtime"

	"github.com/imgfs/imgfs/internal/par"
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
	// The indexes are loaded (or, for a registry's layer, built by streaming it) a few at a
	// time: each is CPU-bound on one core.
	ixs := make([]*layerindex.Index, len(im.img.Manifest.Layers))
	errs := make([]error, len(ixs))
	par.Do(len(ixs), runtime.GOMAXPROCS(0), func(i int) { ixs[i], errs[i] = im.layerIndex(i) })
	for i, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("layer %d (%s): %w", i, im.img.Manifest.Layers[i].Digest, err)
		}
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
