package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// maxIndexJSON bounds index.json; at ~400 bytes a descriptor that is some 40000 names.
const maxIndexJSON = 16 << 20

// indexFile is index.json as read, keeping what we do not model (top-level fields, fields
// of descriptors other tools added) so that rewriting it loses nothing of theirs.
type indexFile struct {
	top     map[string]json.RawMessage // every field but "manifests"
	entries []indexEntry
}

type indexEntry struct {
	raw  json.RawMessage // as read; nil for an entry we made or changed
	desc ocispec.Descriptor
}

func (s *Store) readIndex() (*indexFile, error) {
	p := s.path("index.json")
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	defer f.Close()
	var top map[string]json.RawMessage
	dec := json.NewDecoder(&limitedReader{f, maxIndexJSON})
	if err := dec.Decode(&top); err != nil {
		return nil, fmt.Errorf("store: %s: %v", p, err)
	}
	ix := &indexFile{top: top}
	if m, ok := top["manifests"]; ok {
		var raws []json.RawMessage
		if err := json.Unmarshal(m, &raws); err != nil {
			return nil, fmt.Errorf("store: %s: manifests: %v", p, err)
		}
		for i, r := range raws {
			e := indexEntry{raw: r}
			if err := json.Unmarshal(r, &e.desc); err != nil {
				return nil, fmt.Errorf("store: %s: manifests[%d]: %v", p, i, err)
			}
			ix.entries = append(ix.entries, e)
		}
		delete(top, "manifests")
	}
	if ix.top == nil {
		ix.top = map[string]json.RawMessage{}
	}
	return ix, nil
}

// limitedReader fails, rather than silently truncating, past its limit.
type limitedReader struct {
	r *os.File
	n int64
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errors.New("file too large")
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

// marshal encodes the index with schemaVersion and mediaType first and manifests last, as
// people expect to read it, other fields in between.
func (ix *indexFile) marshal() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	keys := make([]string, 0, len(ix.top))
	for k := range ix.top {
		keys = append(keys, k)
	}
	rank := func(k string) int {
		switch k {
		case "schemaVersion":
			return 0
		case "mediaType":
			return 1
		}
		return 2
	}
	sort.Slice(keys, func(i, j int) bool {
		if ri, rj := rank(keys[i]), rank(keys[j]); ri != rj {
			return ri < rj
		}
		return keys[i] < keys[j]
	})
	if _, ok := ix.top["schemaVersion"]; !ok {
		b.WriteString(`"schemaVersion":2,`)
	}
	for _, k := range keys {
		kj, _ := json.Marshal(k)
		b.Write(kj)
		b.WriteByte(':')
		b.Write(ix.top[k])
		b.WriteByte(',')
	}
	b.WriteString(`"manifests":[`)
	for i, e := range ix.entries {
		if i > 0 {
			b.WriteByte(',')
		}
		if e.raw != nil {
			if err := json.Compact(&b, e.raw); err != nil {
				return nil, err
			}
			continue
		}
		d, err := json.Marshal(e.desc)
		if err != nil {
			return nil, err
		}
		b.Write(d)
	}
	b.WriteString("]}")
	return b.Bytes(), nil
}

// updateIndex re-reads index.json under the exclusive lock, lets f change it and, if f
// says so, writes it back atomically. Re-reading inside the lock is what makes writers in
// several processes all land.
func (s *Store) updateIndex(f func(ix *indexFile) (changed bool, err error)) error {
	unlock, err := s.lockIndex()
	if err != nil {
		return err
	}
	defer unlock()
	ix, err := s.readIndex()
	if err != nil {
		return err
	}
	changed, err := f(ix)
	if err != nil || !changed {
		return err
	}
	data, err := ix.marshal()
	if err != nil {
		return fmt.Errorf("store: index.json: %w", err)
	}
	return s.writeFileAtomic(s.path("index.json"), data)
}

// entryName returns the name an index.json descriptor gives its image, or nil when it is
// reachable by ID only. io.containerd.image.name (a full reference) comes first; else
// org.opencontainers.image.ref.name when it is itself a name with a tag or digest, as
// skopeo writes for oci:DIR:busybox:latest; a bare tag ("latest") names nothing.
func entryName(d ocispec.Descriptor) reference.Named {
	if n, err := reference.ParseNormalizedNamed(d.Annotations[AnnotationImageName]); err == nil && !reference.IsNameOnly(n) {
		return n
	}
	ref := d.Annotations[AnnotationRefName]
	if ref == "" {
		return nil
	}
	n, err := reference.ParseNormalizedNamed(ref)
	if err != nil || reference.IsNameOnly(n) {
		return nil
	}
	return n
}

// tagAnnotations are the name annotations Tag writes for name.
func tagAnnotations(name reference.NamedTagged) map[string]string {
	return map[string]string{
		AnnotationImageName: name.String(),
		AnnotationRefName:   name.Tag(),
	}
}

// Tag names the image whose manifest (or image index) manifest describes; the blob must
// be stored. A name without tag gets "latest"; a digest name is refused, the digest being
// the manifest's own. Descriptors already carrying the name are replaced by the new one;
// all others, whoever wrote them, are kept as they are.
func (s *Store) Tag(name reference.Named, manifest ocispec.Descriptor) error {
	tagged, err := tagName(name)
	if err != nil {
		return err
	}
	release, err := s.Hold()
	if err != nil {
		return err
	}
	defer release()
	if !s.HasBlob(manifest.Digest) {
		return fmt.Errorf("store: tag %s: manifest %s is not in the store", reference.FamiliarString(tagged), manifest.Digest)
	}
	desc := manifest
	desc.Annotations = make(map[string]string, len(manifest.Annotations)+2)
	for k, v := range manifest.Annotations {
		desc.Annotations[k] = v
	}
	for k, v := range tagAnnotations(tagged) {
		desc.Annotations[k] = v
	}
	return s.updateIndex(func(ix *indexFile) (bool, error) {
		kept := ix.entries[:0]
		for _, e := range ix.entries {
			if n := entryName(e.desc); n != nil && n.String() == tagged.String() {
				continue
			}
			kept = append(kept, e)
		}
		ix.entries = append(kept, indexEntry{desc: desc})
		return true, nil
	})
}

// tagName checks and completes a name to tag with.
func tagName(name reference.Named) (reference.NamedTagged, error) {
	if name == nil {
		return nil, errors.New("store: tag: no name")
	}
	if _, ok := name.(reference.Digested); ok {
		return nil, fmt.Errorf("store: tag %s: cannot tag with a digest", name)
	}
	// Normalize, whatever parser made name (a familiar "busybox" must match
	// docker.io/library/busybox in index.json).
	n, err := reference.ParseNormalizedNamed(name.String())
	if err != nil {
		return nil, fmt.Errorf("store: tag %s: %w", name, err)
	}
	tagged, ok := reference.TagNameOnly(n).(reference.NamedTagged)
	if !ok {
		return nil, fmt.Errorf("store: tag %s: not a tagged name", name)
	}
	return tagged, nil
}

// Untag removes name from index.json. The image stays if it has other names; its blobs are
// left for GC either way. A name without tag means "latest".
func (s *Store) Untag(name reference.Named) error {
	tagged, err := tagName(name)
	if err != nil {
		return err
	}
	return s.updateIndex(func(ix *indexFile) (bool, error) {
		n0 := len(ix.entries)
		ix.entries = slices.DeleteFunc(ix.entries, func(e indexEntry) bool {
			n := entryName(e.desc)
			return n != nil && n.String() == tagged.String()
		})
		if len(ix.entries) == n0 {
			return false, fmt.Errorf("%w: %s", ErrNoSuchImage, reference.FamiliarString(tagged))
		}
		return true, nil
	})
}

// RemoveUntagged drops the unnamed descriptors of the given manifests (or image indexes)
// from index.json: `imgfs rm ID` of an image that has no name. Named descriptors of the
// same manifests stay. It reports how many descriptors went.
func (s *Store) RemoveUntagged(manifests map[digest.Digest]bool) (int, error) {
	removed := 0
	err := s.updateIndex(func(ix *indexFile) (bool, error) {
		n0 := len(ix.entries)
		ix.entries = slices.DeleteFunc(ix.entries, func(e indexEntry) bool {
			return manifests[e.desc.Digest] && entryName(e.desc) == nil
		})
		removed = n0 - len(ix.entries)
		return removed > 0, nil
	})
	return removed, err
}

// AddUntagged records a manifest (or image index) in index.json without a name, so that
// it is kept by GC and reachable by its image ID. Nothing changes if an unnamed descriptor
// of it is there already. Annotations naming it are dropped.
func (s *Store) AddUntagged(manifest ocispec.Descriptor) error {
	release, err := s.Hold()
	if err != nil {
		return err
	}
	defer release()
	if !s.HasBlob(manifest.Digest) {
		return fmt.Errorf("store: manifest %s is not in the store", manifest.Digest)
	}
	desc := manifest
	desc.Annotations = nil
	for k, v := range manifest.Annotations {
		if k == AnnotationImageName || k == AnnotationRefName {
			continue
		}
		if desc.Annotations == nil {
			desc.Annotations = map[string]string{}
		}
		desc.Annotations[k] = v
	}
	return s.updateIndex(func(ix *indexFile) (bool, error) {
		for _, e := range ix.entries {
			if e.desc.Digest == desc.Digest && entryName(e.desc) == nil {
				return false, nil
			}
		}
		ix.entries = append(ix.entries, indexEntry{desc: desc})
		return true, nil
	})
}

// isHex reports whether s is lower-case hex.
func isHex(s string) bool {
	return s != "" && strings.Trim(s, "0123456789abcdef") == ""
}
