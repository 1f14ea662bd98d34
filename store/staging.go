package store

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/distribution/reference"
	"github.com/imgfs/imgfs/layerindex"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Staging brings an image into the store blob by blob, the way an import does: each blob
// is verified and staged in .imgfs/tmp as it is written (a layer indexed in the same
// pass), and only Commit moves them into blobs/ and tags the image, in one index.json
// update. Until then the store is held (GC waits) and left as it was: Close removes
// whatever was not committed. Blob and Layer may be called from several goroutines.
type Staging struct {
	s       *Store
	release func()
	mu      sync.Mutex
	staged  []stagedBlob
	indexes []*layerindex.Index
	done    bool
}

type stagedBlob struct {
	tmp string
	d   digest.Digest
	n   int64
}

// Stage starts a Staging. The caller must Close it.
func (s *Store) Stage() (*Staging, error) {
	release, err := s.Hold()
	if err != nil {
		return nil, err
	}
	return &Staging{s: s, release: release}, nil
}

// checkDesc refuses a descriptor without a valid digest.
func checkDesc(desc ocispec.Descriptor) error {
	if err := desc.Digest.Validate(); err != nil {
		return fmt.Errorf("store: blob %q: %w", desc.Digest, err)
	}
	return nil
}

// Blob stages the blob desc describes, read from r, verified against its digest and, when
// desc.Size is set, its size.
func (st *Staging) Blob(r io.Reader, desc ocispec.Descriptor) error {
	if err := checkDesc(desc); err != nil {
		return err
	}
	_, n, tmp, err := st.s.stageBlob(r, desc.Digest)
	if err != nil {
		return err
	}
	return st.add(tmp, desc, n, nil)
}

// Layer stages the layer blob desc describes, read from r, verified as Blob does, and
// builds its layer index in the same pass. The index (its DiffID is the layer's) is
// stored by Commit.
func (st *Staging) Layer(r io.Reader, desc ocispec.Descriptor) (*layerindex.Index, error) {
	if err := checkDesc(desc); err != nil {
		return nil, err
	}
	_, n, tmp, ix, ixErr, err := st.s.stageLayer(r, desc.Digest)
	if err != nil {
		return nil, err
	}
	if ixErr != nil {
		removeTemp(tmp)
		return nil, fmt.Errorf("store: indexing layer %s: %w", desc.Digest, ixErr)
	}
	if err := st.add(tmp, desc, n, ix); err != nil {
		return nil, err
	}
	return ix, nil
}

func (st *Staging) add(tmp string, desc ocispec.Descriptor, n int64, ix *layerindex.Index) error {
	if desc.Size > 0 && n != desc.Size {
		removeTemp(tmp)
		return fmt.Errorf("store: blob %s is %d bytes, its descriptor says %d", desc.Digest, n, desc.Size)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.done {
		removeTemp(tmp)
		return errors.New("store: staging already closed")
	}
	if tmp != "" {
		st.staged = append(st.staged, stagedBlob{tmp, desc.Digest, n})
	}
	if ix != nil {
		st.indexes = append(st.indexes, ix)
	}
	return nil
}

// Commit moves every staged blob into blobs/, stores the layer indexes and tags target
// (a manifest or image index, staged or stored) as name, or adds it untagged when name is
// nil (a pull by digest): index.json changes here only.
func (st *Staging) Commit(name reference.Named, target ocispec.Descriptor) error {
	var tagged reference.NamedTagged
	if name != nil {
		var err error
		if tagged, err = tagName(name); err != nil {
			return err
		}
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.done {
		return errors.New("store: staging already closed")
	}
	for i := range st.staged {
		b := &st.staged[i]
		err := st.s.placeBlob(b.tmp, b.d, b.n)
		b.tmp = ""
		if err != nil {
			return err
		}
	}
	for _, ix := range st.indexes {
		if err := st.s.PutLayerIndex(ix); err != nil {
			return err
		}
	}
	_, err := st.s.applyTags([]tagOp{{name: tagged, desc: target}})
	return err
}

// Close removes what was staged and not committed, and releases the store.
func (st *Staging) Close() {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.done {
		return
	}
	st.done = true
	for _, b := range st.staged {
		removeTemp(b.tmp)
	}
	st.staged = nil
	st.release()
}

// PickPlatform returns the entry of an image index's manifests that suits the store's
// platform (Platform, else this machine's) best.
func (s *Store) PickPlatform(manifests []ocispec.Descriptor) (ocispec.Descriptor, error) {
	want := s.platform()
	best, bestRank := -1, -1
	for i, m := range manifests {
		r := platformRank(want, m.Platform)
		if r >= 0 && (best < 0 || r < bestRank) {
			best, bestRank = i, r
		}
	}
	if best < 0 {
		return ocispec.Descriptor{}, fmt.Errorf("no manifest for platform %s", platformString(want))
	}
	return manifests[best], nil
}
