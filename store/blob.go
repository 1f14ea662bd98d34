package store

import (
	_ "crypto/sha256" // digest algorithms go-digest looks up through crypto.Hash
	_ "crypto/sha512"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/imgfs/imgfs/layerindex"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// BlobPath returns where blob d is (or would be) stored. It returns "" for a malformed
// digest, so that a digest read from an untrusted manifest ("sha256:../../x") never names a
// file outside the store.
func (s *Store) BlobPath(d digest.Digest) string {
	if d.Validate() != nil {
		return ""
	}
	return s.path("blobs", string(d.Algorithm()), d.Encoded())
}

// blobPath is BlobPath with the malformed digest as an error.
func (s *Store) blobPath(d digest.Digest) (string, error) {
	if err := d.Validate(); err != nil {
		return "", fmt.Errorf("store: blob %q: %w", d, err)
	}
	return s.BlobPath(d), nil
}

// HasBlob reports whether blob d is stored.
func (s *Store) HasBlob(d digest.Digest) bool {
	p := s.BlobPath(d)
	if p == "" {
		return false
	}
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// OpenBlob opens blob d for reading. Its content is not verified (layers are big; the
// layer index build verifies them once). A missing blob yields an error naming the digest
// and wrapping fs.ErrNotExist.
func (s *Store) OpenBlob(d digest.Digest) (*os.File, error) {
	p, err := s.blobPath(d)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("store: blob %s: %w", d, fs.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("store: blob %s: %w", d, err)
	}
	return f, nil
}

// ReadBlob reads a small blob (manifest, index, config) whole and verifies it against d, so
// a damaged manifest is never parsed. Blobs over maxSize bytes are refused.
func (s *Store) ReadBlob(d digest.Digest, maxSize int64) ([]byte, error) {
	f, err := s.OpenBlob(d)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readVerified(f, d, maxSize)
}

// readVerified is ReadBlob of the open blob f.
func readVerified(f *os.File, d digest.Digest, maxSize int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(f, maxSize+1))
	if err != nil {
		return nil, fmt.Errorf("store: blob %s: %w", d, err)
	}
	if int64(len(data)) > maxSize {
		return nil, fmt.Errorf("store: blob %s: larger than %d bytes", d, maxSize)
	}
	if got := d.Algorithm().FromBytes(data); got != d {
		return nil, fmt.Errorf("store: blob %s: %w: content hashes to %s", d, ErrDigestMismatch, got)
	}
	return data, nil
}

// WriteBlob stores the blob read from r and returns its digest and size. r is read to its
// end exactly once, whatever happens short of an error, so a caller can build something
// else in the same pass by handing in an io.TeeReader (see WriteLayer).
//
// The bytes go to a temp file in .imgfs/tmp, hashed on the way (with expected's algorithm,
// else sha256); if expected is not empty and they do not match it, the temp file is
// removed, the store is left untouched and the error names both digests. Otherwise the
// file is fsynced and renamed into blobs/, and the directory fsynced. A blob already
// present is not rewritten if it still hashes to its digest (r is then only hashed, to
// verify it); a damaged one is replaced.
func (s *Store) WriteBlob(r io.Reader, expected digest.Digest) (digest.Digest, int64, error) {
	release, err := s.Hold()
	if err != nil {
		return "", 0, err
	}
	defer release()
	d, n, tmp, err := s.stageBlob(r, expected)
	if err != nil {
		return d, n, err
	}
	if err := s.placeBlob(tmp, d, n); err != nil {
		return "", 0, err
	}
	return d, n, nil
}

// stageBlob is WriteBlob up to the rename: the blob, verified and fsynced, is left in the
// temp file tmp for placeBlob to move into blobs/, or for the caller to remove; tmp is ""
// when blobs/ has the blob already. An import stages what it reads and places only what
// the images it adds name, so that a refused import, or a member no manifest names, leaves
// nothing in blobs/ (and never a blob that another import, seeing it there, counts on).
// The caller holds the store (Hold).
func (s *Store) stageBlob(r io.Reader, expected digest.Digest) (d digest.Digest, n int64, tmp string, err error) {
	alg := digest.Canonical
	if expected != "" {
		if err := expected.Validate(); err != nil {
			return "", 0, "", fmt.Errorf("store: expected digest %q: %w", expected, err)
		}
		alg = expected.Algorithm()
	}

	if fi, err := os.Stat(s.BlobPath(expected)); expected != "" && err == nil && fi.Mode().IsRegular() && s.blobIntact(expected) {
		// Still read r through: the caller may be teeing it, and the bytes must be what
		// they claim even if we keep our copy. A stored copy that no longer hashes to its
		// digest (a disk or a hand changed it since it was verified) is replaced by this
		// one, the one chance to mend it.
		dg := alg.Digester()
		n, err := io.Copy(dg.Hash(), r)
		if err != nil {
			return "", n, "", fmt.Errorf("store: blob %s: %w", expected, err)
		}
		if got := dg.Digest(); got != expected {
			return got, n, "", fmt.Errorf("store: blob: %w: expected %s, got %s", ErrDigestMismatch, expected, got)
		}
		return expected, n, "", nil
	}

	f, err := s.createTemp("blob-*")
	if err != nil {
		return "", 0, "", err
	}
	discard := func() {
		f.Close()
		os.Remove(f.Name())
	}
	dg := alg.Digester()
	n, err = io.Copy(io.MultiWriter(&writeBehind{f: f}, dg.Hash()), r)
	if err != nil {
		discard()
		return "", 0, "", fmt.Errorf("store: writing blob: %w", err)
	}
	got := dg.Digest()
	if expected != "" && got != expected {
		discard()
		return got, n, "", fmt.Errorf("store: blob: %w: expected %s, got %s", ErrDigestMismatch, expected, got)
	}
	if fi, err := os.Stat(s.BlobPath(got)); err == nil && fi.Size() == n && s.blobIntact(got) {
		// Someone stored it meanwhile (or it was there and no digest was expected).
		discard()
		return got, n, "", nil
	}
	if err := finishTemp(f); err != nil {
		return "", 0, "", err
	}
	return got, n, f.Name(), nil
}

// placeBlob renames blob d of n bytes, staged as tmp by stageBlob, into blobs/ ("": it is
// there already). The temp file is gone afterwards, whatever happens.
func (s *Store) placeBlob(tmp string, d digest.Digest, n int64) error {
	if tmp == "" {
		return nil
	}
	dst := s.BlobPath(d)
	if fi, err := os.Stat(dst); err == nil && fi.Mode().IsRegular() && fi.Size() == n && s.blobIntact(d) {
		os.Remove(tmp) // someone stored it meanwhile
		return nil
	}
	return placeTemp(tmp, dst)
}

// blobIntact reports whether the stored blob d hashes to d.
func (s *Store) blobIntact(d digest.Digest) bool {
	f, err := os.Open(s.BlobPath(d))
	if err != nil {
		return false
	}
	defer f.Close()
	dg := d.Algorithm().Digester()
	if _, err := io.Copy(dg.Hash(), f); err != nil {
		return false
	}
	return dg.Digest() == d
}

// WriteLayer stores a layer blob and its layer index in one pass over r: the bytes
// WriteBlob reads are teed into layerindex.Build. desc gives the expected digest, which
// must be set. A blob that does not index as a layer is not stored.
func (s *Store) WriteLayer(r io.Reader, desc ocispec.Descriptor) (*layerindex.Index, error) {
	if desc.Digest == "" {
		return nil, errors.New("store: WriteLayer: descriptor has no digest")
	}
	release, err := s.Hold()
	if err != nil {
		return nil, err
	}
	defer release()
	_, n, tmp, ix, ixErr, err := s.stageLayer(r, desc.Digest)
	if err != nil {
		return nil, err
	}
	if ixErr != nil {
		removeTemp(tmp)
		return nil, fmt.Errorf("store: indexing layer %s: %w", desc.Digest, ixErr)
	}
	if err := s.placeBlob(tmp, desc.Digest, n); err != nil {
		return nil, err
	}
	if err := s.PutLayerIndex(ix); err != nil {
		return nil, err
	}
	return ix, nil
}
