package layerindex

import (
	"archive/tar"
	"bufio"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/imgfs/imgfs/layerindex/internal/inflate"
)

// BuildOptions says what Build is given besides the blob.
type BuildOptions struct {
	// Digest is the blob's expected digest. Build fails if the blob does not match it.
	// Empty means the digest is computed (sha256) and recorded, not checked.
	Digest digest.Digest
	// MediaType is recorded as given. Compression is detected from the blob's first bytes,
	// so a missing or wrong media type does no harm.
	MediaType string
	// SpanSize is the uncompressed distance between checkpoints; 0 means DefaultSpanSize.
	SpanSize int64
	// Verified says that the caller checks the blob against Digest as it reads it (the
	// store does, on the blob's way to disk), so Build does not hash it a second time: the
	// index records Digest. It needs Digest.
	Verified bool
}

// ErrSparse is returned for a layer holding a sparse file: imgfs refuses such layers
// rather than serve their files wrongly.
var ErrSparse = errors.New("sparse files are not supported")

// Build indexes a layer blob in one streaming pass: it verifies the blob's digest, computes
// the diffID and uncompressed size, reads the tar's table of contents and records
// decompression checkpoints. Memory use does not grow with the size of the blob beyond the
// table of contents and the checkpoints.
func Build(blob io.Reader, opts BuildOptions) (*Index, error) {
	span := opts.SpanSize
	if span <= 0 {
		span = DefaultSpanSize
	}
	if span > MaxSpanSize {
		return nil, fmt.Errorf("layerindex: span size %d is over the maximum %d", span, MaxSpanSize)
	}
	alg := digest.SHA256
	if opts.Digest != "" {
		if err := opts.Digest.Validate(); err != nil {
			return nil, fmt.Errorf("layer %s: %w", opts.Digest, err)
		}
		alg = opts.Digest.Algorithm()
	}
	if opts.Verified && opts.Digest == "" {
		return nil, errors.New("layerindex: Verified needs a Digest")
	}
	name := opts.Digest
	if name == "" {
		name = "(no digest given)"
	}
	fail := func(err error) (*Index, error) { return nil, fmt.Errorf("layer %s: %w", name, err) }

	raw := &hashingReader{r: blob}
	if !opts.Verified {
		raw.h = alg.Hash()
	}
	br := bufio.NewReaderSize(raw, 64<<10)
	ix := &Index{MediaType: opts.MediaType, SpanSize: span}
	magic, _ := br.Peek(4)
	ix.Compression = Detect(magic)

	// Everything decoded passes through sums: the diffID, and a CRC-32C of each span so that
	// a read can check the bytes it decoded later.
	diff := newHashBehind(sha256.New())
	defer diff.close()
	sums := &spanSums{diff: diff, ix: ix}
	var stream io.Reader
	switch ix.Compression {
	case Gzip:
		z, err := gzipStream(br, span, func(cp inflate.Checkpoint) {
			ix.Checkpoints = append(ix.Checkpoints, Checkpoint{In: cp.In, Bit: cp.Bit, Out: cp.Out, Member: cp.Member, Window: cp.Window})
		})
		if err != nil {
			return fail(err)
		}
		defer z.Close()
		stream = z
	case Zstd:
		ix.Checkpoints = append(ix.Checkpoints, Checkpoint{Member: true})
		frames := 1
		z, err := newZstdReader(br, 0, func(in, out int64) {
			frames++
			if out-ix.Checkpoints[len(ix.Checkpoints)-1].Out >= span {
				ix.Checkpoints = append(ix.Checkpoints, Checkpoint{In: in, Out: out, Member: true})
			}
		})
		if err != nil {
			return fail(err)
		}
		defer z.Close()
		stream = z
		defer func() { ix.Sequential = frames == 1 }()
	default:
		// A plain layer is read straight from its blob, so nothing is decoded that a
		// checksum could catch later: its CRCs are what let a read refuse a blob damaged
		// since. They cover short pieces, as a read checks every piece it touches whole.
		ix.SpanSize = min(span, PlainSpanSize)
		ix.Checkpoints = []Checkpoint{{}}
		stream = br
	}
	tee := &CountingReader{R: io.TeeReader(stream, sums)}

	if err := readTOC(tee, ix); err != nil {
		return fail(err)
	}
	// The tar's end-of-archive blocks and padding are part of the stream, and so of the
	// diffID; reading to the end also makes the inflater check every CRC.
	if _, err := io.Copy(io.Discard, tee); err != nil {
		return fail(fmt.Errorf("at uncompressed offset %d: %w", tee.N, err))
	}
	if _, err := io.Copy(io.Discard, br); err != nil {
		return fail(err)
	}
	sums.finish()
	ix.Size = tee.N
	ix.BlobSize = raw.n
	ix.DiffID = digest.NewDigest(digest.SHA256, diff.finish())
	if opts.Verified {
		ix.BlobDigest = opts.Digest
		return ix, nil
	}
	ix.BlobDigest = digest.NewDigest(alg, raw.h)
	if opts.Digest != "" && ix.BlobDigest != opts.Digest {
		return fail(fmt.Errorf("digest mismatch: the blob's %d bytes hash to %s", raw.n, ix.BlobDigest))
	}
	return ix, nil
}

// buildISAL says Build decodes gzip with ISA-L when it is built in; tests turn it off to
// compare with our inflater.
var buildISAL = haveISAL

// gzipStream decodes a gzip layer for Build, calling onCP at its checkpoints (the rule is
// inflate.NewGzipReader's). It is the one place that picks the inflater: ISA-L, several
// times faster, when built in; else ours.
func gzipStream(r io.Reader, span int64, onCP func(inflate.Checkpoint)) (io.ReadCloser, error) {
	if buildISAL {
		return newISALGzip(r, span, onCP)
	}
	z, err := inflate.NewGzipReader(r, span, onCP)
	if err != nil {
		return nil, err
	}
	return z, nil
}

// readTOC reads every tar header from r, whose count of bytes read is where each entry's
// data starts: archive/tar reads headers block by block and never reads ahead into data.
func readTOC(r *CountingReader, ix *Index) error {
	tr := tar.NewReader(r)
	var b tocBuilder
	for {
		at := r.N
		h, err := tr.Next()
		if err == io.EOF {
			ix.TOC = b.finish()
			return nil
		}
		if err != nil {
			return fmt.Errorf("tar header at uncompressed offset %d: %w", at, err)
		}
		if h.Typeflag == tar.TypeGNUSparse || h.PAXRecords["GNU.sparse.major"] != "" ||
			h.PAXRecords["GNU.sparse.map"] != "" || h.PAXRecords["GNU.sparse.size"] != "" {
			return fmt.Errorf("tar entry %q at uncompressed offset %d: %w", h.Name, at, ErrSparse)
		}
		e := Entry{
			Name:     h.Name,
			Linkname: h.Linkname,
			Type:     h.Typeflag,
			Mode:     h.Mode,
			UID:      h.Uid,
			GID:      h.Gid,
			Uname:    h.Uname,
			Gname:    h.Gname,
			ModTime:  h.ModTime,
			Size:     h.Size,
			Devmajor: h.Devmajor,
			Devminor: h.Devminor,
			Offset:   r.N,
		}
		for k, v := range h.PAXRecords {
			if !mergedPAX[k] {
				e.PAXRecords = append(e.PAXRecords, Record{k, v})
			}
		}
		slices.SortFunc(e.PAXRecords, func(a, b Record) int { return strings.Compare(a.Key, b.Key) })
		if err := b.add(&e); err != nil {
			return fmt.Errorf("tar entry at uncompressed offset %d: %w", at, err)
		}
	}
}

// mergedPAX are the PAX records that archive/tar folds into Header fields; an Entry keeps
// them in its fields only.
var mergedPAX = map[string]bool{
	"path": true, "linkpath": true, "size": true, "uid": true, "gid": true,
	"uname": true, "gname": true, "mtime": true,
}

// hashingReader counts what is read through it, and hashes it into h unless h is nil.
type hashingReader struct {
	r io.Reader
	h hash.Hash
	n int64
}

// hashBehind feeds what is written to it to h on a goroutine of its own, so that hashing a
// layer's uncompressed stream (its diffID, the largest cost after decoding) costs the
// decoding goroutine a copy only: one layer then keeps two cores busy.
type hashBehind struct {
	h    hash.Hash
	buf  []byte      // being filled
	full chan []byte // to hash, in order
	free chan []byte // hashed, to fill again
	done chan struct{}
}

// hashBehindBuffers of hashBehindChunk bytes each are what one hashBehind holds.
const (
	hashBehindBuffers = 4
	hashBehindChunk   = 256 << 10
)

func newHashBehind(h hash.Hash) *hashBehind {
	a := &hashBehind{h: h, full: make(chan []byte, hashBehindBuffers),
		free: make(chan []byte, hashBehindBuffers), done: make(chan struct{})}
	for range hashBehindBuffers - 1 {
		a.free <- make([]byte, 0, hashBehindChunk)
	}
	a.buf = make([]byte, 0, hashBehindChunk)
	go func() {
		defer close(a.done)
		for b := range a.full {
			a.h.Write(b)
			a.free <- b[:0]
		}
	}()
	return a
}

func (a *hashBehind) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		c := copy(a.buf[len(a.buf):cap(a.buf)], p)
		a.buf, p = a.buf[:len(a.buf)+c], p[c:]
		if len(a.buf) == cap(a.buf) {
			a.full <- a.buf
			a.buf = <-a.free
		}
	}
	return n, nil
}

// finish returns h once it has hashed everything written.
func (a *hashBehind) finish() hash.Hash {
	if len(a.buf) > 0 {
		a.full <- a.buf
	}
	a.buf = nil
	a.close()
	return a.h
}

// close stops the goroutine; it may be called again.
func (a *hashBehind) close() {
	if a.full != nil {
		close(a.full)
		<-a.done
		a.full = nil
	}
}

func (h *hashingReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	if h.h != nil {
		h.h.Write(p[:n])
	}
	h.n += int64(n)
	return n, err
}

// spanSums hashes the uncompressed stream as it passes: the diffID over all of it, and the
// CRC-32C of each span (see Checkpoint.CRCs). Checkpoints are appended before the bytes
// after them are delivered, so the next boundary is always known in time.
type spanSums struct {
	diff   io.Writer
	ix     *Index
	out    int64    // bytes seen
	cur    int      // the checkpoint whose interval is being summed
	whole  uint32   // CRC of the current interval so far
	piece  uint32   // CRC of the current SpanSize piece of it so far
	pieces []uint32 // CRCs of its complete pieces
}

func (s *spanSums) Write(p []byte) (int, error) {
	s.diff.Write(p)
	n := len(p)
	for len(p) > 0 && len(s.ix.Checkpoints) > 0 {
		cps := s.ix.Checkpoints
		if s.cur+1 < len(cps) && s.out == cps[s.cur+1].Out {
			s.endInterval()
			continue
		}
		start := cps[s.cur].Out
		room := s.ix.SpanSize - (s.out-start)%s.ix.SpanSize // to the end of this piece
		if s.cur+1 < len(cps) {
			room = min(room, cps[s.cur+1].Out-s.out)
		}
		chunk := p[:min(int64(len(p)), room)]
		s.whole = crc32.Update(s.whole, castagnoli, chunk)
		s.piece = crc32.Update(s.piece, castagnoli, chunk)
		s.out += int64(len(chunk))
		p = p[len(chunk):]
		if (s.out-start)%s.ix.SpanSize == 0 {
			s.pieces = append(s.pieces, s.piece)
			s.piece = 0
		}
	}
	return n, nil
}

// endInterval records the CRCs of the interval of checkpoint cur, which ends at out.
func (s *spanSums) endInterval() {
	cp := &s.ix.Checkpoints[s.cur]
	if s.out-cp.Out > 2*s.ix.SpanSize {
		if (s.out-cp.Out)%s.ix.SpanSize != 0 {
			s.pieces = append(s.pieces, s.piece)
		}
		cp.CRCs = s.pieces
	} else {
		cp.CRCs = []uint32{s.whole}
	}
	s.cur++
	s.whole, s.piece, s.pieces = 0, 0, nil
}

// finish closes the last interval and any empty ones before it.
func (s *spanSums) finish() {
	for len(s.ix.Checkpoints) > 0 && s.cur < len(s.ix.Checkpoints) {
		s.endInterval()
	}
}
