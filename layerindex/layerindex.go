// Package layerindex indexes container image layer blobs so that any byte of a layer's
// uncompressed tar stream can be read without decompressing the layer from its start.
//
// One streaming pass over a blob (Build) verifies its digest, computes its diffID and
// uncompressed size, records a table of contents of its tar (every entry with the offset of
// its data in the uncompressed stream) and, for compressed blobs, decompression checkpoints
// roughly every SpanSize bytes of output. NewReader then offers an io.ReaderAt over the
// uncompressed stream that decodes only the spans a read covers, through a Cache of decoded
// spans shared by all layers.
//
// This package is the leaf of imgfs: it knows bytes and tar, not stores or images. A blob
// comes in as an io.Reader (to index) or an io.ReaderAt (to read); nothing is written to disk.
package layerindex

import (
	"bytes"
	"fmt"
	"io"
	"time"

	"github.com/opencontainers/go-digest"
)

// DefaultSpanSize is the uncompressed distance between decompression checkpoints.
// Smaller spans make cold random reads cheaper and indexes bigger (a gzip checkpoint
// carries a compressed 32 KiB window).
const DefaultSpanSize = 4 << 20

// PlainSpanSize is the length of the pieces of a plain (uncompressed) layer that its CRCs
// cover. A read of a plain layer checks every piece it touches whole, so the pieces are
// short: a small file's read reads little more than the file.
const PlainSpanSize = 32 << 10

// Compression is how a layer blob is encoded.
type Compression uint8

const (
	Uncompressed Compression = iota
	Gzip
	Zstd
)

// Detect tells a blob's compression by its first bytes (4 are enough): gzip's magic, a
// zstd frame's or a skippable frame's; anything else is taken for a plain tar. Media
// types are not trusted for this: they are often wrong or generic.
func Detect(magic []byte) Compression {
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		return Gzip
	case len(magic) >= 4 && (bytes.Equal(magic[:4], []byte{0x28, 0xb5, 0x2f, 0xfd}) ||
		magic[0]&0xf0 == 0x50 && bytes.Equal(magic[1:4], []byte{0x2a, 0x4d, 0x18})):
		return Zstd
	}
	return Uncompressed
}

func (c Compression) String() string {
	switch c {
	case Uncompressed:
		return "none"
	case Gzip:
		return "gzip"
	case Zstd:
		return "zstd"
	}
	return fmt.Sprintf("compression(%d)", uint8(c))
}

// Index describes one layer blob: what it is, what its tar holds and where decoding can
// resume. It is built once per blob by Build and stored with MarshalBinary.
type Index struct {
	BlobDigest  digest.Digest // digest of the blob as stored (compressed)
	MediaType   string        // as given to Build; may be empty
	Compression Compression   // as detected from the blob's magic bytes
	BlobSize    int64         // compressed size
	Size        int64         // uncompressed size of the tar stream
	DiffID      digest.Digest // sha256 of the uncompressed stream
	SpanSize    int64         // the SpanSize the checkpoints were taken with (for a plain layer, the CRCs)

	// Sequential marks a compressed layer with a single restart point over a long stream
	// (a single-frame zstd layer): reads decode from its start once and are then served
	// from the span cache.
	Sequential bool

	// TOC is the table of contents: every tar entry, in stream order. It is nil when the
	// index was decoded without it (UnmarshalWithoutEntries).
	TOC *TOC
	// Checkpoints are ascending by Out, and Checkpoints[0].Out == 0. A plain layer has
	// one, at the start, for the CRCs of its SpanSize pieces.
	Checkpoints []Checkpoint
}

// Entry is one tar header of a layer, as archive/tar reads it, plus where its data is. A
// TOC holds entries packed; TOC.At returns one as an Entry.
type Entry struct {
	Name     string
	Linkname string
	Type     byte // tar typeflag ('0', '5', '2', ...)
	Mode     int64
	UID, GID int
	Uname    string
	Gname    string
	ModTime  time.Time
	Size     int64 // logical size of the file
	Devmajor int64
	Devminor int64

	// Offset is where this entry's data starts in the uncompressed tar stream.
	Offset int64

	// PAXRecords holds every PAX record of the entry, xattrs (SCHILY.xattr.*) included,
	// sorted by key. Nil for most entries.
	PAXRecords []Record
}

// Record is one PAX extended header record.
type Record struct {
	Key, Value string
}

// Xattrs returns the entry's extended attributes (SCHILY.xattr.* PAX records), in key order.
func (e *Entry) Xattrs() []Record {
	var out []Record
	for _, r := range e.PAXRecords {
		if len(r.Key) > len(xattrPrefix) && r.Key[:len(xattrPrefix)] == xattrPrefix {
			out = append(out, Record{Key: r.Key[len(xattrPrefix):], Value: r.Value})
		}
	}
	return out
}

const xattrPrefix = "SCHILY.xattr."

// Checkpoint is a place in a compressed blob where decoding can resume.
type Checkpoint struct {
	In  int64 // offset in the blob of the byte holding the next unread bit
	Bit uint8 // bits of the byte at In already consumed (0-7)
	Out int64 // offset in the uncompressed stream

	// Member is set when In is the start of a gzip member header or a zstd frame rather
	// than a DEFLATE block boundary inside a member.
	Member bool

	// Window is the uncompressed data just before Out that DEFLATE back-references may
	// reach (up to 32 KiB); empty at member starts and for zstd. An index read from its
	// file leaves it nil and keeps the window as the file holds it, compressed (packed),
	// inflated by each decode that starts here: most checkpoints of a mounted layer are
	// never decoded from, and inflating every window made up most of the cost of reading
	// an index, and most of its memory.
	Window []byte

	packed    []byte // the window's raw DEFLATE stream, from the index file
	packedLen int    // the length of the window it inflates to

	// CRCs are the CRC-32C of the uncompressed bytes from Out to the next checkpoint's Out
	// (or the end of the stream), one for the whole interval, or, for an interval longer
	// than two SpanSizes, one for each SpanSize piece of it (the last piece shorter): these
	// are the units a Reader decodes and caches. A DEFLATE stream can decode without error
	// to wrong bytes (a flipped bit in a stored block), and the gzip and zstd checksums
	// cover a whole member or frame, which a span read rarely sees: these are what let a
	// read refuse bytes it cannot vouch for.
	CRCs []uint32
}

// window returns the checkpoint's window: Window, or the packed one inflated.
func (c *Checkpoint) window() ([]byte, error) {
	if c.packed == nil {
		return c.Window, nil
	}
	w, err := inflatePacked(c.packed, c.packedLen)
	if err != nil {
		return nil, fmt.Errorf("%w: the window of the checkpoint at blob byte %d: %v", ErrCorruptIndex, c.In, err)
	}
	return w, nil
}

// hasWindow says whether the checkpoint has a window, even an empty one.
func (c *Checkpoint) hasWindow() bool { return c.Window != nil || c.packed != nil }

// MaxSpanSize bounds SpanSize: a span is decoded into memory whole (up to two SpanSizes),
// so an index, which may come from anywhere, must not ask for more.
const MaxSpanSize = 64 << 20

// pieces splits an interval of the uncompressed stream into the spans a Reader decodes
// and caches, calling f with each span's bounds: the whole interval when it is at most two
// SpanSizes long, else SpanSize pieces with a shorter last one.
func pieces(start, end, spanSize int64, f func(s, e int64)) {
	if end-start-spanSize <= spanSize {
		f(start, end)
		return
	}
	for s := start; s < end; {
		e := end
		if end-s > spanSize {
			e = s + spanSize
		}
		f(s, e)
		s = e
	}
}

// pieceCount is how many spans pieces makes of an interval of length n >= 0.
func pieceCount(n, spanSize int64) int64 {
	if n-spanSize <= spanSize {
		return 1
	}
	return (n-1)/spanSize + 1
}

// CountingReader counts the bytes read through it: where in a stream a tar header or an
// error is, for the errors that name the offset.
type CountingReader struct {
	R io.Reader
	N int64
}

func (c *CountingReader) Read(p []byte) (int, error) {
	n, err := c.R.Read(p)
	c.N += int64(n)
	return n, err
}
