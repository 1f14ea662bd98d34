package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"github.com/imgfs/imgfs/store/chunks"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// GCWaitNotice is how long GC waits for imports before it tells Store.GCWaiting.
const GCWaitNotice = time.Second

// lockGCExclusive takes the GC lock exclusively, telling s.GCWaiting once if that takes
// longer than GCWaitNotice: an import stalled between writing blobs and tagging them (a
// stopped process, a pipe nobody writes to) holds GC back for as long, and a silent wait
// looks like a hang.
func (s *Store) lockGCExclusive() (func(), error) {
	if s.GCWaiting == nil {
		return s.lockGC(syscall.LOCK_EX)
	}
	type locked struct {
		unlock func()
		err    error
	}
	done := make(chan locked, 1)
	go func() {
		unlock, err := s.lockGC(syscall.LOCK_EX)
		done <- locked{unlock, err}
	}()
	t := time.NewTimer(GCWaitNotice)
	defer t.Stop()
	select {
	case l := <-done:
		return l.unlock, l.err
	case <-t.C:
		s.GCWaiting(s.gcLockHolders())
	}
	l := <-done
	return l.unlock, l.err
}

// gcLockHolders returns the IDs of the processes holding the GC lock, from /proc/locks
// (Linux), or none if they cannot be found out. Waiters, listed there with "->", are not
// holders.
func (s *Store) gcLockHolders() []int {
	p := s.path("blobs")
	if !s.canLockDirs() {
		p = s.path(".imgfs", "gc.lock")
	}
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		return nil
	}
	data, err := os.ReadFile("/proc/locks")
	if err != nil {
		return nil
	}
	// Lines read "1: FLOCK  ADVISORY  READ  1234 fd:01:5678 0 EOF": the device as
	// hexadecimal major:minor, then the inode number.
	dev := uint64(st.Dev)
	want := fmt.Sprintf("%02x:%02x:%d", (dev>>8)&0xfff|(dev>>32)&^uint64(0xfff), dev&0xff|(dev>>12)&^uint64(0xff), st.Ino)
	var pids []int
	for line := range strings.Lines(string(data)) {
		f := strings.Fields(line)
		if len(f) < 6 || f[1] != "FLOCK" || f[5] != want {
			continue
		}
		if pid, err := strconv.Atoi(f[4]); err == nil && pid > 0 && !slices.Contains(pids, pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// TmpMaxAge is how old a file in .imgfs/tmp must be for GC to take it for a leftover of a
// killed write rather than one in progress.
const TmpMaxAge = time.Minute

// GC deletes the blobs index.json does not reach (through manifests to configs and layers,
// through image indexes to manifests), their layer indexes, layer indexes of blobs no
// longer stored, the blobs failed pulls kept (Staging), and other files in .imgfs/tmp
// older than TmpMaxAge. It reports how many files
// it removed and their bytes.
//
// It runs under the index lock and waits until no Hold is held (no import between writing
// blobs and tagging them). A reachable blob is never deleted: if a manifest cannot be read
// to find what it reaches, GC deletes nothing and says why.
func (s *Store) GC() (removed int, freed int64, err error) {
	gcUnlock, err := s.lockGCExclusive()
	if err != nil {
		return 0, 0, err
	}
	defer gcUnlock()
	unlock, err := s.lockIndex()
	if err != nil {
		return 0, 0, err
	}
	defer unlock()

	ix, err := s.readIndex()
	if err != nil {
		return 0, 0, err
	}
	keep := make(map[digest.Digest]bool)
	for _, e := range ix.entries {
		if err := s.mark(e.desc, keep, 0); err != nil {
			return 0, 0, fmt.Errorf("store: gc: nothing deleted: %w", err)
		}
	}

	remove := func(p string, fi fs.FileInfo) {
		if err := os.Remove(p); err == nil {
			removed++
			freed += fi.Size()
		}
	}
	forget := func(d digest.Digest) {
		s.cacheMu.Lock()
		delete(s.manifests, d)
		delete(s.layers, d)
		s.cacheMu.Unlock()
	}

	// Blobs, then layer indexes whose blob is unreachable or gone, but for the indexes of
	// layers that lazy mounts read from a registry: those the chunk cache holds chunks of
	// (built by streaming the layer, they are dear to build again). An index whose chunks
	// were all evicted goes, and is built again by the next mount that reads the layer.
	cached := chunks.New(s.ChunkCacheDir(), 0, 0)
	for _, sub := range []string{"blobs", filepath.Join(".imgfs", "index")} {
		algs, err := os.ReadDir(s.path(sub))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return removed, freed, fmt.Errorf("store: gc: %w", err)
		}
		for _, a := range algs {
			if !a.IsDir() {
				continue
			}
			dir := s.path(sub, a.Name())
			files, err := os.ReadDir(dir)
			if err != nil {
				return removed, freed, fmt.Errorf("store: gc: %w", err)
			}
			for _, f := range files {
				d := digest.NewDigestFromEncoded(digest.Algorithm(a.Name()), f.Name())
				if d.Validate() != nil || f.IsDir() {
					continue // not named like a blob: not ours to judge
				}
				if keep[d] || (sub != "blobs" && cached.Holds(d)) {
					continue
				}
				fi, err := f.Info()
				if err != nil {
					continue
				}
				remove(filepath.Join(dir, f.Name()), fi)
				forget(d)
			}
		}
	}

	// Blobs failed pulls kept for the next to adopt (see Staging): no Staging runs while GC
	// does, so none is in use, whatever its age.
	kept, err := os.ReadDir(s.keptDir())
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return removed, freed, fmt.Errorf("store: gc: %w", err)
	}
	for _, k := range kept {
		if fi, err := k.Info(); err == nil {
			remove(filepath.Join(s.keptDir(), k.Name()), fi)
		}
	}

	// Leftovers of killed writes.
	tmps, err := os.ReadDir(s.tmpDir())
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return removed, freed, fmt.Errorf("store: gc: %w", err)
	}
	now := time.Now()
	for _, t := range tmps {
		fi, err := t.Info()
		if err != nil || now.Sub(fi.ModTime()) < TmpMaxAge {
			continue
		}
		p := filepath.Join(s.tmpDir(), t.Name())
		if p == s.keptDir() {
			continue
		}
		if fi.IsDir() {
			if os.RemoveAll(p) == nil {
				removed++
			}
			continue
		}
		remove(p, fi)
	}
	return removed, freed, nil
}

// mark adds d and all it reaches to keep. Known layer and config types are leaves; for
// manifests, indexes and any other small blob (artifacts of other tools), the blob is read
// and the descriptors it holds followed, so nothing another tool needs is taken for
// garbage. A missing blob reaches nothing; a manifest that cannot be read is an error.
func (s *Store) mark(d ocispec.Descriptor, keep map[digest.Digest]bool, depth int) error {
	if d.Digest.Validate() != nil || keep[d.Digest] {
		return nil
	}
	keep[d.Digest] = true
	if depth > 16 || isLeafType(d.MediaType) || !s.HasBlob(d.Digest) {
		return nil
	}
	known := isManifestType(d.MediaType) || isIndexType(d.MediaType)
	if !known && (d.Size > MaxManifestSize || d.Size <= 0) {
		return nil
	}
	data, err := s.ReadBlob(d.Digest, MaxManifestSize)
	if err != nil {
		if known {
			return err
		}
		return nil
	}
	var refs struct {
		Config    *ocispec.Descriptor  `json:"config"`
		Layers    []ocispec.Descriptor `json:"layers"`
		Manifests []ocispec.Descriptor `json:"manifests"`
		Blobs     []ocispec.Descriptor `json:"blobs"`
		Subject   *ocispec.Descriptor  `json:"subject"`
	}
	if err := json.Unmarshal(data, &refs); err != nil {
		if known {
			return fmt.Errorf("manifest %s: %v", d.Digest, err)
		}
		return nil // not JSON: a leaf
	}
	var next []ocispec.Descriptor
	if refs.Config != nil {
		next = append(next, *refs.Config)
	}
	if refs.Subject != nil {
		next = append(next, *refs.Subject)
	}
	next = append(next, refs.Layers...)
	next = append(next, refs.Manifests...)
	next = append(next, refs.Blobs...)
	for _, n := range next {
		if err := s.mark(n, keep, depth+1); err != nil {
			return err
		}
	}
	return nil
}

// isLeafType reports media types of blobs that reference nothing: layers and configs.
func isLeafType(mt string) bool {
	switch mt {
	case ocispec.MediaTypeImageConfig, MediaTypeDockerConfig,
		ocispec.MediaTypeImageLayer, ocispec.MediaTypeImageLayerGzip, ocispec.MediaTypeImageLayerZstd,
		ocispec.MediaTypeImageLayerNonDistributable, ocispec.MediaTypeImageLayerNonDistributableGzip,
		ocispec.MediaTypeImageLayerNonDistributableZstd,
		MediaTypeDockerLayerGzip, MediaTypeDockerForeignGzip, ocispec.MediaTypeEmptyJSON:
		return true
	}
	return false
}
