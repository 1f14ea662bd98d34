package inflate

import (
	"hash/crc32"
	"io"
)

// Checkpoint is a place in a gzip stream where decoding can resume.
type Checkpoint struct {
	In     int64  // offset in the compressed stream of the byte holding the next unread bit
	Bit    uint8  // bits of the byte at In already consumed (0-7)
	Out    int64  // offset in the uncompressed stream (counted across all members)
	Member bool   // In is the start of a gzip member header (Bit == 0, Window empty)
	Window []byte // up to the last 32 KiB of output before Out (a private copy); empty when Member
}

// The Window of a checkpoint inside a member holds only that member's output (a member
// cannot refer back into the one before it), so it is shorter than 32 KiB within the first
// 32 KiB of a member.

// GzipReader decodes a gzip stream.
type GzipReader struct {
	d decoder
}

// NewGzipReader decodes a gzip stream (one or more members) from its start, verifying each
// member's header, CRC-32 and ISIZE. If span > 0 and onCheckpoint != nil, it calls
// onCheckpoint with a checkpoint at Out == 0 (Member, In == 0), and then at the first
// boundary (start of a DEFLATE block header, or start of a following member) where
// Out - lastCheckpoint.Out >= span. Checkpoints are emitted in increasing Out order, before
// the bytes after them are returned by Read.
//
// The first member's header is read and checked before NewGzipReader returns; an empty
// input is an error.
func NewGzipReader(r io.Reader, span int64, onCheckpoint func(Checkpoint)) (*GzipReader, error) {
	z := new(GzipReader)
	d := &z.d
	d.init(r)
	d.gzip = true
	if span > 0 && onCheckpoint != nil {
		d.span, d.onCP = span, onCheckpoint
	}
	if !d.moreInput() {
		d.truncated(0, "gzip header")
		if d.rerr == nil {
			d.err = &Error{Msg: "empty input", Err: io.ErrUnexpectedEOF, kind: kindEOF}
		}
		err := d.err
		d.close()
		return nil, err
	}
	d.nextMember()
	if err := d.err; err != nil {
		d.close()
		return nil, err
	}
	return z, nil
}

// Resume decodes from cp; r yields the compressed stream starting at byte cp.In. It continues
// across member boundaries into following members (verifying those members' CRC/ISIZE fully;
// the member it starts inside cannot be CRC-checked and is not). Callers read as many bytes as
// they need and drop the reader.
func Resume(r io.Reader, cp Checkpoint) (*GzipReader, error) {
	if cp.In < 0 || cp.Out < 0 || cp.Bit > 7 || len(cp.Window) > windowSize ||
		int64(len(cp.Window)) > cp.Out || cp.Member && (cp.Bit != 0 || len(cp.Window) != 0) {
		return nil, &Error{Offset: cp.In, Bit: cp.Bit, Msg: "invalid checkpoint", kind: kindUsage}
	}
	z := new(GzipReader)
	d := &z.d
	d.init(r)
	d.gzip = true
	d.inBase = cp.In
	w := copy(d.out[:], cp.Window)
	d.wp, d.rp, d.crcPos = w, w, w
	d.outBase = cp.Out - int64(w)
	if cp.Member {
		d.nextMember()
	} else if cp.Bit > 0 {
		if d.fetchByte() {
			d.consume(uint(cp.Bit))
		} else {
			d.truncated(cp.In*8+int64(cp.Bit), "block header")
		}
	}
	if err := d.err; err != nil {
		d.close()
		return nil, err
	}
	if !cp.Member {
		d.state = stBlock
	}
	return z, nil
}

// Read reads uncompressed data. It returns io.EOF after the last member.
func (z *GzipReader) Read(p []byte) (int, error) { return z.d.read(p) }

// WriteTo writes the rest of the uncompressed data to w.
func (z *GzipReader) WriteTo(w io.Writer) (int64, error) { return z.d.writeTo(w) }

// Close releases the reader's buffers for reuse by other readers; the reader must not be
// used afterwards (Read fails). Closing is optional: a dropped reader is garbage collected.
// Close does not close the underlying reader.
func (z *GzipReader) Close() error {
	z.d.close()
	return nil
}

// NewReader returns a reader of the raw DEFLATE (RFC 1951) stream in r. It stops after the
// final block; input after it is ignored (but may have been read from r).
func NewReader(r io.Reader) io.Reader {
	z := new(rawReader)
	z.d.init(r)
	z.d.state = stBlock
	return z
}

type rawReader struct {
	d decoder
}

func (z *rawReader) Read(p []byte) (int, error)         { return z.d.read(p) }
func (z *rawReader) WriteTo(w io.Writer) (int64, error) { return z.d.writeTo(w) }
func (z *rawReader) Close() error                       { z.d.close(); return nil }

func (d *decoder) read(p []byte) (int, error) {
	for {
		if d.rp < d.wp {
			n := copy(p, d.out[d.rp:d.wp])
			d.rp += n
			return n, nil
		}
		if d.err != nil {
			return 0, d.err
		}
		if len(p) == 0 {
			return 0, nil
		}
		d.step()
	}
}

func (d *decoder) writeTo(w io.Writer) (int64, error) {
	var total int64
	for {
		if d.rp < d.wp {
			n, err := w.Write(d.out[d.rp:d.wp])
			if n < 0 || n > d.wp-d.rp {
				n = 0
				if err == nil {
					err = io.ErrShortWrite
				}
			}
			d.rp += n
			total += int64(n)
			if err != nil {
				return total, err
			}
			if d.rp < d.wp {
				return total, io.ErrShortWrite
			}
		}
		if d.err == io.EOF {
			return total, nil
		}
		if d.err != nil {
			return total, d.err
		}
		d.step()
	}
}

// updateCRC adds the output decoded since the last call to the member's CRC-32 and size.
func (d *decoder) updateCRC() {
	if d.wp > d.crcPos {
		if d.verify {
			d.crc = crc32.Update(d.crc, crc32.IEEETable, d.out[d.crcPos:d.wp])
			d.size += uint32(d.wp - d.crcPos)
		}
		d.crcPos = d.wp
	}
}

// nextMember reads a member header and starts decoding the member.
func (d *decoder) nextMember() {
	start := d.pos()
	if !d.header() {
		return
	}
	d.memberIn = start >> 3
	d.crc, d.size, d.crcPos, d.verify = 0, 0, d.wp, true
	d.hstart = d.wp
	d.final = false
	d.state = stBlock
	d.checkpoint(true, start)
}

const (
	flagText    = 1 << 0
	flagHdrCRC  = 1 << 1
	flagExtra   = 1 << 2
	flagName    = 1 << 3
	flagComment = 1 << 4
	flagsKnown  = 1<<5 - 1
)

// header reads and checks a gzip member header (RFC 1952 section 2.3) at a byte boundary.
func (d *decoder) header() bool {
	start := d.pos()
	var buf [256]byte // header bytes not yet added to crc
	n := 0
	crc := uint32(0)
	ok := true
	get := func() byte {
		if !ok {
			return 0
		}
		b, got := d.readByte()
		if !got {
			ok = false
			d.truncated(start, "gzip header")
			return 0
		}
		if n == len(buf) {
			crc = crc32.Update(crc, crc32.IEEETable, buf[:])
			n = 0
		}
		buf[n] = b
		n++
		return b
	}
	bad := func(msg string) bool {
		d.errAt(kindHeader, start, msg)
		return false
	}

	id1, id2, cm, flg := get(), get(), get(), get()
	if !ok {
		return false
	}
	if id1 != 0x1f || id2 != 0x8b {
		return bad("bad magic")
	}
	if cm != 8 {
		return bad("unknown compression method")
	}
	if flg&^flagsKnown != 0 {
		return bad(errReservedFlags)
	}
	for range 6 { // MTIME, XFL, OS
		get()
	}
	if flg&flagExtra != 0 {
		xlen := int(get()) | int(get())<<8
		for i := 0; i < xlen && ok; i++ {
			get()
		}
	}
	for _, f := range [2]byte{flagName, flagComment} {
		if flg&f == 0 {
			continue
		}
		l := 0
		for ok && get() != 0 {
			l++
		}
		if l >= 511 {
			d.longName = true
		}
	}
	if !ok {
		return false
	}
	if flg&flagHdrCRC != 0 {
		crc = crc32.Update(crc, crc32.IEEETable, buf[:n])
		lo, hi := get(), get()
		if !ok {
			return false
		}
		if uint16(lo)|uint16(hi)<<8 != uint16(crc) {
			return bad("header CRC mismatch")
		}
	}
	return true
}

// trailer reads and checks a member's CRC-32 and ISIZE, then looks for another member.
func (d *decoder) trailer() {
	d.alignByte()
	at := d.pos()
	var b [8]byte
	for i := range b {
		var ok bool
		if b[i], ok = d.readByte(); !ok {
			d.truncated(at, "gzip trailer")
			return
		}
	}
	if d.verify {
		crc := uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
		size := uint32(b[4]) | uint32(b[5])<<8 | uint32(b[6])<<16 | uint32(b[7])<<24
		if crc != d.crc {
			d.errAt(kindMember, d.memberIn*8, "CRC-32 mismatch")
			return
		}
		if size != d.size {
			d.errAt(kindMember, d.memberIn*8, "ISIZE mismatch")
			return
		}
	}
	if !d.moreInput() {
		if d.rerr != nil {
			d.truncated(d.pos(), "input")
			return
		}
		d.state = stEnd
		return
	}
	d.state = stHeader
}
