package fs

import (
	"fmt"

	"github.com/imgfs/imgfs/layerindex"
	"github.com/imgfs/imgfs/layerindex/overlay"
)

// rootfsTree returns the image's merged tree, built on first use from its layer indexes
// and kept (images never change).
func (im *image) rootfsTree() (tree, error) {
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
	im.rootfs = mergedTree{t, ixs}
	return im.rootfs, nil
}

// mergedTree shows an overlay.Tree through the tree interface the nodes use.
type mergedTree struct {
	t   *overlay.Tree
	ixs []*layerindex.Index // by layer
}

func (m mergedTree) lookup(dir uint32, name string) (uint32, bool) {
	n, ok := m.t.Lookup(overlay.Node(dir), name)
	return uint32(n), ok
}

func (m mergedTree) child(dir uint32, i int) (uint32, bool) {
	kids := m.t.Children(overlay.Node(dir))
	if i < 0 || i >= len(kids) {
		return 0, false
	}
	return uint32(kids[i]), true
}

func (m mergedTree) name(n uint32) string   { return m.t.Name(overlay.Node(n)) }
func (m mergedTree) parent(n uint32) uint32 { return uint32(m.t.Parent(overlay.Node(n))) }
func (m mergedTree) inode(n uint32) uint32  { return uint32(m.t.Inode(overlay.Node(n))) }
func (m mergedTree) nlink(n uint32) uint32  { return m.t.Nlink(overlay.Node(n)) }
func (m mergedTree) index(layer int) *layerindex.Index {
	return m.ixs[layer]
}

// entry gives layer -1 and a zero entry for the directories no layer describes, as
// rawTree does: the nodes make up their attributes.
func (m mergedTree) entry(n uint32) (int, layerindex.Entry) {
	layer, e := m.t.Entry(overlay.Node(n))
	if layer < 0 {
		return -1, layerindex.Entry{}
	}
	return layer, e
}
