// Package inflate decodes DEFLATE (RFC 1951) and gzip (RFC 1952, one or more members)
// streams, and can record checkpoints while doing so from which decoding can later resume:
// the compressed bit position, the uncompressed offset and the 32 KiB window at a DEFLATE
// block boundary or a member start.
package inflate

import (
	"errors"
	"fmt"
	"io"
	"sync"
)

// Error reports corrupt or truncated input, or a failure to read it, at a place in the
// compressed stream.
type Error struct {
	Offset int64  // compressed byte offset (for gzip member errors: the member's start)
	Bit    uint8  // bit within the byte at Offset (0-7)
	Msg    string // what is wrong
	Err    error  // underlying error: io.ErrUnexpectedEOF for truncated input, or a read error
	kind   errKind
}

type errKind uint8

const (
	kindDeflate errKind = iota // corrupt DEFLATE data
	kindEOF                    // truncated input
	kindRead                   // the reader failed
	kindHeader                 // bad gzip header
	kindMember                 // bad gzip trailer, or bad data after a member
	kindUsage                  // bad argument
)

func (e *Error) Error() string {
	var what string
	switch e.kind {
	case kindDeflate:
		what = "corrupt DEFLATE data"
	case kindEOF:
		what = "unexpected EOF"
	case kindRead:
		what = "read error"
	case kindHeader:
		what = "invalid gzip header"
	case kindMember:
		return fmt.Sprintf("inflate: invalid gzip member at byte %d: %s", e.Offset, e.Msg)
	case kindUsage:
		return "inflate: " + e.Msg
	}
	if e.Bit != 0 {
		return fmt.Sprintf("inflate: %s at byte %d bit %d: %s", what, e.Offset, e.Bit, e.Msg)
	}
	return fmt.Sprintf("inflate: %s at byte %d: %s", what, e.Offset, e.Msg)
}

func (e *Error) Unwrap() error { return e.Err }

// errReservedFlags is the Msg of the error for a gzip header with reserved flag bits set,
// which RFC 1952 requires an error for and compress/gzip accepts.
const errReservedFlags = "reserved flag bits set"

const (
	windowSize = 32 << 10               // DEFLATE's history
	chunkSize  = 256 << 10              // output decoded per step
	outLimit   = windowSize + chunkSize // decoding stops once the write position reaches this
	outSize    = outLimit + 512         // room for a 258-byte match started below outLimit, plus slack for wide copies
	inSize     = 64 << 10
)

type state uint8

const (
	stHeader  state = iota // at a gzip member header
	stBlock                // at a DEFLATE block header
	stHuffman              // inside a Huffman-coded block
	stStored               // inside a stored block
	stTrailer              // at a gzip member trailer
	stEnd                  // done
)

// decoder holds the whole decoding state. Input is read from r into in; in[ip:ie] is not
// consumed yet and in[0] is at compressed offset inBase. Bits are consumed from bits (least
// significant first), which holds nbits valid bits; any bits above those are the stream's
// bits that follow (or zero), so that OR-ing in the next bytes at nbits keeps them right.
//
// Output goes to out[wp:], behind at least the last 32 KiB of the member's output (or all
// of it); out[rp:wp] is decoded and not yet read. out[0] is uncompressed offset outBase.
type decoder struct {
	r      io.Reader
	in     []byte
	ip, ie int
	inBase int64
	eof    bool  // r reported EOF or an error
	rerr   error // the error r reported, if not io.EOF

	bits  uint64
	nbits uint

	out     *[outSize]byte
	wp, rp  int
	hstart  int // index in out of the current member's first byte, or 0 if before out
	outBase int64

	state  state
	final  bool // the current block is the last one
	stored int  // bytes left in the current stored block
	lit    *litTable
	dist   *distTable
	dynLit *litTable
	dynDst *distTable
	bufs   *buffers

	gzip     bool
	verify   bool   // check the current member's CRC-32 and ISIZE
	crc      uint32 // of out up to crcPos
	size     uint32
	crcPos   int
	memberIn int64 // compressed offset of the current member's header

	span     int64
	onCP     func(Checkpoint)
	lastCP   int64
	longName bool // a header name or comment was longer than compress/gzip accepts (for tests)

	err error
}

// buffers are a decoder's large allocations, recycled by Close.
type buffers struct {
	in   [inSize]byte
	out  [outSize]byte
	lit  litTable
	dist distTable
}

var bufPool sync.Pool

func (d *decoder) init(r io.Reader) {
	b, _ := bufPool.Get().(*buffers)
	if b == nil {
		b = new(buffers)
	}
	d.bufs = b
	d.r = r
	d.in = b.in[:]
	d.out = &b.out
	d.dynLit, d.dynDst = &b.lit, &b.dist
	d.lastCP = -1
}

// close releases the buffers for reuse; the decoder fails from now on.
func (d *decoder) close() {
	if d.bufs == nil {
		return
	}
	b := d.bufs
	*d = decoder{err: errClosed}
	bufPool.Put(b)
}

var errClosed = &Error{Msg: "reader is closed", kind: kindUsage}

// pos is the compressed bit offset of the next unread bit.
func (d *decoder) pos() int64 {
	return (d.inBase+int64(d.ip))*8 - int64(d.nbits)
}

func (d *decoder) errAt(kind errKind, bitPos int64, msg string) {
	if d.err == nil {
		d.err = &Error{Offset: bitPos >> 3, Bit: uint8(bitPos & 7), Msg: msg, kind: kind}
	}
}

func (d *decoder) corrupt(bitPos int64, msg string) { d.errAt(kindDeflate, bitPos, msg) }

// truncated records that the input ended (or failed) where more was needed; bitPos is where
// the item being read starts.
func (d *decoder) truncated(bitPos int64, what string) {
	if d.err != nil {
		return
	}
	if d.rerr != nil {
		d.err = &Error{Offset: bitPos >> 3, Bit: uint8(bitPos & 7), Msg: what, Err: d.rerr, kind: kindRead}
		return
	}
	d.err = &Error{Offset: bitPos >> 3, Bit: uint8(bitPos & 7), Msg: "truncated " + what, Err: io.ErrUnexpectedEOF, kind: kindEOF}
}

// fill moves the unread input to the front of in and reads more after it. It sets eof when
// r has no more.
func (d *decoder) fill() {
	if d.eof {
		return
	}
	if d.ip > 0 {
		n := copy(d.in, d.in[d.ip:d.ie])
		d.inBase += int64(d.ip)
		d.ip, d.ie = 0, n
	}
	for tries := 0; d.ie < len(d.in); tries++ {
		n, err := d.r.Read(d.in[d.ie:])
		if n < 0 || n > len(d.in)-d.ie {
			d.eof, d.rerr = true, errors.New("reader returned an invalid count")
			return
		}
		d.ie += n
		if err != nil {
			d.eof = true
			if err != io.EOF {
				d.rerr = err
			}
			return
		}
		if n > 0 {
			return
		}
		if tries >= 100 {
			d.eof, d.rerr = true, io.ErrNoProgress
			return
		}
	}
}

// fetchByte adds the next input byte to the bit buffer (nbits must be at most 56).
func (d *decoder) fetchByte() bool {
	if d.ip >= d.ie {
		d.fill()
		if d.ip >= d.ie {
			return false
		}
	}
	d.bits = d.bits&(1<<d.nbits-1) | uint64(d.in[d.ip])<<d.nbits
	d.ip++
	d.nbits += 8
	return true
}

// need makes sure at least n (at most 56) bits are buffered.
func (d *decoder) need(n uint) bool {
	for d.nbits < n {
		if !d.fetchByte() {
			return false
		}
	}
	return true
}

func (d *decoder) consume(n uint) {
	d.bits >>= n
	d.nbits -= n
}

// alignByte drops the bits left in the current byte.
func (d *decoder) alignByte() { d.consume(d.nbits & 7) }

// readByte reads a byte at a byte boundary, from the bit buffer first.
func (d *decoder) readByte() (byte, bool) {
	if d.nbits >= 8 {
		b := byte(d.bits)
		d.consume(8)
		return b, true
	}
	d.bits, d.nbits = 0, 0 // bytes are taken from in directly now
	if d.ip >= d.ie {
		d.fill()
		if d.ip >= d.ie {
			return 0, false
		}
	}
	b := d.in[d.ip]
	d.ip++
	return b, true
}

// moreInput reports whether any input is left (at a byte boundary).
func (d *decoder) moreInput() bool {
	if d.nbits >= 8 || d.ip < d.ie {
		return true
	}
	d.fill()
	return d.ip < d.ie
}

// step decodes more output into out, sliding the window first if out is full. It must be
// called only when all decoded output has been read (rp == wp).
func (d *decoder) step() {
	if d.wp >= outLimit {
		d.slide()
	}
	for d.err == nil && d.wp < outLimit {
		switch d.state {
		case stBlock:
			d.blockHeader()
		case stHuffman:
			d.huffman()
		case stStored:
			d.storedBlock()
		case stTrailer:
			d.updateCRC()
			d.trailer()
		case stHeader:
			d.nextMember()
		case stEnd:
			d.err = io.EOF
		}
	}
	d.updateCRC()
}

// slide moves the last window of output to the front of out.
func (d *decoder) slide() {
	d.updateCRC()
	keep := d.wp - max(d.hstart, d.wp-windowSize)
	drop := d.wp - keep
	copy(d.out[:keep], d.out[drop:d.wp])
	d.outBase += int64(drop)
	d.hstart = max(0, d.hstart-drop)
	d.wp -= drop
	d.rp -= drop
	d.crcPos -= drop
}

// checkpoint emits a checkpoint at the current position if one is due.
func (d *decoder) checkpoint(member bool, in int64) {
	if d.onCP == nil || d.span <= 0 {
		return
	}
	out := d.outBase + int64(d.wp)
	if d.lastCP >= 0 && out-d.lastCP < d.span {
		return
	}
	d.lastCP = out
	cp := Checkpoint{In: in >> 3, Bit: uint8(in & 7), Out: out, Member: member}
	if !member {
		lo := max(d.hstart, d.wp-windowSize)
		cp.Window = append([]byte(nil), d.out[lo:d.wp]...)
	}
	d.onCP(cp)
}

// endBlock moves on after the end of a block.
func (d *decoder) endBlock() {
	switch {
	case !d.final:
		d.state = stBlock
	case d.gzip:
		d.state = stTrailer
	default:
		d.state = stEnd
	}
}

// blockHeader reads a DEFLATE block header (RFC 1951 section 3.2.3).
func (d *decoder) blockHeader() {
	start := d.pos()
	d.checkpoint(false, start)
	if !d.need(3) {
		d.truncated(start, "block header")
		return
	}
	d.final = d.bits&1 != 0
	typ := (d.bits >> 1) & 3
	d.consume(3)
	switch typ {
	case 0:
		d.alignByte()
		var b [4]byte
		for i := range b {
			var ok bool
			if b[i], ok = d.readByte(); !ok {
				d.truncated(start, "stored block header")
				return
			}
		}
		n := uint16(b[0]) | uint16(b[1])<<8
		nn := uint16(b[2]) | uint16(b[3])<<8
		if n != ^nn {
			d.corrupt(start, "stored block length does not match its complement")
			return
		}
		d.stored = int(n)
		d.state = stStored
	case 1:
		d.lit, d.dist = &fixedLit, &fixedDist
		d.state = stHuffman
	case 2:
		if d.dynamicHeader(start) {
			d.lit, d.dist = d.dynLit, d.dynDst
			d.state = stHuffman
		}
	default:
		d.corrupt(start, "invalid block type 3")
	}
}

var clOrder = [19]uint8{16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15}

// dynamicHeader reads the code lengths of a dynamic Huffman block (RFC 1951 section 3.2.7)
// and builds its tables.
func (d *decoder) dynamicHeader(start int64) bool {
	if !d.need(14) {
		d.truncated(start, "dynamic block header")
		return false
	}
	nlit := int(d.bits&31) + 257
	ndist := int(d.bits>>5&31) + 1
	nclen := int(d.bits>>10&15) + 4
	d.consume(14)
	if nlit > numLit || ndist > numDist {
		d.corrupt(start, "too many length or distance codes")
		return false
	}
	var cl [19]uint8
	for i := 0; i < nclen; i++ {
		if !d.need(3) {
			d.truncated(start, "dynamic block header")
			return false
		}
		cl[clOrder[i]] = uint8(d.bits & 7)
		d.consume(3)
	}
	var clt clTable
	if msg := buildTable(clt[:], cl[:], clPayload[:], clBits); msg != "" {
		d.corrupt(start, msg+" (code lengths)")
		return false
	}
	var lens [numLit + numDist]uint8
	n := nlit + ndist
	for i := 0; i < n; {
		at := d.pos()
		d.need(clBits) // at the end of the input, the missing bits read as zero
		e := clt[d.bits&(clTabLen-1)]
		if e&fBad != 0 {
			d.corrupt(at, "invalid code-length code")
			return false
		}
		if uint(e&15) > d.nbits {
			d.truncated(at, "dynamic block header")
			return false
		}
		d.consume(uint(e & 15))
		sym := e >> 16
		if sym < 16 {
			lens[i] = uint8(sym)
			i++
			continue
		}
		var rep int
		var v uint8
		switch sym {
		case 16:
			if i == 0 {
				d.corrupt(at, "repeat of a code length with none before it")
				return false
			}
			if !d.need(2) {
				d.truncated(at, "dynamic block header")
				return false
			}
			rep, v = 3+int(d.bits&3), lens[i-1]
			d.consume(2)
		case 17:
			if !d.need(3) {
				d.truncated(at, "dynamic block header")
				return false
			}
			rep = 3 + int(d.bits&7)
			d.consume(3)
		default:
			if !d.need(7) {
				d.truncated(at, "dynamic block header")
				return false
			}
			rep = 11 + int(d.bits&127)
			d.consume(7)
		}
		if i+rep > n {
			d.corrupt(at, "code lengths repeat past the end")
			return false
		}
		for ; rep > 0; rep-- {
			lens[i] = v
			i++
		}
	}
	if lens[256] == 0 {
		d.corrupt(start, "no end-of-block code")
		return false
	}
	if msg := buildTable(d.dynLit[:], lens[:nlit], litPayload[:], litBits); msg != "" {
		d.corrupt(start, msg+" (literal/length)")
		return false
	}
	if msg := buildTable(d.dynDst[:], lens[nlit:n], distPayload[:], distBits); msg != "" {
		d.corrupt(start, msg+" (distance)")
		return false
	}
	return true
}

// storedBlock copies the data of a stored block.
func (d *decoder) storedBlock() {
	for d.stored > 0 && d.wp < outLimit {
		if d.nbits >= 8 {
			b, _ := d.readByte()
			d.out[d.wp] = b
			d.wp++
			d.stored--
			continue
		}
		d.bits, d.nbits = 0, 0
		if d.ip >= d.ie {
			d.fill()
			if d.ip >= d.ie {
				d.truncated(d.pos(), "stored block")
				return
			}
		}
		n := copy(d.out[d.wp:min(outLimit, d.wp+d.stored)], d.in[d.ip:d.ie])
		d.ip += n
		d.wp += n
		d.stored -= n
	}
	if d.stored == 0 {
		d.endBlock()
	}
}

// copyMatch copies a match of length bytes from dist bytes back (dist <= wp); out must have
// room for length+8 bytes at wp.
func copyMatch(out *[outSize]byte, wp, dist, length int) {
	src := wp - dist
	switch {
	case dist >= 8:
		for i := 0; i < length; i += 8 {
			copy(out[wp+i:wp+i+8], out[src+i:src+i+8])
		}
	case dist == 1:
		b := out[src]
		for i := 0; i < length; i++ {
			out[wp+i] = b
		}
	default:
		for i := 0; i < length; i++ {
			out[wp+i] = out[src+i]
		}
	}
}
