package fs

import "errors"

// rootfsAvailable says whether images have a rootfs/ (the overlay of their layers).
// TODO(#4): layerindex/overlay.
const rootfsAvailable = false

func (im *image) rootfsTree() (tree, error) {
	return nil, errors.New("rootfs: not there yet")
}
