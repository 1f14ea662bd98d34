package layerindex

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// ErrHeaderMismatch is wrapped by CheckHeader's errors when the tar stream does not hold,
// right before an entry's data, a header describing that entry.
var ErrHeaderMismatch = errors.New("the tar header before the data does not match the index")

// blockSize is tar's block: every header starts, and every file's data starts, at a
// multiple of it in the stream.
const blockSize = 512

// maxChains bounds the chains of extended headers CheckHeader reads before an entry: a
// writer puts one or two headers there, and each chain read costs as much as its length,
// so a stream of many tiny headers must not make a check take time to the square.
const maxChains = 8

// maxExtHeader bounds how far before an entry's ustar header CheckHeader looks for the PAX
// or GNU long-name headers that carry its full name or size: archive/tar's own limit on the
// data of one such header (1 MiB), with its header block, for a chain of two.
const maxExtHeader = 2 * (1<<20 + blockSize)

// CheckHeader checks that the uncompressed tar stream r holds, right before e's data, the
// header of an entry with e's name, type and size: that e.Offset, which an index (perhaps
// from a registry, perhaps stale) gives, is where that file's data is and not another's.
//
// Every tar writer puts an entry's ustar header right before its data, and the PAX or GNU
// headers that extend it (a long or non-ASCII name, a size over 8 GiB) right before that.
// The headers are read as archive/tar reads them, as Build did (a plain ustar header that
// names the entry in full without archive/tar's allocations). The ustar header alone decides
// when it matches; when it holds a name cut to fit, the way each writer cuts one (a
// prefix: GNU tar, archive/tar; without its non-ASCII bytes: archive/tar's PAX; middle
// directories dropped: libarchive), or a size that needed a PAX record, the extended
// headers before it must give e's name and size.
//
// It reads one 512-byte block for most entries, a few more for those with extended
// headers. Errors name the entry and the offset; a stream that does not match wraps
// ErrHeaderMismatch, one that cannot be read wraps the read's error.
func CheckHeader(r io.ReaderAt, entry Entry) error {
	e := &entry // a copy: the caller's entry does not escape (a mount checks on its read path)
	mismatch := func(format string, args ...any) error {
		return fmt.Errorf("tar entry %q (type %q, %d bytes) at uncompressed offset %d: %w: "+format,
			append([]any{e.Name, e.Type, e.Size, e.Offset, ErrHeaderMismatch}, args...)...)
	}
	if e.Offset < blockSize || e.Offset%blockSize != 0 {
		return mismatch("a file's data starts at a multiple of %d bytes after its header", blockSize)
	}
	hdr := e.Offset - blockSize
	var blk [blockSize]byte
	if err := readBlocks(r, blk[:], hdr); err != nil {
		return fmt.Errorf("tar entry %q at uncompressed offset %d: reading its header: %w", e.Name, e.Offset, err)
	}
	if ustarMatches(&blk, e) {
		return nil
	}
	h, err := tar.NewReader(bytes.NewReader(blk[:])).Next()
	switch {
	case err != nil:
		return mismatch("no tar header at offset %d (%v)", hdr, err)
	case h.Name == e.Name && h.Typeflag == e.Type && h.Size == e.Size:
		return nil
	case h.Typeflag != e.Type || !isSubsequence(h.Name, e.Name):
		// No extended header changes a typeflag, nor gives a name that has nothing to do
		// with the one the ustar header holds.
		return mismatch("the header at offset %d is of %q (type %q, %d bytes)", hdr, h.Name, h.Typeflag, h.Size)
	}
	ok, err := extendedMatch(r, e, hdr)
	if err != nil {
		return fmt.Errorf("tar entry %q at uncompressed offset %d: reading the headers before it: %w", e.Name, e.Offset, err)
	}
	if !ok {
		return mismatch("the header at offset %d is of %q (type %q, %d bytes), and no PAX or GNU header before it says %q of %d bytes",
			hdr, h.Name, h.Typeflag, h.Size, e.Name, e.Size)
	}
	return nil
}

// ustarMatches says whether blk is a tar header that names e in full, with e's type and
// size, read the way archive/tar reads those fields: the common case, decided without
// archive/tar's allocations (a check is on a file's first read). It is never true where
// archive/tar would read another name, type or size; it is false wherever it is unsure
// (a typeflag archive/tar rewrites or that starts an extended header, a base-256 size),
// and CheckHeader then asks archive/tar.
func ustarMatches(blk *[blockSize]byte, e *Entry) bool {
	switch typ := blk[156]; typ {
	case tar.TypeRegA, tar.TypeXHeader, tar.TypeXGlobalHeader, tar.TypeGNULongName, tar.TypeGNULongLink, tar.TypeGNUSparse:
		return false
	default:
		if typ != e.Type {
			return false
		}
	}
	if size, ok := parseOctal(blk[124:136]); !ok || size != e.Size {
		return false
	}
	if !validChecksum(blk[:]) {
		return false
	}
	// archive/tar refuses a header with a numeric field it cannot read: so does this.
	for _, f := range [][2]int{{100, 108}, {108, 116}, {116, 124}, {136, 148}, {329, 337}, {337, 345}} {
		if _, ok := parseOctal(blk[f[0]:f[1]]); !ok {
			return false
		}
	}
	// The name field, after a prefix and "/" when the format has a prefix field (the
	// magic says which) and it is not empty; each ends at its first NUL.
	name := cString(blk[0:100])
	var prefix []byte
	switch magic := string(blk[257:263]); {
	case magic == "ustar\x00" && string(blk[508:512]) == "tar\x00": // star
		prefix = cString(blk[345:476])
	case magic == "ustar\x00":
		prefix = cString(blk[345:500])
	case magic == "ustar " && string(blk[263:265]) == " \x00" && (blk[345] != 0 || blk[357] != 0):
		// GNU, with access or change times, which archive/tar reads as a prefix when they
		// are not numbers.
		return false
	}
	if len(prefix) == 0 {
		return string(name) == e.Name
	}
	return len(e.Name) == len(prefix)+1+len(name) && e.Name[:len(prefix)] == string(prefix) &&
		e.Name[len(prefix)] == '/' && e.Name[len(prefix)+1:] == string(name)
}

// cString is b up to its first NUL.
func cString(b []byte) []byte {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return b[:i]
	}
	return b
}

// validChecksum says whether a header block's checksum field holds the sum of its bytes,
// unsigned or signed (old writers), the field itself counted as spaces, as archive/tar
// accepts it.
func validChecksum(blk []byte) bool {
	sum, ok := parseOctal(blk[148:156])
	if !ok {
		return false
	}
	var unsigned, signed int64
	for i, c := range blk {
		if 148 <= i && i < 156 {
			c = ' '
		}
		unsigned += int64(c)
		signed += int64(int8(c))
	}
	return sum == unsigned || sum == signed
}

// extendedMatch looks back from the ustar header at hdr for PAX ('x') or GNU long-name
// ('L', 'K') headers whose blocks run exactly up to it, nearest first, and reads each such
// chain with the ustar header as archive/tar does: true if one gives e's name, type and
// size. Looking back a block at a time finds the chain wherever its data ends; only a
// chain that reaches hdr exactly is read, so a header-like block inside another file's
// data cannot be taken for one unless its own data runs up to this header.
func extendedMatch(r io.ReaderAt, e *Entry, hdr int64) (bool, error) {
	low := max(0, hdr-maxExtHeader) // the furthest back a chain may start
	start := hdr + blockSize        // buf holds the stream from start to the end of hdr's block
	var buf []byte
	// reaches[k]: a chain of extended headers from the block k blocks before hdr runs up
	// to hdr. reaches[0] is hdr itself.
	reaches := []bool{true}
	chains := 0
	for pos, k := hdr-blockSize, 1; pos >= low; pos, k = pos-blockSize, k+1 {
		if pos < start {
			// Read back twice as far as before: most chains are a block or two.
			grow := min(max(int64(len(buf)), 8*blockSize), start-low)
			more := make([]byte, grow+int64(len(buf)))
			if err := readBlocks(r, more[:grow], start-grow); err != nil {
				return false, err
			}
			copy(more[grow:], buf)
			buf, start = more, start-grow
		}
		reaches = append(reaches, false)
		blk := buf[pos-start : pos-start+blockSize]
		size, ok := extHeaderSize(blk)
		if !ok {
			continue
		}
		next := k - 1 - int((size+blockSize-1)/blockSize) // where its data ends, in blocks before hdr
		if next < 0 || !reaches[next] {
			continue
		}
		reaches[k] = true
		if chains++; chains > maxChains {
			return false, nil
		}
		h, err := tar.NewReader(bytes.NewReader(buf[pos-start:])).Next()
		if err == nil && h.Name == e.Name && h.Typeflag == e.Type && h.Size == e.Size {
			return true, nil
		}
	}
	return false, nil
}

// extHeaderSize returns the size of the data of blk if blk is a PAX or GNU long-name or
// long-link header with a valid checksum and a size an extended header may have.
func extHeaderSize(blk []byte) (int64, bool) {
	switch blk[156] {
	case tar.TypeXHeader, tar.TypeGNULongName, tar.TypeGNULongLink:
	default:
		return 0, false
	}
	if !validChecksum(blk) {
		return 0, false
	}
	size, ok := parseOctal(blk[124:136])
	if !ok || size > maxExtHeader {
		return 0, false
	}
	return size, true
}

// parseOctal reads a tar numeric field in octal as archive/tar does: digits between
// spaces and NULs. Anything else (a base-256 field, a NUL among the digits) is refused:
// no extended header needs it, and archive/tar reads the rest.
func parseOctal(b []byte) (int64, bool) {
	b = bytes.Trim(b, " \x00")
	var n int64
	for _, c := range b {
		if c < '0' || c > '7' || n > 1<<50 {
			return 0, false
		}
		n = n<<3 | int64(c-'0')
	}
	return n, true
}

// isSubsequence says whether short's bytes appear in long in order: what every cut of a
// long name to the ustar fields keeps of it (a prefix, the ASCII bytes, leading and
// trailing path components).
func isSubsequence(short, long string) bool {
	for i := 0; i < len(long) && len(short) > 0; i++ {
		if long[i] == short[0] {
			short = short[1:]
		}
	}
	return short == ""
}

// readBlocks reads len(p) bytes at off, all of them.
func readBlocks(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}
