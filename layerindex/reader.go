package layerindex

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sort"
	"sync"

	"github.com/imgfs/imgfs/layerindex/internal/inflate"
)

// Reader is an io.ReaderAt over a layer's uncompressed tar stream. A read decodes only the
// spans it covers (from the checkpoint before each), keeps them in the shared Cache, and,
// when reads go forward, decodes the next spans ahead on the spare cores. It is safe for
// concurrent use.
type Reader struct {
	blob  io.ReaderAt
	ix    *Index
	cache *Cache
	spans []span

	seqMu       sync.Mutex // held while decoding a span that is not at a checkpoint
	mu          sync.Mutex
	parked      *spanDecoder   // a decoder stopped at the start of span parked.next, for sequential reads
	lastSpan    int            // the span where the previous read ended
	streaming   bool           // the previous read followed the one before it
	streamStart int            // the span where the reads that follow each other began
	closed      bool           // Close was called: start no read-ahead, park nothing
	ahead       sync.WaitGroup // read-ahead goroutines in flight
	asked       int64          // a Fetcher blob was asked to prefetch its bytes up to here

	bad map[int]badSpan // by checkpoint: where decoding its interval failed; under mu
}

// Tests set these to count what Readers do: testHookDecoded is called for every span a
// Reader decodes, with whether ISA-L decoded it, and testHookISALFailed for every span
// ISA-L failed on (our inflater then decodes it).
var (
	testHookDecoded    func(r *Reader, isal bool)
	testHookISALFailed func(r *Reader)
)

// span is a unit of decoding and caching: a checkpoint interval, or a SpanSize piece of a
// long one (a single-frame zstd layer has one interval over the whole stream).
type span struct {
	start, end int64
	cp         int  // the checkpoint whose interval holds this span
	piece      int  // which span of that interval, for its CRC
	split      bool // the interval has other spans: one decoder goes through them in order
}

// badSpan is the first span of a checkpoint interval known not to decode, and why. No
// decoder gets past a bad spot, and the blob does not change: the spans from there to the
// next checkpoint fail at once, rather than decode from the checkpoint to fail again (from
// the start of the layer, for a single-frame zstd one).
type badSpan struct {
	span int
	err  error
}

// spanDecoder is an uncompressed stream positioned at the start of span next.
type spanDecoder struct {
	rd    io.Reader
	close func()
	next  int
	src   *notedBlob
}

// notedBlob is a decoder's blob, noting the first error reading it gave: a decoder that
// fails after one failed because the blob could not be read (a registry gone for a
// while), not because its bytes are bad, and a later read may succeed where it failed.
type notedBlob struct {
	io.ReaderAt
	err error
}

func (b *notedBlob) ReadAt(p []byte, off int64) (int, error) {
	n, err := b.ReaderAt.ReadAt(p, off)
	if err != nil && err != io.EOF && b.err == nil {
		b.err = err
	}
	return n, err
}

// NewReader returns a reader over the uncompressed stream of the blob that ix describes.
func NewReader(blob io.ReaderAt, ix *Index, cache *Cache) (*Reader, error) {
	r := &Reader{blob: blob, ix: ix, cache: cache, lastSpan: -1}
	// An index is checksummed, not authenticated: its numbers are checked before any is
	// used to size a slice or a loop.
	if ix.Size < 0 || ix.BlobSize < 0 {
		return nil, fmt.Errorf("layer %s: index has negative sizes", ix.BlobDigest)
	}
	cps := ix.Checkpoints
	if ix.Size > 0 && (len(cps) == 0 || cps[0].Out != 0) {
		return nil, fmt.Errorf("layer %s: index has no checkpoint at the start", ix.BlobDigest)
	}
	step := ix.SpanSize
	if step <= 0 || step > MaxSpanSize {
		return nil, fmt.Errorf("layer %s: index has span size %d", ix.BlobDigest, step)
	}
	if ix.Compression == Uncompressed {
		if ix.Size != ix.BlobSize {
			return nil, fmt.Errorf("layer %s: index says %d bytes uncompressed in a %d-byte plain blob", ix.BlobDigest, ix.Size, ix.BlobSize)
		}
		if ix.Size > 0 && (len(cps) != 1 || int64(len(cps[0].CRCs)) != pieceCount(ix.Size, step)) {
			return nil, fmt.Errorf("layer %s: index of a plain layer has no checksum for each of its pieces", ix.BlobDigest)
		}
		return r, nil
	}
	for k, cp := range cps {
		end := ix.Size
		if k+1 < len(cps) {
			end = cps[k+1].Out
		}
		if cp.Out < 0 || end < cp.Out || end > ix.Size || cp.In < 0 || cp.In > ix.BlobSize || cp.Bit > 7 {
			return nil, fmt.Errorf("layer %s: checkpoint %d is out of order or out of range", ix.BlobDigest, k)
		}
		if end == cp.Out {
			continue // an empty stream
		}
		n := pieceCount(end-cp.Out, step)
		if n != int64(len(cp.CRCs)) {
			return nil, fmt.Errorf("layer %s: checkpoint %d has %d checksums for %d spans", ix.BlobDigest, k, len(cp.CRCs), n)
		}
		j := 0
		pieces(cp.Out, end, step, func(s, e int64) {
			r.spans = append(r.spans, span{start: s, end: e, cp: k, piece: j, split: n > 1})
			j++
		})
	}
	return r, nil
}

// Size is the length of the uncompressed stream.
func (r *Reader) Size() int64 { return r.ix.Size }

// ReadAt reads len(p) bytes of the uncompressed stream at off.
func (r *Reader) ReadAt(p []byte, off int64) (int, error) {
	want, err := r.clip(off, len(p))
	if want == 0 {
		return 0, err
	}
	var n int
	if r.ix.Compression == Uncompressed {
		n, err = r.readPlain(p[:want], off)
	} else {
		n, err = r.eachSpan(off, want, func(b []byte, e *cached) {
			copy(p[n:], b)
			n += len(b)
			r.cache.release(e)
		})
	}
	if err == nil && n < len(p) {
		err = io.EOF
	}
	return n, err
}

// ReadPinned is ReadAt without the copy where it can: it returns the len(p) bytes at off
// (fewer at the end of the stream, with io.EOF) as slices of the decoded spans that hold
// them, which stay valid until release is called (once, also after an error). A plain
// layer's bytes are read into p, and the slices are of p.
func (r *Reader) ReadPinned(p []byte, off int64) (bufs [][]byte, release func(), err error) {
	want, err := r.clip(off, len(p))
	if want == 0 {
		return nil, func() {}, err
	}
	if r.ix.Compression == Uncompressed {
		k, err := r.readPlain(p[:want], off)
		if err == nil && want < len(p) {
			err = io.EOF
		}
		return [][]byte{p[:k]}, func() {}, err
	}
	var held []*cached
	got, err := r.eachSpan(off, want, func(b []byte, e *cached) {
		bufs = append(bufs, b)
		held = append(held, e)
	})
	release = func() {
		for _, e := range held {
			r.cache.release(e)
		}
	}
	if err == nil && got < len(p) {
		err = io.EOF
	}
	return bufs, release, err
}

// clip returns how many of n bytes at off the stream has, and io.EOF if none.
func (r *Reader) clip(off int64, n int) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("layer %s: negative offset %d", r.ix.BlobDigest, off)
	}
	if off >= r.ix.Size {
		return 0, io.EOF
	}
	return int(min(int64(n), r.ix.Size-off)), nil
}

// readPlain reads a plain layer's bytes straight from its blob into p, and returns as many
// of them as it could check against the pieces' CRCs.
func (r *Reader) readPlain(p []byte, off int64) (int, error) {
	n, err := r.readBlob(p, off)
	if n == 0 {
		return 0, err
	}
	ok, sumErr := r.checkPlain(p[:n], off)
	if sumErr != nil {
		return ok, sumErr
	}
	return n, err
}

func (r *Reader) readBlob(p []byte, off int64) (int, error) {
	n, err := r.blob.ReadAt(p, off)
	if err == io.EOF {
		err = nil
		if n < len(p) {
			err = fmt.Errorf("layer %s: blob ends at byte %d, the index says %d: %w", r.ix.BlobDigest, off+int64(n), r.ix.Size, io.ErrUnexpectedEOF)
		}
	}
	return n, err
}

// checkPlain checks p, the plain layer's bytes at off, against the CRCs of the pieces it
// touches, reading the rest of the first and last piece beside it. It returns how many
// bytes of p lie before the first piece that fails.
func (r *Reader) checkPlain(p []byte, off int64) (int, error) {
	end := off + int64(len(p))
	bp := plainScratch.Get().(*[]byte)
	defer plainScratch.Put(bp)
	for k := r.plainPiece(off); k <= r.plainPiece(end-1); k++ {
		s, e := r.plainBounds(k)
		sum, err := r.plainSum(p, off, s, e, bp)
		if err == nil {
			if want := r.ix.Checkpoints[0].CRCs[k]; sum != want {
				err = fmt.Errorf("layer %s: blob bytes %d-%d fail their checksum (CRC-32C %08x, index says %08x)", r.ix.BlobDigest, s, e, sum, want)
			}
		}
		if err != nil {
			return int(max(s-off, 0)), err
		}
	}
	return len(p), nil
}

// plainSum is the CRC-32C of the piece [s, e), whose part inside [off, off+len(p)) is in p;
// the rest is read into *scratch.
func (r *Reader) plainSum(p []byte, off, s, e int64, scratch *[]byte) (uint32, error) {
	end := off + int64(len(p))
	outside := func(s, e int64) ([]byte, error) {
		if int64(cap(*scratch)) < e-s {
			*scratch = make([]byte, e-s)
		}
		b := (*scratch)[:e-s]
		_, err := r.readBlob(b, s)
		return b, err
	}
	var sum uint32
	if s < off {
		head, err := outside(s, off)
		if err != nil {
			return 0, err
		}
		sum = crc32.Update(sum, castagnoli, head)
	}
	sum = crc32.Update(sum, castagnoli, p[max(s, off)-off:min(e, end)-off])
	if e > end {
		tail, err := outside(end, e)
		if err != nil {
			return 0, err
		}
		sum = crc32.Update(sum, castagnoli, tail)
	}
	return sum, nil
}

// plainScratch holds the buffers that the parts of pieces outside a read are read into.
var plainScratch = sync.Pool{New: func() any { return new([]byte) }}

// plainPiece is the number of the piece of a plain layer that holds byte off (see pieces).
func (r *Reader) plainPiece(off int64) int {
	if len(r.ix.Checkpoints[0].CRCs) == 1 {
		return 0
	}
	return int(off / r.ix.SpanSize)
}

// plainBounds is where piece k of a plain layer starts and ends.
func (r *Reader) plainBounds(k int) (int64, int64) {
	if len(r.ix.Checkpoints[0].CRCs) == 1 {
		return 0, r.ix.Size
	}
	s := int64(k) * r.ix.SpanSize
	return s, min(s+r.ix.SpanSize, r.ix.Size)
}

// eachSpan passes the decoded bytes of [off, off+n) to use in order, a piece of one span at
// a time together with the span's cache entry, which use must release. It returns the
// bytes passed.
func (r *Reader) eachSpan(off int64, n int, use func(b []byte, e *cached)) (int, error) {
	i := sort.Search(len(r.spans), func(i int) bool { return r.spans[i].end > off })
	// Reads that move to the span after the previous one's are sequential, and so are
	// those that stay in it once reads are (even when they come a little out of order, as
	// the kernel's read-ahead sends them). Two reads in one span do not start a stream: a
	// file's tar header checked before its data is read (a mount's first read of a file)
	// is not a sequential reader, and the spans decoded ahead for it would be wasted (and,
	// from a registry, fetched).
	// A layer's first read is sequential only from the stream's start (a reader of the
	// whole stream, as export.tar): the first file a mount reads in a layer is often in
	// its first span, and a small one would have spans decoded (from a registry, fetched)
	// ahead for nothing.
	r.mu.Lock()
	sequential := (i == r.lastSpan+1 && (i > 0 || off == 0)) || (i == r.lastSpan && r.streaming)
	if !sequential || !r.streaming {
		r.streamStart = i
	}
	// Bytes are fetched ahead only for a reader that has gone on past the span it started
	// in: not for a small file's header and data, nor a first read of span 0.
	moved := sequential && i > r.streamStart
	r.streaming = sequential
	if sequential {
		r.lastSpan = i // the decoders ahead go on from here, not from behind
	}
	r.mu.Unlock()
	if sequential {
		// Before this read waits for its own span: the decoders ahead keep going meanwhile.
		if moved {
			r.prefetch(i)
		}
		r.readAhead(i + 1)
	}
	done := 0
	for done < n {
		e, err := r.span(i, false)
		if err != nil {
			return done, err
		}
		from := off + int64(done) - r.spans[i].start
		b := e.data[from:min(int64(len(e.data)), from+int64(n-done))]
		done += len(b)
		use(b, e)
		if done < n {
			i++
		}
	}
	r.mu.Lock()
	r.lastSpan = i
	r.mu.Unlock()
	if sequential {
		r.readAhead(i + 1)
	}
	return done, nil
}

func (r *Reader) key(i int) spanKey {
	s := r.spans[i]
	return spanKey{r.ix.BlobDigest, s.start, s.end, r.ix.Checkpoints[s.cp].CRCs[s.piece]}
}

// span returns span i from the cache, decoding it if needed; the caller releases it. ahead
// says that no reader asked for the span yet.
func (r *Reader) span(i int, ahead bool) (*cached, error) {
	return r.cache.get(r.key(i), ahead, func() ([]byte, error) {
		if ahead && r.behind(i) {
			// Started while the span was ahead, it runs after the reader went past it (and
			// perhaps the cache let it go): decoding it now would only push out spans the
			// reader wants.
			return nil, errAbandoned
		}
		return r.decode(i, ahead)
	})
}

// readAhead decodes the spans after a sequential read in the background, on as many
// decoders as the cache has, as far ahead as the cache has room for beside the span being
// read; only one span ahead where spans are pieces of one interval (only the parked decoder
// goes on from there cheaply; a second one would start at the checkpoint).
func (r *Reader) readAhead(from int) {
	if from < 1 || from >= len(r.spans) {
		return
	}
	// The spans ahead must fit in the cache beside the one being read, or they would push
	// each other out before the reader gets to them.
	room := r.cache.max - r.spanCap(from-1)
	one := r.ix.Sequential || r.spans[from].piece > 0
	for i := from; i < len(r.spans); i++ {
		room -= r.spanCap(i)
		// Later pieces of a long interval are left to the decoder going through it.
		if i > from && (room < 0 || one || r.spans[i].piece > 0) {
			return
		}
		if r.cache.has(r.key(i)) {
			continue
		}
		select {
		case r.cache.decoders <- struct{}{}:
		default:
			return // every decoder is busy: the reader will decode what it needs itself
		}
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			<-r.cache.decoders
			return
		}
		r.ahead.Add(1)
		r.mu.Unlock()
		go func(i int) {
			defer r.ahead.Done()
			e, err := r.span(i, true)
			<-r.cache.decoders
			if err != nil {
				return // the error shows again when a reader asks for the span
			}
			r.cache.release(e)
			// Go on ahead of the reader without waiting for its next read, so that the
			// decoders stay busy while it waits for a span or copies one.
			r.mu.Lock()
			next, streaming := r.lastSpan+1, r.streaming
			r.mu.Unlock()
			if streaming {
				r.readAhead(next)
			}
		}(i)
	}
}

// Fetcher is an optional ability of the blob a Reader reads, found by type assertion. A
// blob whose reads are slow to start (a registry's: a request each) gets its bytes ahead
// of the reads of them, what it holds already costing nothing:
//   - Fetch gets [off, off+n) now, in one request: a reader waiting for a span then waits
//     for one request, not one per piece its decoder reads;
//   - Prefetch starts getting [off, off+n) in the background and returns: the decoders
//     ahead of a sequential reader then find their input there.
//
// Failures are left to the reads that need the bytes, which say them.
type Fetcher interface {
	Fetch(off, n int64) error
	Prefetch(off, n int64)
}

// prefetchAhead is how far a Fetcher blob is asked to fetch ahead of a sequential
// reader, in blob bytes from the start of the span being read.
const prefetchAhead = 16 << 20

// prefetch asks a Fetcher blob for the bytes that decode the spans from span i on, up to
// prefetchAhead, each byte once while the reader goes forward.
func (r *Reader) prefetch(i int) {
	p, ok := r.blob.(Fetcher)
	if !ok || i >= len(r.spans) {
		return
	}
	base, _ := r.blobRange(i)
	limit := base + prefetchAhead
	r.mu.Lock()
	start := r.asked
	if start < base || start > limit+prefetchAhead {
		start = base // a new stream, or one gone back
	}
	end := start
	for k := i; k < len(r.spans); k++ {
		s, e := r.blobRange(k)
		if s >= limit {
			break
		}
		end = max(end, e)
	}
	if end > start {
		r.asked = end
	}
	r.mu.Unlock()
	if end > start {
		p.Prefetch(start, end-start)
	}
}

// fetchInput has a Fetcher blob (a registry's) fetch the blob bytes that decode span i,
// a whole checkpoint interval, at once: a reader waiting for the span then waits for one
// request, not for one per piece its decoder reads (ISA-L's input, our inflater's
// buffer), each sent only once the piece before it is decoded. A failure is left to the
// decoder's reads.
func (r *Reader) fetchInput(i int) {
	f, ok := r.blob.(Fetcher)
	if !ok || r.spans[i].split {
		return
	}
	start, end := r.blobRange(i)
	// Compressed data is never much longer than its output; an index saying otherwise
	// gets no such fetch.
	if end <= start || end-start > 2*(r.spans[i].end-r.spans[i].start)+64<<10 {
		return
	}
	f.Fetch(start, end-start)
}

// blobRange is where in the blob the bytes that decode span i are: from its checkpoint
// to the next one (and the little past it that ISA-L loads ahead).
func (r *Reader) blobRange(i int) (start, end int64) {
	cps := r.ix.Checkpoints
	s := r.spans[i]
	end = r.ix.BlobSize
	if s.cp+1 < len(cps) {
		end = min(end, cps[s.cp+1].In+isalSlack)
	}
	return cps[s.cp].In, end
}

// behind reports whether the reader going forward is past span i.
func (r *Reader) behind(i int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return i < r.lastSpan
}

// spanCap is what span i takes in the cache.
func (r *Reader) spanCap(i int) int64 { return bufCap(r.spans[i].end - r.spans[i].start) }

// decode produces span i. It goes on with the parked decoder if that stands between span i's
// checkpoint and span i, or else starts one at the checkpoint, caching the spans it passes
// on the way.
func (r *Reader) decode(i int, ahead bool) ([]byte, error) {
	if err := r.knownBad(i); err != nil {
		return nil, err
	}
	if !ahead {
		r.fetchInput(i)
	}
	if in, ok := r.isalInput(i); ok {
		if out, err := r.decodeISAL(i, in); err == nil {
			return out, nil
		}
		if testHookISALFailed != nil {
			testHookISALFailed(r)
		}
		// Our inflater decodes it again: it goes on into the next gzip member, and on bad
		// data its error says exactly what and where.
	}
	first := i - r.spans[i].piece // the span at the checkpoint
	if r.spans[i].split {
		// The spans of a long interval are decoded in order by one decoder: a second one
		// would start again from the checkpoint.
		r.seqMu.Lock()
		defer r.seqMu.Unlock()
		// The decoder ahead of us may have passed this span while we waited.
		if data := r.cache.passed(r.key(i)); data != nil {
			return data, nil
		}
		// Or the reader went past the span while we waited.
		if ahead && r.behind(i) {
			return nil, errAbandoned
		}
		// Or the decoder we waited for failed on the way.
		if err := r.knownBad(i); err != nil {
			return nil, err
		}
	}
	r.mu.Lock()
	d := r.parked
	if d != nil && d.next >= first && d.next <= i {
		r.parked = nil
	} else {
		d = nil
	}
	r.mu.Unlock()

	if d == nil {
		src := &notedBlob{ReaderAt: r.blob}
		var err error
		if d, err = r.open(r.spans[i].cp, src); err != nil {
			if src.err != nil {
				return nil, r.checkpointError(r.spans[i].cp, src.err)
			}
			return nil, r.remember(first, err)
		}
		d.next = first
	}
	var out []byte
	for d.next <= i {
		s := r.spans[d.next]
		buf := r.cache.alloc(s.end - s.start)
		if _, err := io.ReadFull(d.rd, buf); err != nil {
			d.close()
			if d.src.err != nil {
				return nil, r.spanError(d.next, d.src.err) // not remembered: see notedBlob
			}
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, r.remember(d.next, r.spanError(d.next, err))
		}
		if err := r.checkSum(d.next, buf); err != nil {
			d.close()
			return nil, r.remember(d.next, err)
		}
		if testHookDecoded != nil {
			testHookDecoded(r, false)
		}
		if d.next < i {
			r.cache.put(r.key(d.next), buf)
		} else {
			out = buf
		}
		d.next++
	}
	r.park(d)
	return out, nil
}

// knownBad returns the error decoding met at span i or before it in its interval.
func (r *Reader) knownBad(i int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if b, ok := r.bad[r.spans[i].cp]; ok && b.span <= i {
		return b.err
	}
	return nil
}

// remember notes that decoding failed at span i with err, and returns err.
func (r *Reader) remember(i int, err error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	cp := r.spans[i].cp
	if b, ok := r.bad[cp]; !ok || i < b.span {
		if r.bad == nil {
			r.bad = make(map[int]badSpan)
		}
		r.bad[cp] = badSpan{span: i, err: err}
	}
	return err
}

func (r *Reader) checkSum(i int, buf []byte) error {
	s := r.spans[i]
	if sum, want := crc32.Checksum(buf, castagnoli), r.ix.Checkpoints[s.cp].CRCs[s.piece]; sum != want {
		return r.spanError(i, fmt.Errorf("decoded bytes fail their checksum (CRC-32C %08x, index says %08x)", sum, want))
	}
	return nil
}

// isalInput returns where the compressed bytes of span i are, when ISA-L decodes it: a
// gzip span that is a whole checkpoint interval (the pieces of a long interval go on from
// each other). The bytes run to the next checkpoint, and a little further for ISA-L's
// look-ahead.
func (r *Reader) isalInput(i int) (in section, ok bool) {
	s := r.spans[i]
	if !haveISAL || r.ix.Compression != Gzip || s.split {
		return section{}, false
	}
	cps := r.ix.Checkpoints
	cp := cps[s.cp]
	if cp.Member && cp.Bit != 0 {
		return section{}, false // a gzip header starts at a byte
	}
	end := r.ix.BlobSize
	if s.cp+1 < len(cps) {
		end = min(end, cps[s.cp+1].In+isalSlack)
	}
	// DEFLATE data is never much longer than its output; an index saying otherwise gets
	// our inflater, which reads as it goes.
	if end <= cp.In || end-cp.In > 2*(s.end-s.start)+64<<10 {
		return section{}, false
	}
	return section{cp.In, end}, true
}

// isalSlack is how far past the next checkpoint ISA-L is given bytes: it loads its bit
// buffer ahead of the bits it decodes.
const isalSlack = 64

type section struct{ start, end int64 }

// decodeISAL decodes span i with ISA-L from the compressed bytes in.
func (r *Reader) decodeISAL(i int, in section) ([]byte, error) {
	cp := &r.ix.Checkpoints[r.spans[i].cp]
	window, err := cp.window()
	if err != nil {
		return nil, r.spanError(i, err)
	}
	out := r.cache.alloc(r.spans[i].end - r.spans[i].start)
	err = inflateSpan(r.blob, in, cp.Bit, window, cp.Member, out)
	if err == nil {
		err = r.checkSum(i, out)
	}
	if err != nil {
		r.cache.recycle(out)
		return nil, err
	}
	if testHookDecoded != nil {
		testHookDecoded(r, true)
	}
	return out, nil
}

func (r *Reader) park(d *spanDecoder) {
	if d.next >= len(r.spans) {
		d.close()
		return
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		d.close()
		return
	}
	old := r.parked
	if old != nil && r.spans[old.next].piece > 0 && r.spans[d.next].piece == 0 {
		// Decoders run ahead in parallel: keep the one inside a long interval, which no
		// other decoder reaches without going through the interval again; d stands at a
		// checkpoint, where a new decoder starts as cheaply.
		old, r.parked = d, old
	} else {
		r.parked = d
	}
	r.mu.Unlock()
	if old != nil {
		old.close()
	}
}

// open starts decoding at checkpoint k, reading the blob through blob.
func (r *Reader) open(k int, blob *notedBlob) (*spanDecoder, error) {
	cp := &r.ix.Checkpoints[k]
	src := io.NewSectionReader(blob, cp.In, r.ix.BlobSize-cp.In)
	switch r.ix.Compression {
	case Gzip:
		window, err := cp.window()
		if err != nil {
			return nil, r.checkpointError(k, err)
		}
		z, err := inflate.Resume(src, inflate.Checkpoint{In: cp.In, Bit: cp.Bit, Out: cp.Out, Member: cp.Member, Window: window})
		if err != nil {
			return nil, r.checkpointError(k, err)
		}
		return &spanDecoder{rd: z, close: func() { z.Close() }, src: blob}, nil
	case Zstd:
		z, err := newZstdReader(src, cp.In, nil)
		if err != nil {
			return nil, r.checkpointError(k, err)
		}
		return &spanDecoder{rd: z, close: z.Close, src: blob}, nil
	}
	return nil, fmt.Errorf("layer %s: unknown compression %v", r.ix.BlobDigest, r.ix.Compression)
}

func (r *Reader) spanError(i int, err error) error {
	s := r.spans[i]
	return fmt.Errorf("layer %s: uncompressed bytes %d-%d (from blob byte %d): %w",
		r.ix.BlobDigest, s.start, s.end, r.ix.Checkpoints[s.cp].In, err)
}

func (r *Reader) checkpointError(k int, err error) error {
	return fmt.Errorf("layer %s: resuming at blob byte %d: %w", r.ix.BlobDigest, r.ix.Checkpoints[k].In, err)
}

// Close waits for the read-ahead in flight and releases the parked decoder. The blob is
// not read after Close returns.
func (r *Reader) Close() error {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.ahead.Wait()
	r.mu.Lock()
	d := r.parked
	r.parked = nil
	r.mu.Unlock()
	if d != nil {
		d.close()
	}
	return nil
}
