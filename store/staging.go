package store

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/distribution/reference"
	"github.com/imgfs/imgfs/layerindex"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Staging brings an image into the store blob by blob, the way an import does: each blob
// is verified and staged in .imgfs/tmp as it is written (a layer indexed in the same
// pass), and only Commit moves them into blobs/ and tags the image, in one index.json
// update. Until then the store is held (GC waits) and blobs/ and index.json are left as
// they were. Blob and Layer may be called from several goroutines.
//
// A staged blob is kept, verified, until a Commit takes it or GC removes it, whatever
// becomes of the Staging: closed without Commit, or its process killed. A later Staging
// adopts it (AdoptLayer, AdoptBlob) instead of fetching it again, as containerd keeps the
// ingests of a broken pull. Kept blobs are named by digest in .imgfs/tmp/verified, a
// layer's index beside it, so that two Stagings of one blob (two pulls at once) write the
// same file, each by a rename of a complete, verified copy: neither sees half of the other's.
type Staging struct {
	s       *Store
	release func()
	mu      sync.Mutex
	staged  []stagedBlob
	indexes []*layerindex.Index // of layers whose blob blobs/ has already
	done    bool
}

type stagedBlob struct {
	kept string // in .imgfs/tmp/verified
	d    digest.Digest
	n    int64
	ix   *layerindex.Index // a layer's, kept at kept+".index"; nil for other blobs
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

// add keeps the verified blob staged as tmp ("": blobs/ has it) and takes it, with its
// layer index ix (nil: not a layer), into the staging.
func (st *Staging) add(tmp string, desc ocispec.Descriptor, n int64, ix *layerindex.Index) error {
	if desc.Size > 0 && n != desc.Size {
		removeTemp(tmp)
		return fmt.Errorf("store: blob %s is %d bytes, its descriptor says %d", desc.Digest, n, desc.Size)
	}
	kept := ""
	if tmp != "" {
		var err error
		if kept, err = st.s.keep(tmp, desc.Digest, ix); err != nil {
			return err
		}
	}
	return st.take(kept, desc.Digest, n, ix)
}

// take adds the kept blob kept ("": blobs/ has it) and its layer index ix (nil: not a
// layer) to what Commit places.
func (st *Staging) take(kept string, d digest.Digest, n int64, ix *layerindex.Index) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.done {
		return errors.New("store: staging already closed")
	}
	if kept != "" {
		st.staged = append(st.staged, stagedBlob{kept, d, n, ix})
	} else if ix != nil {
		st.indexes = append(st.indexes, ix)
	}
	return nil
}

// keptPath is where the verified blob d is kept until a Commit or GC; its layer index, if
// it is a layer, is at keptPath+".index".
func (s *Store) keptPath(d digest.Digest) string {
	return filepath.Join(s.keptDir(), string(d.Algorithm())+"-"+d.Encoded())
}

func (s *Store) keptDir() string { return filepath.Join(s.tmpDir(), "verified") }

// keep moves the verified blob d, staged as tmp, to keptPath, its layer index ix (nil:
// none) first: a kept blob whose index is missing is a blob whose keeping was cut short,
// and AdoptLayer passes it by.
func (s *Store) keep(tmp string, d digest.Digest, ix *layerindex.Index) (string, error) {
	p := s.keptPath(d)
	if ix != nil {
		data, err := ix.MarshalBinary()
		if err == nil {
			err = s.writeFileAtomic(p+".index", data)
		}
		if err != nil {
			removeTemp(tmp)
			return "", fmt.Errorf("store: layer index of %s: %w", d, err)
		}
	}
	if err := placeTemp(tmp, p); err != nil {
		return "", fmt.Errorf("store: keeping blob %s: %w", d, err)
	}
	return p, nil
}

// AdoptLayer stages the layer blob desc describes (its size must be set) from what an
// earlier Staging kept, and returns its layer index; it returns false when there is no
// kept copy of that size with its index, and the blob must be fetched.
//
// The kept copy is not hashed again: stageBlob hashed every byte on its way to disk and
// renamed the fsynced file under its digest only when they matched, so only a disk fault
// or a hand could have changed it since, as for a blob in blobs/, which is not re-hashed on
// use either. Reads through the layer index check each span's CRC-32C, so damage done
// later still shows there; the size check catches a copy cut short.
func (st *Staging) AdoptLayer(desc ocispec.Descriptor) (*layerindex.Index, bool) {
	if checkDesc(desc) != nil || desc.Size <= 0 {
		return nil, false
	}
	p := st.s.keptPath(desc.Digest)
	ix, err := loadIndex(p+".index", desc)
	if ix == nil || err != nil {
		return nil, false
	}
	if fi, err := os.Stat(p); err != nil || !fi.Mode().IsRegular() || fi.Size() != desc.Size {
		return nil, false
	}
	if st.take(p, desc.Digest, desc.Size, ix) != nil {
		return nil, false
	}
	return ix, true
}

// AdoptBlob stages the small blob desc describes (a config: at most maxSize bytes) from
// what an earlier Staging kept, and returns its bytes, verified against its digest again
// (cheap at that size, and the caller parses them); false when there is no good copy.
func (st *Staging) AdoptBlob(desc ocispec.Descriptor, maxSize int64) ([]byte, bool) {
	if checkDesc(desc) != nil || desc.Size <= 0 || desc.Size > maxSize {
		return nil, false
	}
	p := st.s.keptPath(desc.Digest)
	f, err := os.Open(p)
	if err != nil {
		return nil, false
	}
	data, err := readVerified(f, desc.Digest, maxSize)
	f.Close()
	if err != nil || int64(len(data)) != desc.Size || st.take(p, desc.Digest, desc.Size, nil) != nil {
		return nil, false
	}
	return data, true
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
	for _, b := range st.staged {
		err := st.s.placeBlob(b.kept, b.d, b.n)
		if errors.Is(err, fs.ErrNotExist) && st.s.HasBlob(b.d) {
			// Another Staging of the same blob committed first, taking the kept copy
			// this one had too (the same bytes).
			err = nil
		}
		if err != nil {
			return err
		}
		if b.ix != nil {
			// The kept index file goes into place as it is: encoding a big layer's index
			// again would cost as much as a tenth of its download.
			if err := placeTemp(b.kept+".index", st.s.layerIndexPath(b.d)); err == nil {
				st.s.cacheIndex(b.ix)
			} else if err := st.s.PutLayerIndex(b.ix); err != nil {
				return err // its kept file was gone (another Staging took it) and no other could be written
			}
		}
	}
	st.staged = nil
	for _, ix := range st.indexes {
		if err := st.s.PutLayerIndex(ix); err != nil {
			return err
		}
	}
	_, err := st.s.applyTags([]tagOp{{name: tagged, desc: target}})
	return err
}

// Close releases the store. What was staged and not committed stays kept, verified, for a
// later Staging to adopt or GC to remove.
func (st *Staging) Close() {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.done {
		return
	}
	st.done = true
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
