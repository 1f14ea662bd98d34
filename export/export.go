// Package export makes `docker save` archives of images in the store without writing
// them anywhere: an Archive is a plan, an ordered list of tar members, each a header
// computed up front and a content that is either a small document in memory or a range
// of a layer's uncompressed stream, read only when that part of the archive is. Its size
// is known exactly before the first read, ReadAt serves any offset (the filesystem's
// export.tar files), WriteTo streams the whole (imgfs save), and the bytes are the same
// on every read and every machine.
//
// The archive is what Docker Engine's `docker save` writes with the classic image store
// (Docker 25 and later: an OCI image layout plus docker's manifest.json):
//
//	blobs/                  dir 0755, mtime the created time of the last image
//	blobs/sha256/           dir 0755, mtime 0
//	blobs/sha256/<hex>      sorted by hex: each config (its bytes as stored), each layer
//	                        uncompressed and named by its diffID (once, however often it
//	                        is shared), each image's OCI manifest, each legacy v1 layer JSON
//	index.json              one manifest descriptor per tag (a bare one for an untagged image)
//	manifest.json           [{Config, RepoTags, Layers, LayerSources}], newline at the end
//	oci-layout              {"imageLayoutVersion": "1.0.0"}
//	repositories            {"busybox":{"latest":"<top layer diffID hex>"}}, when tagged
//
// in tar members as docker's archive writer makes them: USTAR headers (PAX only for a
// member of 8 GiB or more), uid/gid 0 without names, files 0644, directories 0755, two
// zero blocks at the end. The mtimes are Docker 29's: a config, a layer and a v1 JSON
// carry the created time of (the first) image holding them, the OCI manifests, index.json,
// manifest.json, oci-layout, repositories and blobs/sha256/ carry 0. (Before moby#51365,
// Docker 28 and 29.0-rc among them, blobs/sha256/ carried the time of the save; before
// moby#48611, Docker 25 among them, index.json did too.)
//
// Where docker's output is not fixed, this package fixes it: images come sorted by name
// (untagged ones last, by ID), where docker follows a map's random order; the v1 JSON of
// a lower layer carries 1970-01-01T00:00:00Z where docker writes that instant in the
// daemon's time zone; every untagged image is in index.json (Docker 29 lists an untagged
// image only when no descriptor was listed before it, so at most one, if it comes first).
//
// The OCI manifest of an image is the stored one when that is already what docker would
// write (the image came from a docker save); otherwise it is written as Docker 26+ does
// (no platform in the config descriptor). The legacy v1 layer JSONs and their IDs
// (docker's v1.CreateID over the layers' chain IDs) are encoded as Docker 25 to 28 encode
// them; Docker 29 leaves an empty OnBuild out of them, which gives other v1 IDs. Nothing
// reads these blobs but pre-1.10 docker.
package export

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/imgfs/imgfs/internal/par"
	"github.com/imgfs/imgfs/layerindex"
	"github.com/imgfs/imgfs/store"
)

// Layers opens the uncompressed stream of a layer: store.Layers, the store's pool of open
// layers, is one. An Archive opens each of its layers once, as it is planned, and reads
// that stream for as long as it is used: a Layers must keep a stream it returned readable
// that long, its blob open even when the blob's file is removed (imgfs rm and gc while an
// export.tar is read).
type Layers interface {
	// Layer returns the uncompressed stream of the layer desc (a manifest layer
	// descriptor) and its size.
	Layer(desc ocispec.Descriptor) (io.ReaderAt, int64, error)
}

// Blobs is where an archive's small blobs (manifests, configs) and layer indexes come
// from: the store (*store.Store is one), or a mount's registries besides.
type Blobs interface {
	// ReadBlob returns small blob d, verified against its digest, of at most maxSize bytes.
	ReadBlob(d digest.Digest, maxSize int64) ([]byte, error)
	// LayerStream returns the index of layer desc, its entries maybe left out.
	LayerStream(desc ocispec.Descriptor) (*layerindex.Index, error)
}

// Archive is the plan of one docker save archive. It is immutable and safe for concurrent
// use (as far as the streams its Layers gave are).
type Archive struct {
	members []member
	size    int64
}

// member is one tar member: header blocks, then size bytes of content (data, or the layer
// stream r of desc), then zeros up to the next 512-byte block.
type member struct {
	off  int64
	hdr  []byte
	data []byte
	desc *ocispec.Descriptor // a layer
	r    io.ReaderAt         // its stream, opened when planned
	size int64
}

func (m *member) end() int64 { return m.off + int64(len(m.hdr)) + blocks(m.size) }

func blocks(n int64) int64 { return (n + blockSize - 1) / blockSize * blockSize }

const (
	blockSize   = 512
	trailerSize = 2 * blockSize
	// chunkSize is the read size of WriteTo: large, so that layer readers read ahead.
	chunkSize = 1 << 20
)

// image is one image of the archive: every name it is saved under and what docker writes
// of it.
type image struct {
	id       digest.Digest
	refs     []reference.NamedTagged // sorted
	entries  []store.Image           // sorted by manifest digest
	config   []byte
	created  time.Time // the mtime of its blobs
	diffIDs  []digest.Digest
	layers   []ocispec.Descriptor // the manifest's, for Layers.Layer
	sizes    []int64              // uncompressed
	manifest []byte               // the OCI manifest in the archive
	v1       [][]byte             // legacy v1 JSON of each layer
}

// blob is a file of blobs/sha256/.
type blob struct {
	hex   string
	mtime time.Time
	data  []byte
	desc  *ocispec.Descriptor
	r     io.ReaderAt // desc's stream
	size  int64
}

// New plans the archive of images. Each store.Image is one name (Name nil = untagged);
// several entries with the same ID are one image with several RepoTags. Only small blobs
// (configs, manifests) and layer indexes are read; every layer is opened through layers
// now, so that the archive reads on whatever happens to the store (see Layers), and its
// contents are read when the archive is.
func New(s Blobs, images []store.Image, layers Layers) (*Archive, error) {
	if len(images) == 0 {
		return nil, errors.New("export: no images")
	}
	byID := map[digest.Digest]*image{}
	var list []*image
	for _, e := range images {
		im := byID[e.ID]
		if im == nil {
			im = &image{id: e.ID}
			byID[e.ID] = im
			list = append(list, im)
		}
		im.entries = append(im.entries, e)
		if ref, ok := tagOf(e.Name); ok && !slices.ContainsFunc(im.refs, func(r reference.NamedTagged) bool {
			return r.String() == ref.String()
		}) {
			im.refs = append(im.refs, ref)
		}
	}
	for _, im := range list {
		slices.SortFunc(im.refs, func(a, b reference.NamedTagged) int { return strings.Compare(a.String(), b.String()) })
		slices.SortStableFunc(im.entries, func(a, b store.Image) int {
			return strings.Compare(string(a.Descriptor.Digest), string(b.Descriptor.Digest))
		})
		if err := im.load(s); err != nil {
			return nil, fmt.Errorf("export: image %s: %w", im.id, err)
		}
	}
	slices.SortFunc(list, func(a, b *image) int {
		switch {
		case len(a.refs) > 0 && len(b.refs) > 0:
			if c := strings.Compare(a.refs[0].String(), b.refs[0].String()); c != 0 {
				return c
			}
		case len(a.refs) > 0:
			return -1
		case len(b.refs) > 0:
			return 1
		}
		return strings.Compare(string(a.id), string(b.id))
	})
	return plan(list, layers)
}

// tagOf returns the tagged name an image is saved under, as docker's save takes names: a
// digested name gives none, a name without tag means latest.
func tagOf(n reference.Named) (reference.NamedTagged, bool) {
	if n == nil {
		return nil, false
	}
	if _, ok := n.(reference.Canonical); ok {
		return nil, false
	}
	t, ok := reference.TagNameOnly(n).(reference.NamedTagged)
	return t, ok
}

// load reads the image's config and layer indexes and makes its documents.
func (im *image) load(s Blobs) error {
	var err error
	if im.config, err = s.ReadBlob(im.id, store.MaxConfigSize); err != nil {
		return err
	}
	var cfg imageJSON
	if err := json.Unmarshal(im.config, &cfg); err != nil {
		return fmt.Errorf("config: %v", err)
	}
	if cfg.RootFS == nil || len(cfg.RootFS.DiffIDs) == 0 {
		return errors.New("config lists no layers (docker cannot save such an image either)")
	}
	im.diffIDs = cfg.RootFS.DiffIDs
	for _, d := range im.diffIDs {
		if err := d.Validate(); err != nil {
			return fmt.Errorf("config: diffID %q: %v", d, err)
		}
	}
	im.created = time.Unix(0, 0)
	if cfg.Created != nil && !cfg.Created.IsZero() {
		im.created = cfg.Created.Truncate(time.Second)
	}

	first := im.entries[0]
	if len(first.Manifest.Layers) != len(im.diffIDs) {
		return fmt.Errorf("manifest %s has %d layers, its config %d", first.Descriptor.Digest, len(first.Manifest.Layers), len(im.diffIDs))
	}
	im.layers = first.Manifest.Layers
	im.sizes = make([]int64, len(im.layers))
	ixs, err := layerIndexes(s, im.layers)
	if err != nil {
		return err
	}
	for i, ix := range ixs {
		if ix.DiffID != im.diffIDs[i] {
			return fmt.Errorf("layer %s: diffID %s differs from the config's %s", im.layers[i].Digest, ix.DiffID, im.diffIDs[i])
		}
		im.sizes[i] = ix.Size
	}

	for _, e := range im.entries {
		if reusable(e, int64(len(im.config)), im.diffIDs, im.sizes) {
			if im.manifest, err = s.ReadBlob(e.Descriptor.Digest, store.MaxManifestSize); err != nil {
				return err
			}
			break
		}
	}
	if im.manifest == nil {
		if im.manifest, err = ociManifest(im.id, int64(len(im.config)), im.diffIDs, im.sizes); err != nil {
			return err
		}
	}
	im.v1, err = v1Layers(&cfg, im.diffIDs)
	return err
}

// layerIndexes loads the indexes of layers, a few at a time: a cold load parses the whole
// table of contents (milliseconds for a big layer), and an export waits for all of them
// before its first byte.
func layerIndexes(s Blobs, layers []ocispec.Descriptor) ([]*layerindex.Index, error) {
	ixs := make([]*layerindex.Index, len(layers))
	errs := make([]error, len(layers))
	par.Do(len(layers), runtime.GOMAXPROCS(0), func(i int) { ixs[i], errs[i] = s.LayerStream(layers[i]) })
	return ixs, errors.Join(errs...)
}

// plan lays out the members of the archive of images, in docker's order.
func plan(images []*image, layers Layers) (*Archive, error) {
	epoch := time.Unix(0, 0)
	blobs := map[string]*blob{}
	add := func(b *blob) {
		if blobs[b.hex] == nil {
			blobs[b.hex] = b
		}
	}
	for _, im := range images {
		add(&blob{hex: im.id.Encoded(), mtime: im.created, data: im.config, size: int64(len(im.config))})
		for i, d := range im.diffIDs {
			add(&blob{hex: d.Encoded(), mtime: im.created, desc: &im.layers[i], size: im.sizes[i]})
			v1 := im.v1[i]
			add(&blob{hex: digest.FromBytes(v1).Encoded(), mtime: im.created, data: v1, size: int64(len(v1))})
		}
		add(&blob{hex: digest.FromBytes(im.manifest).Encoded(), mtime: epoch, data: im.manifest, size: int64(len(im.manifest))})
	}

	a := new(Archive)
	addMember := func(name string, typ byte, mtime time.Time, b *blob) error {
		mode := int64(0o644)
		if typ == tar.TypeDir {
			mode = 0o755
		}
		hdr, err := header(name, typ, mode, b.size, mtime)
		if err != nil {
			return fmt.Errorf("export: %s: %v", name, err)
		}
		a.members = append(a.members, member{off: a.size, hdr: hdr, data: b.data, desc: b.desc, r: b.r, size: b.size})
		a.size = a.members[len(a.members)-1].end()
		return nil
	}
	addFile := func(name string, data []byte) error {
		return addMember(name, tar.TypeReg, epoch, &blob{data: data, size: int64(len(data))})
	}

	if err := addMember("blobs/", tar.TypeDir, images[len(images)-1].created, &blob{}); err != nil {
		return nil, err
	}
	if err := addMember("blobs/sha256/", tar.TypeDir, epoch, &blob{}); err != nil {
		return nil, err
	}
	hexes := make([]string, 0, len(blobs))
	for h := range blobs {
		hexes = append(hexes, h)
	}
	sort.Strings(hexes)
	for _, h := range hexes {
		b := blobs[h]
		if b.desc != nil {
			r, err := layerStream(layers, *b.desc, b.size)
			if err != nil {
				return nil, err
			}
			b.r = r
		}
		if err := addMember("blobs/sha256/"+h, tar.TypeReg, b.mtime, b); err != nil {
			return nil, err
		}
	}
	index, err := indexJSON(images)
	if err != nil {
		return nil, err
	}
	manifest, err := manifestJSON(images)
	if err != nil {
		return nil, err
	}
	repos, err := repositoriesJSON(images)
	if err != nil {
		return nil, err
	}
	if err := addFile("index.json", index); err != nil {
		return nil, err
	}
	if err := addFile("manifest.json", manifest); err != nil {
		return nil, err
	}
	if err := addFile("oci-layout", []byte(ociLayout)); err != nil {
		return nil, err
	}
	if repos != nil {
		if err := addFile("repositories", repos); err != nil {
			return nil, err
		}
	}
	a.size += trailerSize
	return a, nil
}

// header returns the header block(s) of a member as docker's archive writer (Go's
// archive/tar asked for PAX, which writes plain USTAR whenever that can hold the header)
// makes them.
func header(name string, typ byte, mode, size int64, mtime time.Time) ([]byte, error) {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	err := tw.WriteHeader(&tar.Header{
		Typeflag: typ,
		Name:     name,
		Mode:     mode,
		Size:     size,
		ModTime:  mtime,
		Format:   tar.FormatPAX,
	})
	return b.Bytes(), err
}

// Size is the length of the archive in bytes.
func (a *Archive) Size() int64 { return a.size }

// ReadAt reads len(p) bytes of the archive at off. Layer content is read from Layers; a
// layer that fails or is shorter than planned makes an error naming it, never zeros.
func (a *Archive) ReadAt(p []byte, off int64) (int, error) {
	n := 0
	err := a.walk(off, len(p), func(b []byte) {
		n += copy(p[n:], b)
	}, func(m *member, rel int64, k int) error {
		got, err := a.readLayer(m, p[n:n+k], rel)
		n += got
		return err
	})
	if err == nil && n < len(p) {
		err = io.EOF
	}
	return n, err
}

// LayerError is a failed read of a layer's stream: the reader of an archive can tell which
// layer is damaged (the mount logs each one once, not at every read).
type LayerError struct {
	Layer digest.Digest // the manifest's layer descriptor's
	Err   error
}

func (e *LayerError) Error() string { return fmt.Sprintf("export: layer %s: %v", e.Layer, e.Err) }
func (e *LayerError) Unwrap() error { return e.Err }

// Pinner is a layer stream that can lend its bytes instead of copying them, as
// layerindex.Reader does: see its ReadPinned.
type Pinner interface {
	ReadPinned(p []byte, off int64) (bufs [][]byte, release func(), err error)
}

// ReadPinned is ReadAt without the copy where it can: it returns the len(p) bytes at off
// (fewer at the end, with io.EOF) as slices of the plan's headers and documents, of the
// buffers of layers that are Pinners, and of p for the rest. They stay valid until release
// is called, which must be once, also after an error.
func (a *Archive) ReadPinned(p []byte, off int64) (bufs [][]byte, release func(), err error) {
	var releases []func()
	release = func() {
		for _, r := range releases {
			r()
		}
	}
	n := 0 // the bytes passed so far, which p[n:] is the room of
	err = a.walk(off, len(p), func(b []byte) {
		bufs = append(bufs, b)
		n += len(b)
	}, func(m *member, rel int64, k int) error {
		room := p[n : n+k]
		pinner, ok := m.r.(Pinner)
		if !ok {
			got, err := a.readLayer(m, room, rel)
			bufs = append(bufs, room[:got])
			n += got
			return err
		}
		lent, give, err := pinner.ReadPinned(room, rel)
		releases = append(releases, give)
		bufs = append(bufs, lent...)
		got := lengths(lent)
		n += got
		if got == k {
			return nil
		}
		if err == nil || err == io.EOF {
			err = fmt.Errorf("short read: %d bytes at %d, %d wanted", got, rel, k)
		}
		return &LayerError{m.desc.Digest, err}
	})
	if err == nil && n < len(p) {
		err = io.EOF
	}
	return bufs, release, err
}

func lengths(bufs [][]byte) int {
	n := 0
	for _, b := range bufs {
		n += len(b)
	}
	return n
}

// walk goes through the n bytes of the archive at off in order: fixed gets the bytes of
// headers, documents, padding and the trailer, layer the k bytes of a layer member's
// content at rel.
func (a *Archive) walk(off int64, n int, fixed func(b []byte), layer func(m *member, rel int64, k int) error) error {
	if off < 0 {
		return errors.New("export: negative offset")
	}
	if off >= a.size {
		return io.EOF
	}
	done := 0
	// The member holding off: the last one starting at or before it.
	i := sort.Search(len(a.members), func(i int) bool { return a.members[i].off > off }) - 1
	for done < n && off < a.size {
		want := n - done
		var k int
		if i >= len(a.members) { // the trailer
			k = int(min(int64(want), a.size-off))
			fixed(zeros[:k])
			done += k
			off += int64(k)
			continue
		}
		m := &a.members[i]
		rel := off - m.off
		hdrLen := int64(len(m.hdr))
		switch {
		case rel < hdrLen:
			k = int(min(int64(want), hdrLen-rel))
			fixed(m.hdr[rel : rel+int64(k)])
		case rel < hdrLen+m.size:
			rel -= hdrLen
			k = int(min(m.size-rel, int64(want)))
			if m.desc == nil {
				fixed(m.data[rel : rel+int64(k)])
			} else if err := layer(m, rel, k); err != nil {
				return err
			}
		case off < m.end():
			k = int(min(int64(want), m.end()-off))
			fixed(zeros[:k])
		default:
			i++
			continue
		}
		done += k
		off += int64(k)
	}
	return nil
}

// readLayer fills p from the layer of m at rel, all of it or an error.
func (a *Archive) readLayer(m *member, p []byte, rel int64) (int, error) {
	k, err := m.r.ReadAt(p, rel)
	if k == len(p) {
		return k, nil
	}
	if err == nil || err == io.EOF {
		err = fmt.Errorf("short read: %d bytes at %d, %d wanted", k, rel, len(p))
	}
	return k, &LayerError{m.desc.Digest, err}
}

// layerStream opens the stream of layer desc, of size bytes as planned.
func layerStream(layers Layers, desc ocispec.Descriptor, size int64) (io.ReaderAt, error) {
	r, got, err := layers.Layer(desc)
	if err != nil {
		return nil, fmt.Errorf("export: layer %s: %w", desc.Digest, err)
	}
	if got != size {
		return nil, fmt.Errorf("export: layer %s: %d bytes uncompressed, %d planned", desc.Digest, got, size)
	}
	return r, nil
}

var zeros [trailerSize]byte

// WriteTo writes the whole archive to w.
func (a *Archive) WriteTo(w io.Writer) (int64, error) {
	var written int64
	write := func(b []byte) error {
		n, err := w.Write(b)
		written += int64(n)
		return err
	}
	var buf []byte
	for i := range a.members {
		m := &a.members[i]
		if err := write(m.hdr); err != nil {
			return written, err
		}
		if m.desc == nil {
			if err := write(m.data); err != nil {
				return written, err
			}
		} else {
			pinner, lends := m.r.(Pinner)
			var err error
			for pos := int64(0); pos < m.size; {
				want := int(min(chunkSize, m.size-pos))
				if buf == nil {
					buf = make([]byte, chunkSize)
				}
				var lent [][]byte
				give := func() {}
				if lends {
					lent, give, err = pinner.ReadPinned(buf[:want], pos)
				} else {
					var k int
					k, err = m.r.ReadAt(buf[:want], pos)
					lent = [][]byte{buf[:k]}
				}
				if k := lengths(lent); k < want {
					give()
					if err == nil || err == io.EOF {
						err = fmt.Errorf("short read: %d bytes at %d, %d wanted", k, pos, want)
					}
					return written, &LayerError{m.desc.Digest, err}
				}
				for _, b := range lent {
					if err = write(b); err != nil {
						break
					}
				}
				give()
				if err != nil {
					return written, err
				}
				pos += int64(want)
			}
		}
		if pad := blocks(m.size) - m.size; pad > 0 {
			if err := write(zeros[:pad]); err != nil {
				return written, err
			}
		}
	}
	return written, write(zeros[:])
}
