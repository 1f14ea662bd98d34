package layerindex

// Layer index file format, version 2.
//
// All integers are varints (encoding/binary): "uvarint" is unsigned LEB128, "varint" is
// zigzag-signed. An int64 that is non-negative in practice (sizes) is stored as the uvarint of
// its two's-complement bits, so every value round-trips. Deltas use wrapping int64 arithmetic.
// A "string" is a uvarint length followed by that many bytes.
//
//	file       = magic version body crc32c
//	magic      = "imgfsidx"                       8 bytes
//	version    = uvarint                         IndexVersion (2)
//	body       = header strtab entries checkpoints   (no bytes may follow checkpoints)
//	crc32c     = 4 bytes, little-endian          CRC-32C (Castagnoli) of everything before it
//
//	header     = blobDigest:string mediaType:string compression:byte blobSize:uvarint
//	             size:uvarint diffID:string spanSize:uvarint flags:byte
//	             flags: 1 Sequential, 2 TOC != nil, 4 Checkpoints != nil (other bits 0)
//	strtab     = count:uvarint string*           uname, gname, link targets, PAX keys and values
//	entries    = count:uvarint entry*
//	entry      = flags:byte type:byte prefix:uvarint suffix:string mode:varint
//	             [uid:varint gid:varint uname:uvarint gname:uvarint]   unless flags&16
//	             dsec:varint [nsec:uvarint]      if flags&1
//	             size:uvarint [devmajor:varint devminor:varint]        if flags&8
//	             doffset:varint [linkname:uvarint]                      if flags&2
//	             [npax:uvarint (key:uvarint value:uvarint)*]            if flags&4
//	checkpoint = flags:byte din:varint dout:varint
//	             [crcLen:uvarint crc32c:4 bytes little-endian * crcLen/4]   CRCs if flags&32
//	             [rawLen:uvarint [compLen:uvarint deflate:compLen bytes]]  window if flags&16
//	             flags: bits 0-2 Bit, 8 Member, 16 Window != nil, 32 CRCs != nil (other bits 0)
//	checkpoints= count:uvarint checkpoint*
//
// Entry fields: the name is front-coded: its first prefix bytes are those of the previous
// entry's name (prefix <= len(previous name)), followed by suffix. Owner (uid, gid, uname,
// gname) is omitted when flags&16 says it equals the previous entry's (the first entry
// compares with 0, 0, "", ""). uname, gname, linkname and PAX keys and values are indexes
// into strtab. dsec and doffset are deltas against the previous entry (0 before the first);
// ModTime is time.Unix(sec, nsec).UTC() with 0 < nsec < 1e9 when present. flags&2 is set
// when Linkname != "", flags&4 when PAXRecords != nil (npax may be 0: an empty, non-nil
// slice), flags&8 when Devmajor or Devminor is non-zero. Unknown flag bits are corruption.
//
// Version 2 differs from 1 only in what Build records: a plain layer has a checkpoint at
// 0 with the CRCs of its pieces, which a version 1 index lacks.
//
// Checkpoints: din and dout are deltas of In and Out against the previous checkpoint. A
// non-nil Window stores its length (<= 32 KiB) and, when non-empty, the window compressed
// with DEFLATE (any level; imgfs writes windowLevel). A window must inflate to exactly rawLen
// bytes with no compressed bytes left over.
//
// Round trip: Unmarshal(Marshal(ix)) is reflect.DeepEqual to ix; nil and empty slices are
// kept apart. The TOC holds the string table as the file does: decoded as it is, written as
// it is, and built (Build, NewTOC) in the order of first use by uname, gname, linkname, PAX
// keys and values. Decoding builds the TOC as Build does, so the two compare equal. The
// zero owner a first entry may point to is uid and gid 0 with uname and gname the table's
// first empty string (a decoder appends one when there is none, which MarshalBinary writes).
//
// Decoding never allocates more than a bounded multiple of the input: counts are checked
// against the bytes left (every item takes at least one byte per field), windows are capped
// at 32 KiB, and front-coded names are held to a budget, as a long name repeated with tiny
// suffixes could otherwise expand a few MB of input into GBs of strings: after every entry,
// the names so far may total at most nameBudgetFactor (64) times their cost, the sum over
// entries of 8 + len(name) - lcp(previous name, name). The cost depends on the names alone
// (not on how they were encoded) and never exceeds the input size, so the rule bounds
// allocation by 64x the input and decoded indexes always re-encode. Real names are far below
// the limit (a run of names may average 512 bytes with a 1-byte new suffix); MarshalBinary
// refuses an index that breaks it, as it refuses anything else UnmarshalBinary would reject.
//
// The checksum is CRC-32C: the file is a local cache entry bound to its blob by the caller
// (who names it by blob digest), so the trailer guards against torn writes and bit rot, not
// against an adversary. CRC-32C detects every error burst of up to 32 bits (so every
// single-byte change), is hardware-accelerated in hash/crc32 and costs 4 bytes. Magic and
// version are read before the checksum is verified so that an index of another version,
// whose trailer may differ, is reported as stale (ErrIndexVersion) rather than corrupt.

import (
	"bytes"
	_ "crypto/sha256" // digest.Parse needs the hash algorithms linked in
	_ "crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"sync"

	"github.com/klauspost/compress/flate"
	"github.com/opencontainers/go-digest"
)

// IndexVersion is the version of the layer index format MarshalBinary writes and
// UnmarshalBinary reads.
const IndexVersion = 2

var (
	// ErrCorruptIndex is wrapped by every error UnmarshalBinary returns for data that is not a
	// well-formed index of the current version: truncated, damaged or foreign.
	ErrCorruptIndex = errors.New("layerindex: corrupt index")

	// ErrIndexVersion is returned by UnmarshalBinary for a well-formed index header of another
	// format version: the index is stale and should be rebuilt from its blob.
	ErrIndexVersion = errors.New("layerindex: index format version mismatch")
)

const (
	indexMagic = "imgfsidx"
	crcSize    = 4

	// maxWindowSize is the largest checkpoint window: the DEFLATE back-reference distance.
	maxWindowSize = 32 << 10

	// windowLevel trades encode time for size: a pull writes each layer's index on its way
	// to the store, and higher levels cost several times the time for a few % less.
	windowLevel = 4

	// nameBudgetFactor bounds the total length of decoded entry names relative to their
	// front-coded cost (see nameBudget). Real layers stay below 10.
	nameBudgetFactor = 64

	// Minimum encoded sizes, used to check counts against the bytes left before allocating.
	minStringSize     = 1 // length
	minEntrySize      = 8 // flags type prefix suffix-length mode dsec size doffset
	minRecordSize     = 2 // key value
	minCheckpointSize = 3 // flags din dout
)

// Header flags.
const (
	hdrSequential  = 1 << 0
	hdrEntries     = 1 << 1
	hdrCheckpoints = 1 << 2
	hdrKnown       = hdrSequential | hdrEntries | hdrCheckpoints
)

// Entry flags.
const (
	entNsec      = 1 << 0
	entLink      = 1 << 1
	entPAX       = 1 << 2
	entDev       = 1 << 3
	entSameOwner = 1 << 4
	entKnown     = entNsec | entLink | entPAX | entDev | entSameOwner
)

// Checkpoint flags.
const (
	cpBitMask = 7
	cpMember  = 1 << 3
	cpWindow  = 1 << 4
	cpCRCs    = 1 << 5
	cpKnown   = cpBitMask | cpMember | cpWindow | cpCRCs
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// A flate.Writer holds about 1 MB of state and a reader about 40 KB: reuse them.
var (
	flateWriters = sync.Pool{New: func() any {
		w, err := flate.NewWriter(io.Discard, windowLevel)
		if err != nil {
			panic(err) // windowLevel is a valid constant level
		}
		return w
	}}
	flateReaders = sync.Pool{New: func() any { return flate.NewReader(bytes.NewReader(nil)) }}
)

// MarshalBinary encodes the index in the imgfs layer index format (version IndexVersion).
// It fails for an index UnmarshalBinary would reject: invalid digests, unknown compression,
// a checkpoint Bit above 7, a window over 32 KiB or names over the budget described above.
func (ix *Index) MarshalBinary() ([]byte, error) {
	if err := ix.checkEncodable(); err != nil {
		return nil, fmt.Errorf("layerindex: cannot encode index: %w", err)
	}

	// The TOC's string table is the file's: it was read from an index file or built in
	// the order the format has always had.
	toc := ix.TOC
	var strs []string
	nameBytes, windowBytes := 0, 0
	if toc != nil {
		strs = toc.strs
		for i := range toc.chunks {
			nameBytes += len(toc.chunks[i].names)
		}
	}
	tabBytes := 0
	for _, s := range strs {
		tabBytes += len(s) + 2
	}
	for i := range ix.Checkpoints {
		windowBytes += len(ix.Checkpoints[i].Window) + 2*len(ix.Checkpoints[i].packed)
	}

	e := encoder{buf: make([]byte, 0, 256+tabBytes+nameBytes/3+16*toc.Len()+windowBytes/2+16*len(ix.Checkpoints))}
	e.buf = append(e.buf, indexMagic...)
	e.uvarint(IndexVersion)

	// Header.
	e.str(string(ix.BlobDigest))
	e.str(ix.MediaType)
	e.buf = append(e.buf, byte(ix.Compression))
	e.uvarint(uint64(ix.BlobSize))
	e.uvarint(uint64(ix.Size))
	e.str(string(ix.DiffID))
	e.uvarint(uint64(ix.SpanSize))
	var hf byte
	if ix.Sequential {
		hf |= hdrSequential
	}
	if toc != nil {
		hf |= hdrEntries
	}
	if ix.Checkpoints != nil {
		hf |= hdrCheckpoints
	}
	e.buf = append(e.buf, hf)

	// String table.
	e.uvarint(uint64(len(strs)))
	for _, s := range strs {
		e.str(s)
	}

	// Entries.
	e.uvarint(uint64(toc.Len()))
	if toc != nil {
		if err := e.entries(toc); err != nil {
			return nil, fmt.Errorf("layerindex: cannot encode index: %w", err)
		}
	}

	// Checkpoints.
	e.uvarint(uint64(len(ix.Checkpoints)))
	var (
		prevIn, prevOut int64
		cbuf            bytes.Buffer
		fw              *flate.Writer
	)
	defer func() {
		if fw != nil {
			fw.Reset(io.Discard) // drop the reference to cbuf
			flateWriters.Put(fw)
		}
	}()
	for i := range ix.Checkpoints {
		c := &ix.Checkpoints[i]
		f := c.Bit
		if c.Member {
			f |= cpMember
		}
		if c.hasWindow() {
			f |= cpWindow
		}
		if c.CRCs != nil {
			f |= cpCRCs
		}
		e.buf = append(e.buf, f)
		e.varint(c.In - prevIn)
		e.varint(c.Out - prevOut)
		prevIn, prevOut = c.In, c.Out
		if c.CRCs != nil {
			e.uvarint(uint64(4 * len(c.CRCs)))
			for _, v := range c.CRCs {
				e.buf = binary.LittleEndian.AppendUint32(e.buf, v)
			}
		}
		if c.packed != nil {
			// As it was read: compressing a window again costs more than all the rest.
			e.uvarint(uint64(c.packedLen))
			e.uvarint(uint64(len(c.packed)))
			e.buf = append(e.buf, c.packed...)
			continue
		}
		if c.Window == nil {
			continue
		}
		e.uvarint(uint64(len(c.Window)))
		if len(c.Window) == 0 {
			continue
		}
		cbuf.Reset()
		if fw == nil {
			fw = flateWriters.Get().(*flate.Writer)
		}
		fw.Reset(&cbuf)
		if _, err := fw.Write(c.Window); err != nil {
			return nil, err
		}
		if err := fw.Close(); err != nil {
			return nil, err
		}
		e.uvarint(uint64(cbuf.Len()))
		e.buf = append(e.buf, cbuf.Bytes()...)
	}

	e.buf = binary.LittleEndian.AppendUint32(e.buf, crc32.Checksum(e.buf, castagnoli))
	return e.buf, nil
}

func (ix *Index) checkEncodable() error {
	if _, err := digest.Parse(string(ix.BlobDigest)); err != nil {
		return fmt.Errorf("blob digest %q: %w", ix.BlobDigest, err)
	}
	if _, err := digest.Parse(string(ix.DiffID)); err != nil {
		return fmt.Errorf("diffID %q: %w", ix.DiffID, err)
	}
	if ix.Compression > Zstd {
		return fmt.Errorf("unknown %v", ix.Compression)
	}
	for i := range ix.Checkpoints {
		c := &ix.Checkpoints[i]
		if c.Bit > 7 {
			return fmt.Errorf("checkpoint %d: Bit %d > 7", i, c.Bit)
		}
		if len(c.Window) > maxWindowSize || c.packedLen > maxWindowSize {
			return fmt.Errorf("checkpoint %d: window of %d bytes > %d", i, max(len(c.Window), c.packedLen), maxWindowSize)
		}
	}
	return nil
}

// nameBudget enforces the limit on decoded name bytes described at the top of the file.
type nameBudget struct{ bytes, cost int }

// add accounts for a name of n bytes whose longest common prefix with the previous name is
// lcp bytes, and reports whether the names are still within budget.
func (b *nameBudget) add(n, lcp int) bool {
	b.bytes += n
	b.cost += minEntrySize + n - lcp
	return b.bytes <= nameBudgetFactor*b.cost
}

func (b *nameBudget) String() string {
	return fmt.Sprintf("entry names total %d bytes, over %d times their front-coded cost of %d", b.bytes, nameBudgetFactor, b.cost)
}

func commonPrefix(a, b string) int {
	n := min(len(a), len(b))
	i := 0
	for i < n && a[i] == b[i] {
		i++
	}
	return i
}

func commonPrefixBytes(a, b []byte) int {
	n := min(len(a), len(b))
	i := 0
	for i < n && a[i] == b[i] {
		i++
	}
	return i
}

type encoder struct{ buf []byte }

func (e *encoder) uvarint(v uint64) { e.buf = binary.AppendUvarint(e.buf, v) }
func (e *encoder) varint(v int64)   { e.buf = binary.AppendVarint(e.buf, v) }
func (e *encoder) str(s string)     { e.uvarint(uint64(len(s))); e.buf = append(e.buf, s...) }

func (e *encoder) entries(toc *TOC) error {
	var (
		prevName       string
		prevSec, prevO int64
		prevOwner      uint32
		budget         nameBudget
	)
	i := 0
	for ci := range toc.chunks {
		c := &toc.chunks[ci]
		start := uint32(0)
		for j := range c.recs {
			r := &c.recs[j]
			name := c.names[start:r.name]
			start = r.name
			var x *tocExtra
			if r.extra != 0 {
				x = &toc.extras[r.extra-1]
			}
			var f byte
			if x != nil && x.nsec != 0 {
				f |= entNsec
			}
			if r.link != 0 {
				f |= entLink
			}
			if x != nil && x.pax != nil {
				f |= entPAX
			}
			if x != nil && (x.devmajor != 0 || x.devminor != 0) {
				f |= entDev
			}
			// The first entry's owner is compared with the zero owner.
			if i > 0 && r.owner == prevOwner || i == 0 && toc.owners[r.owner] == toc.zeroOwner() {
				f |= entSameOwner
			}
			e.buf = append(e.buf, f, r.typ)
			p := commonPrefix(prevName, name)
			if !budget.add(len(name), p) {
				return fmt.Errorf("entry %d: %v", i, &budget)
			}
			e.uvarint(uint64(p))
			e.str(name[p:])
			mode := int64(r.mode)
			if x != nil && x.fullMode {
				mode = x.mode
			}
			e.varint(mode)
			if f&entSameOwner == 0 {
				o := &toc.owners[r.owner]
				e.varint(int64(o.uid))
				e.varint(int64(o.gid))
				e.uvarint(uint64(o.uname))
				e.uvarint(uint64(o.gname))
			}
			e.varint(r.mtime - prevSec)
			if f&entNsec != 0 {
				e.uvarint(uint64(x.nsec))
			}
			e.uvarint(uint64(r.size))
			if f&entDev != 0 {
				e.varint(x.devmajor)
				e.varint(x.devminor)
			}
			e.varint(r.offset - prevO)
			if f&entLink != 0 {
				e.uvarint(uint64(r.link - 1))
			}
			if f&entPAX != 0 {
				e.uvarint(uint64(len(x.pax)))
				for _, ref := range x.paxRefs {
					e.uvarint(uint64(ref))
				}
			}
			prevName, prevSec, prevO, prevOwner = name, r.mtime, r.offset, r.owner
			i++
		}
	}
	return nil
}

// UnmarshalBinary decodes an index written by MarshalBinary. Truncated, damaged or foreign
// data yields an error wrapping ErrCorruptIndex that names the byte offset where decoding
// failed; an index of another format version yields an error wrapping ErrIndexVersion. On
// error ix is left unchanged. The decoded index shares no memory with data.
func (ix *Index) UnmarshalBinary(data []byte) error {
	return ix.unmarshal(data, true)
}

// UnmarshalWithoutEntries decodes an index as UnmarshalBinary does, checking every byte
// the same way, but leaves TOC nil: what a Reader of the uncompressed stream needs.
// The table of contents is most of an index's memory and decoding time, and an export of
// the layer never looks at it.
func (ix *Index) UnmarshalWithoutEntries(data []byte) error {
	return ix.unmarshal(data, false)
}

func (ix *Index) unmarshal(data []byte, entries bool) error {
	if len(data) < len(indexMagic) || string(data[:len(indexMagic)]) != indexMagic {
		return corruptAt(0, "not an imgfs layer index (bad magic)")
	}
	off := len(indexMagic)
	v, n := binary.Uvarint(data[off:])
	if n <= 0 {
		return corruptAt(off, "bad version number")
	}
	if v != IndexVersion {
		return fmt.Errorf("%w: index has version %d, want %d", ErrIndexVersion, v, IndexVersion)
	}
	off += n
	if len(data) < off+crcSize {
		return corruptAt(len(data), "truncated before checksum")
	}
	body := data[:len(data)-crcSize]
	if want, got := binary.LittleEndian.Uint32(data[len(body):]), crc32.Checksum(body, castagnoli); want != got {
		return corruptAt(len(body), fmt.Sprintf("checksum mismatch (stored %08x, computed %08x)", want, got))
	}

	d := decoder{data: body, off: off, skipEntries: !entries}
	var out Index
	d.index(&out)
	if d.err != nil {
		return d.err
	}
	*ix = out
	return nil
}

func corruptAt(off int, msg string) error {
	return fmt.Errorf("%w: at byte %d: %s", ErrCorruptIndex, off, msg)
}

// decoder reads the body of an index. After the first failure it records the error and all
// reads return zero values, so callers check d.err only before allocating and at the end.
type decoder struct {
	data []byte
	off  int
	err  error

	strs []string

	skipEntries bool // check the entries but keep none
}

func (d *decoder) fail(off int, format string, args ...any) {
	if d.err == nil {
		d.err = corruptAt(off, fmt.Sprintf(format, args...))
	}
}

func (d *decoder) byte(what string) byte {
	if d.err != nil {
		return 0
	}
	if d.off >= len(d.data) {
		d.fail(d.off, "truncated %s", what)
		return 0
	}
	b := d.data[d.off]
	d.off++
	return b
}

func (d *decoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	if d.off < len(d.data) && d.data[d.off] < 0x80 {
		b := d.data[d.off]
		d.off++
		return uint64(b)
	}
	v, n := binary.Uvarint(d.data[d.off:])
	if n <= 0 {
		if n == 0 {
			d.fail(d.off, "truncated %s", what)
		} else {
			d.fail(d.off, "%s overflows 64 bits", what)
		}
		return 0
	}
	d.off += n
	return v
}

func (d *decoder) varint(what string) int64 {
	u := d.uvarint(what)
	return int64(u>>1) ^ -int64(u&1)
}

// count reads a count of items each taking at least minSize bytes and checks that the
// bytes left can hold them.
func (d *decoder) count(what string, minSize int) int {
	off := d.off
	n := d.uvarint(what)
	if d.err != nil {
		return 0
	}
	if left := uint64(len(d.data) - d.off); n > left/uint64(minSize) {
		d.fail(off, "%s %d exceeds the %d bytes left", what, n, left)
		return 0
	}
	return int(n)
}

// take reads a uvarint length and that many bytes, returning a slice of the input.
func (d *decoder) take(what string) []byte {
	off := d.off
	n := d.uvarint(what)
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.data)-d.off) {
		d.fail(off, "%s length %d exceeds the %d bytes left", what, n, len(d.data)-d.off)
		return nil
	}
	b := d.data[d.off : d.off+int(n)]
	d.off += int(n)
	return b
}

// ref reads a string table index and checks it.
func (d *decoder) ref(what string) uint32 {
	off := d.off
	i := d.uvarint(what)
	if d.err != nil {
		return 0
	}
	if i >= uint64(len(d.strs)) {
		d.fail(off, "%s: string index %d out of range [0,%d)", what, i, len(d.strs))
		return 0
	}
	return uint32(i)
}

func (d *decoder) digest(what string) digest.Digest {
	off := d.off
	b := d.take(what)
	if d.err != nil {
		return ""
	}
	dg, err := digest.Parse(string(b))
	if err != nil {
		d.fail(off, "%s %q: %v", what, b, err)
		return ""
	}
	return dg
}

func (d *decoder) index(ix *Index) {
	ix.BlobDigest = d.digest("blob digest")
	ix.MediaType = string(d.take("media type"))
	off := d.off
	ix.Compression = Compression(d.byte("compression"))
	if ix.Compression > Zstd {
		d.fail(off, "unknown %v", ix.Compression)
	}
	ix.BlobSize = int64(d.uvarint("blob size"))
	ix.Size = int64(d.uvarint("size"))
	ix.DiffID = d.digest("diffID")
	ix.SpanSize = int64(d.uvarint("span size"))
	off = d.off
	hf := d.byte("header flags")
	if hf&^hdrKnown != 0 {
		d.fail(off, "unknown header flags %#x", hf)
	}
	ix.Sequential = hf&hdrSequential != 0

	d.stringTable()
	d.entries(ix, hf&hdrEntries != 0)
	d.checkpoints(ix, hf&hdrCheckpoints != 0)
	if d.err == nil && d.off != len(d.data) {
		d.fail(d.off, "%d trailing bytes", len(d.data)-d.off)
	}
}

func (d *decoder) stringTable() {
	off := d.off
	n := d.count("string count", minStringSize)
	if n > math.MaxUint32 {
		d.fail(off, "string count %d over 2^32", n)
	}
	start := d.off
	for range n {
		d.take("string")
	}
	if d.err != nil {
		return
	}
	// One copy for the whole table; the strings are slices of it.
	all := string(d.data[start:d.off])
	d.strs = make([]string, n)
	p := 0
	for i := range d.strs {
		l, k := binary.Uvarint(d.data[start+p:])
		p += k
		d.strs[i] = all[p : p+int(l)]
		p += int(l)
	}
}

func (d *decoder) entries(ix *Index, nonNil bool) {
	off := d.off
	n := d.count("entry count", minEntrySize)
	if d.err != nil {
		return
	}
	if n > 0 && !nonNil {
		d.fail(off, "%d entries in an index flagged without entries", n)
		return
	}
	if !nonNil {
		return
	}
	// Names are front-coded: each is built over the previous one in prev. Skipping, every
	// entry is decoded and checked the same, and nothing is kept.
	var b *tocBuilder
	if !d.skipEntries {
		b = &tocBuilder{}
		b.reserve(n)
		b.t.strs = d.strs
	}
	var (
		prev           []byte
		prevSec, prevO int64
		prevOwner      uint32
		ownerKnown     bool // prevOwner is set; else it is the zero owner
		budget         nameBudget
		x              tocExtra
	)
	for i := range n {
		off := d.off
		f := d.byte("entry flags")
		if f&^entKnown != 0 {
			d.fail(off, "entry %d: unknown flags %#x", i, f)
		}
		r := tocRec{typ: d.byte("entry type")}

		off = d.off
		p := d.uvarint("name prefix length")
		if p > uint64(len(prev)) {
			d.fail(off, "entry %d: name prefix length %d > previous name length %d", i, p, len(prev))
		}
		off = d.off
		sfx := d.take("name suffix")
		if d.err != nil {
			return
		}
		if !budget.add(int(p)+len(sfx), int(p)+commonPrefixBytes(prev[p:], sfx)) {
			d.fail(off, "entry %d: %v", i, &budget)
			return
		}
		prev = append(prev[:p], sfx...)

		x = tocExtra{}
		if mode := d.varint("mode"); int64(int32(mode)) == mode {
			r.mode = int32(mode)
		} else {
			x.fullMode, x.mode = true, mode
		}
		if f&entSameOwner != 0 {
			if !ownerKnown && b != nil {
				prevOwner, ownerKnown = b.owner(b.zeroOwner()), true
			}
		} else {
			off = d.off
			uid, gid := d.varint("uid"), d.varint("gid")
			if int64(int(uid)) != uid || int64(int(gid)) != gid {
				d.fail(off, "entry %d: uid %d or gid %d overflows int", i, uid, gid)
			}
			o := tocOwner{uid: int(uid), gid: int(gid), uname: d.ref("uname"), gname: d.ref("gname")}
			if b != nil && d.err == nil {
				prevOwner, ownerKnown = b.owner(o), true
			}
		}
		r.owner = prevOwner
		r.mtime = prevSec + d.varint("mtime")
		prevSec = r.mtime
		if f&entNsec != 0 {
			off = d.off
			nsec := d.uvarint("mtime nanoseconds")
			if nsec == 0 || nsec >= 1e9 {
				d.fail(off, "entry %d: mtime nanoseconds %d out of range (0,1e9)", i, nsec)
			}
			x.nsec = int32(nsec)
		}
		r.size = int64(d.uvarint("size"))
		if f&entDev != 0 {
			x.devmajor = d.varint("devmajor")
			x.devminor = d.varint("devminor")
		}
		r.offset = prevO + d.varint("offset")
		prevO = r.offset
		if f&entLink != 0 {
			r.link = d.ref("linkname") + 1
		}
		if f&entPAX != 0 {
			k := d.count("PAX record count", minRecordSize)
			if d.err != nil {
				return
			}
			x.pax = make([]Record, k)
			x.paxRefs = make([]uint32, 2*k)
			for j := range x.pax {
				key, val := d.ref("PAX key"), d.ref("PAX value")
				if d.err != nil {
					return
				}
				x.paxRefs[2*j], x.paxRefs[2*j+1] = key, val
				x.pax[j] = Record{Key: d.strs[key], Value: d.strs[val]}
			}
		}
		if d.err != nil {
			return
		}
		if b == nil {
			continue
		}
		b.names = append(b.names, prev...)
		if err := b.push(r, &x); err != nil {
			d.fail(off, "entry %d: %v", i, err)
			return
		}
	}
	if b == nil || d.err != nil {
		return
	}
	ix.TOC = b.finish()
	if len(ix.TOC.strs) == 0 {
		ix.TOC.strs = nil // as Build leaves it
	}
}

func (d *decoder) checkpoints(ix *Index, nonNil bool) {
	off := d.off
	n := d.count("checkpoint count", minCheckpointSize)
	if d.err != nil {
		return
	}
	if n > 0 && !nonNil {
		d.fail(off, "%d checkpoints in an index flagged without checkpoints", n)
		return
	}
	if !nonNil {
		return
	}
	cps := make([]Checkpoint, n)
	var prevIn, prevOut int64
	for i := range cps {
		c := &cps[i]
		off := d.off
		f := d.byte("checkpoint flags")
		if f&^cpKnown != 0 {
			d.fail(off, "checkpoint %d: unknown flags %#x", i, f)
		}
		c.Bit = f & cpBitMask
		c.Member = f&cpMember != 0
		c.In = prevIn + d.varint("checkpoint in")
		c.Out = prevOut + d.varint("checkpoint out")
		prevIn, prevOut = c.In, c.Out
		if f&cpCRCs != 0 {
			off := d.off
			b := d.take("checkpoint CRCs")
			if len(b)%4 != 0 {
				d.fail(off, "checkpoint %d: CRCs of %d bytes", i, len(b))
			}
			c.CRCs = make([]uint32, len(b)/4)
			for k := range c.CRCs {
				c.CRCs[k] = binary.LittleEndian.Uint32(b[4*k:])
			}
		}
		if f&cpWindow != 0 {
			d.window(i, c)
		}
		if d.err != nil {
			return
		}
	}
	ix.Checkpoints = cps
}

// window reads checkpoint i's window into c: packed, as the file has it (Checkpoint.window
// inflates it where a decode starts), or empty.
func (d *decoder) window(i int, c *Checkpoint) {
	off := d.off
	n := d.uvarint("window length")
	if d.err != nil {
		return
	}
	if n > maxWindowSize {
		d.fail(off, "checkpoint %d: window length %d > %d", i, n, maxWindowSize)
		return
	}
	if n == 0 {
		c.Window = []byte{}
		return
	}
	off = d.off
	comp := d.take("compressed window")
	switch {
	case d.err != nil:
		return
	case len(comp) == 0:
		d.fail(off, "checkpoint %d: a window of %d bytes in no bytes", i, n)
		return
	}
	// A copy: the file's bytes are not kept.
	c.packed, c.packedLen = bytes.Clone(comp), int(n)
}

// inflatePacked inflates comp, a window as an index file holds it (one whole raw DEFLATE
// stream), which must give exactly n bytes, with nothing of comp left over.
func inflatePacked(comp []byte, n int) ([]byte, error) {
	if haveISAL {
		return inflateWindow(comp, n)
	}
	fr := flateReaders.Get().(io.ReadCloser)
	br := bytes.NewReader(comp)
	defer func() {
		fr.(flate.Resetter).Reset(bytes.NewReader(nil), nil) // drop the reference to comp
		flateReaders.Put(fr)
	}()
	if err := fr.(flate.Resetter).Reset(br, nil); err != nil {
		return nil, err
	}
	w := make([]byte, n)
	// Read at most one byte more than declared, to tell a longer stream from a complete one.
	lr := io.LimitedReader{R: fr, N: int64(n) + 1}
	if _, err := io.ReadFull(&lr, w); err != nil {
		return nil, fmt.Errorf("shorter than %d bytes: %v", n, err)
	}
	var one [1]byte
	if k, err := io.ReadFull(&lr, one[:]); k != 0 || err != io.EOF {
		if err == nil {
			err = errors.New("more data than declared")
		}
		return nil, fmt.Errorf("of %d bytes: %v", n, err)
	}
	if br.Len() != 0 {
		return nil, fmt.Errorf("%d bytes after its DEFLATE stream", br.Len())
	}
	return w, nil
}
