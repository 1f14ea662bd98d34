package store

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"sync"

	"github.com/distribution/reference"
	"github.com/imgfs/imgfs/layerindex"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ImportOptions says how to import.
type ImportOptions struct {
	// Name (--name) names the image of a single-image archive: the import fails if the
	// archive holds several. It is given to the image besides the names the archive
	// carries (docker's RepoTags, OCI's io.containerd.image.name or a full
	// org.opencontainers.image.ref.name); when the OCI ref.name is a bare tag and Name has
	// none, the image gets Name with that tag. A Name without tag means latest.
	Name     reference.Named
	Progress Progress // nil: silent
}

// Progress hears about an import as it goes. Its methods are called from the importing
// goroutine only, one blob at a time.
type Progress interface {
	Start(id, what string, total int64) // a blob begins; id is its digest or archive path; total -1 when unknown
	Add(id string, n int64)             // n more bytes of it read
	Done(id string, err error)
}

// Import imports the archive or layout at path ("-" = stdin) and returns the images it
// added: a `docker save` archive (Docker 25+ with an OCI layout inside, or the older
// <id>/layer.tar layout), an oci-archive, each plain, gzipped or zstd-compressed, or an OCI
// image layout directory (an unpacked docker save works too).
//
// Every blob is verified (against the digest its name or descriptor gives, a layer also
// against its config's diffID), layers get their layer index in the same pass, and only
// when all is well does index.json change, in one atomic rewrite that tags every image of
// the archive. Blobs wait in .imgfs/tmp until then, and only those the images name go
// into blobs/: on error nothing is tagged and nothing stays (see stageBlob). The whole
// import holds the store (Hold) so that GC cannot take its blobs before they are tagged.
func (s *Store) Import(path string, opts ImportOptions) ([]Image, error) {
	if path == "-" {
		return s.ImportReader(os.Stdin, opts)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	if fi.IsDir() {
		return s.runImport(path, opts, func(im *importer) error { return im.openDir(path) })
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	defer f.Close()
	return s.runImport(path, opts, func(im *importer) error { return im.readArchive(f) })
}

// ImportReader imports an archive stream (docker save, oci-archive; plain or gzipped).
// The stream is read once, front to back; see Import.
func (s *Store) ImportReader(r io.Reader, opts ImportOptions) ([]Image, error) {
	label := "stdin"
	if f, ok := r.(*os.File); ok && f != os.Stdin {
		label = f.Name()
	}
	return s.runImport(label, opts, func(im *importer) error { return im.readArchive(r) })
}

// runImport is the frame of every import: hold the store, load the source (load), check
// it all and write the manifests it needs (plan), move what the images name into blobs/
// (place), then tag in one index.json update. Whatever was not placed is removed.
func (s *Store) runImport(label string, opts ImportOptions, load func(*importer) error) ([]Image, error) {
	fail := func(err error) ([]Image, error) {
		return nil, wrapf(err, "import %s: ", label)
	}
	if opts.Name != nil {
		if _, err := tagName(opts.Name); err != nil {
			return fail(wrapf(err, "--name: "))
		}
	}
	release, err := s.Hold()
	if err != nil {
		return fail(err)
	}
	defer release()
	im := &importer{
		s:        s,
		opts:     opts,
		files:    make(map[string]*stored),
		links:    make(map[string]string),
		meta:     make(map[string][]byte),
		seen:     make(map[digest.Digest]bool),
		byDigest: make(map[digest.Digest]*stored),
	}
	defer im.close()
	if err := load(im); err != nil {
		return fail(err)
	}
	ops, err := im.plan()
	if err != nil {
		return fail(err)
	}
	if err := im.place(); err != nil {
		return fail(err)
	}
	imgs, err := s.applyTags(ops)
	if err != nil {
		return fail(err)
	}
	return imgs, nil
}

// stored is a file of the source written into the store as a blob.
type stored struct {
	path   string
	desc   ocispec.Descriptor // digest and size; a layer's media type from its compression
	ix     *layerindex.Index  // its layer index, when indexed as a layer
	ixErr  error              // why it could not be indexed, when tried
	isJSON bool               // small and starts with '{': maybe a config or manifest
	tmp    string             // the verified copy in .imgfs/tmp until placed; "" when in blobs/
	needed bool               // named by a manifest (or manifest.json): placed at the end
}

// importer is one import in progress.
type importer struct {
	s    *Store
	opts ImportOptions

	// What the source holds, by cleaned path. An archive's members are all stored as
	// they stream by (manifest.json comes last in old docker saves); a directory's files
	// are stored when first asked for.
	files map[string]*stored
	links map[string]string      // archive symlinks and hard links: path → target
	meta  map[string][]byte      // manifest.json, index.json, oci-layout
	dir   *os.Root               // the directory imported; nil for an archive
	jsons []*stored              // small JSON members under blobs/ (docker's own manifests)
	mu    sync.Mutex             // guards files, jsons, byDigest, staged and needed: a directory's layers are stored in parallel
	seen  map[digest.Digest]bool // manifests and indexes walked
	// Every blob stored, by digest (the first file of that content), and those staged.
	byDigest map[digest.Digest]*stored
	staged   []*stored
	// Docker's own OCI manifests in a Docker 25+ save, parsed on first need.
	ociManifests map[digest.Digest]*ocispec.Manifest
}

// close ends the import, removing the temp files of what was not placed.
func (im *importer) close() {
	if im.dir != nil {
		im.dir.Close()
	}
	for _, st := range im.staged {
		removeTemp(st.tmp)
		st.tmp = ""
	}
}

// Top-level files read into memory rather than stored.
var metaFiles = map[string]bool{"manifest.json": true, "index.json": true, ocispec.ImageLayoutFile: true}

// kind says what a file is taken for.
type kind int

const (
	kindSniff kind = iota // by its first bytes
	kindBlob              // not a layer
	kindLayer             // a layer: its index must build
)

// memberKind says what an archive member is from its name.
func memberKind(name string) kind {
	switch {
	case strings.HasSuffix(name, ".tar"): // <id>/layer.tar, <diffID>.tar
		return kindLayer
	case strings.HasSuffix(name, ".json"): // <config hex>.json
		return kindBlob
	}
	return kindSniff // blobs/sha256/<hex>, anything else
}

// legacyFile reports the v1 metadata of old docker saves, <id>/json and <id>/VERSION,
// which nothing needs.
func legacyFile(name string) bool {
	dir, base := path.Split(name)
	return dir != "" && !strings.Contains(strings.TrimSuffix(dir, "/"), "/") && (base == "json" || base == "VERSION")
}

// digestFromName returns the digest a file's name says its content has: blobs/<alg>/<hex>,
// or <64 hex>.json (an old docker save's config, named by the image ID). Layers named
// <diffID>.tar are not: they may be compressed, and their diffID is checked anyway.
func digestFromName(name string) digest.Digest {
	if rest, ok := strings.CutPrefix(name, "blobs/"); ok {
		alg, hex, ok := strings.Cut(rest, "/")
		if d := digest.NewDigestFromEncoded(digest.Algorithm(alg), hex); ok && d.Validate() == nil {
			return d
		}
		return ""
	}
	if hex, ok := strings.CutSuffix(name, ".json"); ok && !strings.Contains(hex, "/") {
		if d := digest.NewDigestFromEncoded(digest.SHA256, hex); d.Validate() == nil {
			return d
		}
	}
	return ""
}

// cleanName makes an archive path or a path manifest.json names comparable: no "./", no
// leading "/", no "a/../".
func cleanName(name string) string {
	return strings.TrimPrefix(path.Clean("/"+name), "/")
}

// readArchive stores every member of a tar stream that may be a blob, in one pass.
func (im *importer) readArchive(r io.Reader) error {
	br := bufio.NewReaderSize(r, 64<<10)
	magic, _ := br.Peek(4)
	var in io.Reader = br
	compressed := ""
	switch layerindex.Detect(magic) {
	case layerindex.Gzip:
		zr, err := gzip.NewReader(br)
		if err != nil {
			return fmt.Errorf("gzip: %w", err)
		}
		defer zr.Close()
		in, compressed = zr, " of the uncompressed stream"
	case layerindex.Zstd:
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return fmt.Errorf("zstd: %w", err)
		}
		defer zr.Close()
		in, compressed = zr, " of the uncompressed stream"
	}
	cr := &layerindex.CountingReader{R: in}
	tr := tar.NewReader(cr)
	last := ""
	truncated := func(err error, member string) error {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("truncated archive at byte %d%s, %s", cr.N, compressed, member)
		}
		return nil
	}
	for {
		at := cr.N
		h, err := tr.Next()
		if err == io.EOF {
			if at == 0 {
				return errors.New("empty archive")
			}
			return nil
		}
		if err != nil {
			where := "at the start"
			if last != "" {
				where = "after member " + last
			}
			if t := truncated(err, where); t != nil {
				return t
			}
			if at == 0 {
				return fmt.Errorf("not a tar archive (nor a gzipped or zstd one): %v", err)
			}
			return fmt.Errorf("tar header at byte %d%s, %s: %v", at, compressed, where, err)
		}
		name := cleanName(h.Name)
		last = name
		switch h.Typeflag {
		case tar.TypeReg:
		case tar.TypeSymlink:
			target := h.Linkname
			if !path.IsAbs(target) {
				target = path.Join(path.Dir(name), target)
			}
			im.links[name] = cleanName(target)
			continue
		case tar.TypeLink:
			im.links[name] = cleanName(h.Linkname)
			continue
		default:
			continue
		}
		switch {
		case metaFiles[name]:
			data, err := io.ReadAll(io.LimitReader(tr, maxIndexJSON+1))
			if err != nil {
				if t := truncated(err, "in member "+name); t != nil {
					return t
				}
				return fmt.Errorf("%s: %w", name, err)
			}
			if len(data) > maxIndexJSON {
				return fmt.Errorf("%s: larger than %d bytes", name, maxIndexJSON)
			}
			im.meta[name] = data
		case legacyFile(name), name == "repositories":
			// Skipped: tar.Next reads past it.
		default:
			if _, err := im.put(tr, name, h.Size, memberKind(name), ""); err != nil {
				if t := truncated(err, "in member "+name); t != nil {
					return t
				}
				return err
			}
		}
	}
}

// sniffLayer reports whether a blob's first bytes look like a layer: compressed, or a tar
// header, or the zero block an empty tar starts with.
func sniffLayer(head []byte, size int64) bool {
	if layerindex.Detect(head) != layerindex.Uncompressed {
		return true
	}
	if len(head) < 512 {
		return false
	}
	if isTarHeader(head[:512]) {
		return true
	}
	return size >= 1024 && size%512 == 0 && bytes.Count(head[:512], []byte{0}) == 512
}

// isTarHeader checks a 512-byte block's header checksum.
func isTarHeader(b []byte) bool {
	var sum int64
	for i, c := range b {
		if i >= 148 && i < 156 {
			c = ' '
		}
		sum += int64(c)
	}
	field := strings.Trim(string(b[148:156]), " \x00")
	if field == "" {
		return false
	}
	var v int64
	for _, c := range field {
		if c < '0' || c > '7' {
			return false
		}
		v = v*8 + int64(c-'0')
	}
	return v == sum
}

// progressReader tells opts.Progress of the bytes read.
type progressReader struct {
	r  io.Reader
	p  Progress
	id string
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.p.Add(p.id, int64(n))
	}
	return n, err
}

// put stores the file name of the source, read from r (size bytes, -1 if unknown), as a
// blob, and as a layer with its index when k says so or, for kindSniff, its first bytes
// look like one. A digest the name gives is verified. what is for Progress ("" to guess).
func (im *importer) put(r io.Reader, name string, size int64, k kind, what string) (*stored, error) {
	expected := digestFromName(name)
	br := bufio.NewReaderSize(r, 64<<10)
	head, _ := br.Peek(512)
	if k == kindSniff {
		k = kindBlob
		if sniffLayer(head, size) {
			k = kindLayer
		}
	}
	switch {
	case what != "":
	case k == kindLayer:
		what = "layer"
	case strings.HasSuffix(name, ".json"):
		what = "config"
	default:
		what = "blob"
	}
	id := name
	if expected != "" {
		id = expected.String()
	}
	var src io.Reader = br
	if p := im.opts.Progress; p != nil {
		p.Start(id, what, size)
		src = &progressReader{r: br, p: p, id: id}
	}
	st := &stored{path: name}
	var err error
	if k == kindLayer {
		st.desc.Digest, st.desc.Size, st.tmp, st.ix, st.ixErr, err = im.s.stageLayer(src, expected)
		if err == nil && st.ix != nil {
			st.desc.MediaType = layerMediaType(st.ix.Compression)
		}
		if err == nil && st.ixErr != nil && memberKind(name) == kindLayer {
			// Named as a layer: no use going on.
			removeTemp(st.tmp)
			err = st.ixErr
		}
	} else {
		st.desc.Digest, st.desc.Size, st.tmp, err = im.s.stageBlob(src, expected)
		st.isJSON = st.desc.Size <= MaxManifestSize && bytes.HasPrefix(bytes.TrimLeft(head, " \t\r\n"), []byte("{"))
	}
	if p := im.opts.Progress; p != nil {
		p.Done(id, err)
	}
	if err != nil {
		return nil, wrapf(err, "%s: ", name)
	}
	im.mu.Lock()
	im.files[name] = st
	im.add(st)
	if st.isJSON && strings.HasPrefix(name, "blobs/") {
		im.jsons = append(im.jsons, st)
	}
	im.mu.Unlock()
	return st, nil
}

// add records a blob stored by the import; im.mu is held.
func (im *importer) add(st *stored) {
	if _, ok := im.byDigest[st.desc.Digest]; !ok {
		im.byDigest[st.desc.Digest] = st
	}
	if st.tmp != "" {
		im.staged = append(im.staged, st)
	}
}

// putBytes stores a blob the import makes (a manifest for a docker save's image), needed.
func (im *importer) putBytes(data []byte) (*stored, error) {
	st := &stored{needed: true}
	var err error
	st.desc.Digest, st.desc.Size, st.tmp, err = im.s.stageBlob(bytes.NewReader(data), digest.FromBytes(data))
	if err != nil {
		return nil, err
	}
	im.mu.Lock()
	im.add(st)
	im.mu.Unlock()
	return st, nil
}

// need marks the blob d as named by what the import tags, if the import stored it.
func (im *importer) need(d digest.Digest) {
	im.mu.Lock()
	if st, ok := im.byDigest[d]; ok {
		st.needed = true
	}
	im.mu.Unlock()
}

// readBlob is the store's ReadBlob for a blob the import may have staged only.
func (im *importer) readBlob(d digest.Digest, maxSize int64) ([]byte, error) {
	im.mu.Lock()
	st := im.byDigest[d]
	im.mu.Unlock()
	if st == nil || st.tmp == "" {
		return im.s.ReadBlob(d, maxSize)
	}
	f, err := os.Open(st.tmp)
	if err != nil {
		return nil, fmt.Errorf("store: blob %s: %w", d, err)
	}
	defer f.Close()
	return readVerified(f, d, maxSize)
}

// blobSize returns the size of blob d, staged or stored; false if it is neither.
func (im *importer) blobSize(d digest.Digest) (int64, bool) {
	im.mu.Lock()
	st := im.byDigest[d]
	im.mu.Unlock()
	if st != nil {
		return st.desc.Size, true
	}
	fi, err := os.Stat(im.s.BlobPath(d))
	if err != nil || !fi.Mode().IsRegular() {
		return 0, false
	}
	return fi.Size(), true
}

// place moves the staged blobs that the images of the import name into blobs/, and
// stores the layer indexes built of them. The rest is removed by close.
func (im *importer) place() error {
	im.mu.Lock()
	defer im.mu.Unlock()
	for _, st := range im.staged {
		if !st.needed || st.tmp == "" {
			continue
		}
		err := im.s.placeBlob(st.tmp, st.desc.Digest, st.desc.Size)
		st.tmp = ""
		if err != nil {
			return wrapf(err, "%s: ", st.desc.Digest)
		}
	}
	indexed := map[digest.Digest]bool{}
	for _, st := range im.files {
		if st.needed && st.ix != nil && !indexed[st.desc.Digest] {
			indexed[st.desc.Digest] = true
			if err := im.s.PutLayerIndex(st.ix); err != nil {
				return err
			}
		}
	}
	return nil
}

// layerMediaType is the OCI media type of a layer blob of the given compression. Docker
// saves hold their layers uncompressed and they are stored as they are (digest = diffID):
// no cost of compressing at import, and the fastest reads later.
func layerMediaType(c layerindex.Compression) string {
	switch c {
	case layerindex.Gzip:
		return ocispec.MediaTypeImageLayerGzip
	case layerindex.Zstd:
		return ocispec.MediaTypeImageLayerZstd
	}
	return ocispec.MediaTypeImageLayer
}

// stageLayer stages a layer blob (see stageBlob) and builds its layer index in one pass
// over r (the bytes stageBlob reads are teed into layerindex.Build). It tells a failed
// write (err: nothing staged) from a blob staged fine that does not index as a layer
// (ixErr): an OCI archive's member is taken for a layer by its first bytes alone, and
// only a manifest naming it as a layer makes its index matter. An empty expected digest
// means it is computed (sha256). The index is not stored: the caller does that once the
// blob is placed.
func (s *Store) stageLayer(r io.Reader, expected digest.Digest) (d digest.Digest, n int64, tmp string, ix *layerindex.Index, ixErr, err error) {
	pr, pw := io.Pipe()
	type result struct {
		ix  *layerindex.Index
		err error
	}
	done := make(chan result, 1)
	go func() {
		// stageBlob hashes the blob on its way to disk: Build need not hash it too.
		ix, err := layerindex.Build(pr, layerindex.BuildOptions{Digest: expected, Verified: expected != ""})
		io.Copy(io.Discard, pr) // Build may stop early; the tee must never block
		done <- result{ix, err}
	}()
	d, n, tmp, err = s.stageBlob(io.TeeReader(r, pw), expected)
	pw.CloseWithError(err)
	res := <-done
	if err != nil {
		return "", 0, "", nil, nil, err
	}
	if res.err != nil {
		if expected == "" {
			// Build names the layer by the digest it was given; the caller names it better.
			res.err = &wrappedError{strings.TrimPrefix(res.err.Error(), "layer (no digest given): "), res.err}
		}
		return d, n, tmp, nil, res.err, nil
	}
	if res.ix.BlobDigest != d {
		return d, n, tmp, nil, fmt.Errorf("indexed as %s, stored as %s", res.ix.BlobDigest, d), nil
	}
	res.ix.MediaType = layerMediaType(res.ix.Compression)
	return d, n, tmp, res.ix, nil, nil
}

// openDir opens a directory to import: an OCI layout, or an unpacked docker save.
func (im *importer) openDir(dir string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	im.dir = root
	for name := range metaFiles {
		f, err := root.Open(name)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		data, err := io.ReadAll(io.LimitReader(f, maxIndexJSON+1))
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if len(data) > maxIndexJSON {
			return fmt.Errorf("%s: larger than %d bytes", name, maxIndexJSON)
		}
		im.meta[name] = data
	}
	return nil
}

// file returns the stored blob at path name (as manifest.json names it), following the
// archive's links; a directory's file is stored now, the first time it is asked for.
func (im *importer) file(name string, k kind, what string) (*stored, error) {
	name = cleanName(name)
	if im.dir == nil {
		for range 40 {
			t, ok := im.links[name]
			if !ok {
				break
			}
			name = t
		}
		if st, ok := im.files[name]; ok {
			st.needed = true
			return st, nil
		}
		return nil, fmt.Errorf("%s: no such file in the archive", name)
	}
	im.mu.Lock()
	st, ok := im.files[name]
	if ok {
		st.needed = true
	}
	im.mu.Unlock()
	if ok {
		return st, nil
	}
	f, err := im.dir.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", name)
	}
	st, err = im.put(f, name, fi.Size(), k, what)
	if err == nil {
		im.mu.Lock()
		st.needed = true
		im.mu.Unlock()
	}
	return st, err
}

// blob returns the stored blob d describes (blobs/<alg>/<hex> of the layout), checking its
// size against the descriptor's.
func (im *importer) blob(d ocispec.Descriptor, k kind) (*stored, error) {
	if err := d.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("descriptor digest %q: %v", d.Digest, err)
	}
	what := "blob"
	switch mt := d.MediaType; {
	case isManifestType(mt):
		what = "manifest"
	case isIndexType(mt):
		what = "index"
	case isConfigType(mt):
		what = "config"
	case isTarLayerType(mt):
		what = "layer"
	}
	st, err := im.file(path.Join("blobs", string(d.Digest.Algorithm()), d.Digest.Encoded()), k, what)
	if err != nil {
		if im.dir == nil {
			return nil, fmt.Errorf("blob %s is not in the archive", d.Digest)
		}
		return nil, fmt.Errorf("blob %s: %v", d.Digest, err)
	}
	if d.Size > 0 && st.desc.Size != d.Size {
		return nil, fmt.Errorf("blob %s is %d bytes, its descriptor says %d", d.Digest, st.desc.Size, d.Size)
	}
	return st, nil
}

// layer returns a stored layer's index: built as it was stored, else now from the store
// (a member whose first bytes did not look like a layer).
func (im *importer) layer(st *stored) (*layerindex.Index, error) {
	if st.ix != nil {
		return st.ix, nil
	}
	if st.ixErr != nil {
		return nil, fmt.Errorf("layer %s: %v", st.path, st.ixErr)
	}
	ix, err := im.layerIndex(st)
	if err != nil {
		return nil, wrapf(err, "layer %s: ", st.path)
	}
	st.ix = ix
	st.desc.MediaType = layerMediaType(ix.Compression)
	return ix, nil
}

// layerIndex builds the layer index of a blob that was not indexed as it was stored: from
// its staged copy, else through the store.
func (im *importer) layerIndex(st *stored) (*layerindex.Index, error) {
	if st.tmp == "" {
		return im.s.LayerIndex(ocispec.Descriptor{Digest: st.desc.Digest, Size: st.desc.Size})
	}
	f, err := os.Open(st.tmp)
	if err != nil {
		return nil, fmt.Errorf("store: layer %s: %w", st.desc.Digest, err)
	}
	defer f.Close()
	ix, err := layerindex.Build(f, layerindex.BuildOptions{Digest: st.desc.Digest})
	if err != nil {
		return nil, fmt.Errorf("store: indexing layer %s: %w", st.desc.Digest, err)
	}
	ix.MediaType = layerMediaType(ix.Compression)
	return ix, nil
}

// plan checks what the source holds and writes the manifests it needs, returning what to
// tag. Nothing is tagged yet.
func (im *importer) plan() ([]tagOp, error) {
	if data, ok := im.meta["manifest.json"]; ok {
		return im.planDocker(data)
	}
	if data, ok := im.meta["index.json"]; ok {
		return im.planOCI(data)
	}
	return nil, errors.New("neither manifest.json (docker save) nor index.json (OCI layout) found")
}

// tagOp is one entry the import adds to index.json.
type tagOp struct {
	name reference.NamedTagged // nil: untagged, reachable by ID
	desc ocispec.Descriptor    // the manifest or image index
}

// applyTags adds every entry of an import to index.json in one atomic rewrite, as Tag and
// AddUntagged would one by one, and returns the images added.
func (s *Store) applyTags(ops []tagOp) ([]Image, error) {
	// The same name twice (a RepoTag that is also --name): once.
	type key struct{ name, digest string }
	seen := map[key]bool{}
	uniq := ops[:0:0]
	for _, op := range ops {
		k := key{digest: op.desc.Digest.String()}
		if op.name != nil {
			k.name = op.name.String()
		}
		if !seen[k] {
			seen[k] = true
			uniq = append(uniq, op)
		}
	}
	ops = uniq
	release, err := s.Hold()
	if err != nil {
		return nil, err
	}
	defer release()
	entries := make([]ocispec.Descriptor, len(ops))
	for i, op := range ops {
		if !s.HasBlob(op.desc.Digest) {
			return nil, fmt.Errorf("manifest %s is not in the store", op.desc.Digest)
		}
		desc := op.desc
		desc.Annotations = nil
		for k, v := range op.desc.Annotations {
			if k == AnnotationImageName || k == AnnotationRefName {
				continue
			}
			if desc.Annotations == nil {
				desc.Annotations = map[string]string{}
			}
			desc.Annotations[k] = v
		}
		if op.name != nil {
			if desc.Annotations == nil {
				desc.Annotations = map[string]string{}
			}
			for k, v := range tagAnnotations(op.name) {
				desc.Annotations[k] = v
			}
		}
		entries[i] = desc
	}
	err = s.updateIndex(func(ix *indexFile) (bool, error) {
		changed := false
	ops:
		for i, op := range ops {
			if op.name == nil {
				for _, e := range ix.entries {
					if e.desc.Digest == op.desc.Digest && entryName(e.desc) == nil {
						continue ops
					}
				}
			} else {
				kept := ix.entries[:0]
				for _, e := range ix.entries {
					if n := entryName(e.desc); n != nil && n.String() == op.name.String() {
						continue
					}
					kept = append(kept, e)
				}
				ix.entries = kept
			}
			ix.entries = append(ix.entries, indexEntry{desc: entries[i]})
			changed = true
		}
		return changed, nil
	})
	if err != nil {
		return nil, err
	}
	imgs := make([]Image, 0, len(ops))
	for i, op := range ops {
		img, err := s.image(entries[i])
		if err != nil {
			// An image index without a manifest for this platform: say what was added.
			img = Image{Target: entries[i], Descriptor: entries[i]}
		}
		img.Name = nil
		if op.name != nil {
			img.Name = op.name
		}
		imgs = append(imgs, img)
	}
	return imgs, nil
}

// wrappedError prefixes an error's message, without the "store: " of the error it wraps.
type wrappedError struct {
	msg string
	err error
}

func (w *wrappedError) Error() string { return w.msg }
func (w *wrappedError) Unwrap() error { return w.err }

// wrapf returns err with the message prefix (a format) before it, and the "store: " of
// the store's own errors dropped: an import error reads "import x.tar: <file>: <why>".
func wrapf(err error, format string, args ...any) error {
	return &wrappedError{fmt.Sprintf(format, args...) + strings.TrimPrefix(err.Error(), "store: "), err}
}
