//go:build isal && cgo

package layerindex

/*
#cgo LDFLAGS: -lisal
#include <stdlib.h>
#include <isa-l/igzip_lib.h>

// imgfs_build_info is what Build's decoding needs of the state after a call.
typedef struct {
	uint32_t in_left, out_left; // of the call's input and output
	int state;                  // block_state
	int32_t bits;               // bits in the bit buffer, not decoded yet
	int32_t tmp_in;             // bytes ISA-L keeps of a block header it could not finish
	int32_t pending;            // decoded bytes not yet copied out
	int32_t stored;             // bytes left of the stored block being copied
} imgfs_build_info;

static struct inflate_state *imgfs_build_start(void) {
	struct inflate_state *s = malloc(sizeof *s);
	if (s == NULL) return NULL;
	isal_inflate_init(s);
	s->crc_flag = ISAL_GZIP;
	return s;
}

// imgfs_build_member makes s read a gzip member from its header.
static void imgfs_build_member(struct inflate_state *s) {
	isal_inflate_reset(s);
	s->crc_flag = ISAL_GZIP;
}

// imgfs_build_step runs ISA-L once on in[0:in_len] into out[0:out_len]. No pointer
// outlives the call.
static int imgfs_build_step(struct inflate_state *s, uint8_t *in, uint32_t in_len, uint8_t *out, uint32_t out_len, imgfs_build_info *info) {
	s->next_in = in;
	s->avail_in = in_len;
	s->next_out = out;
	s->avail_out = out_len;
	int ret = isal_inflate(s);
	info->in_left = s->avail_in;
	info->out_left = s->avail_out;
	info->state = s->block_state;
	info->bits = s->read_in_length;
	info->tmp_in = s->tmp_in_size;
	info->pending = s->tmp_out_valid - s->tmp_out_processed;
	info->stored = s->block_state == ISAL_BLOCK_TYPE0 ? s->type0_block_len : 0;
	s->next_in = NULL;
	s->next_out = NULL;
	return ret;
}
*/
import "C"

import (
	"errors"
	"fmt"
	"io"
	"unsafe"

	"github.com/imgfs/imgfs/layerindex/internal/inflate"
)

// isalGzip decodes a whole gzip stream with ISA-L for Build, and records checkpoints by
// our inflater's rule (inflate.NewGzipReader): at a member start, or at a DEFLATE block
// header, once SpanSize bytes have been decoded since the last one. ISA-L does not stop
// at block ends by itself, but it does stop, at the header, when the input it is given
// ends inside a block header. So, nearing SpanSize, it is given the input a little at a
// time (a stored block's, to its end), and a checkpoint is taken at the first header past
// SpanSize it stops at: a block boundary our inflater would record with a small enough
// span, though not always the first one past SpanSize (a header too short to be cut is
// passed: intervals are then somewhat longer), and exactly where ISA-L resumes from a
// checkpoint (inflateSpan). TestISALBuildMatchesInflater holds this to our inflater.
type isalGzip struct {
	st        *C.struct_inflate_state
	src       io.Reader
	in        []byte
	ip, ie    int
	inBase    int64 // compressed offset of in[0]
	eof       bool
	rerr      error
	out       []byte // decoded bytes; the window before wp is kept when it slides
	rp, wp    int
	mstart    int   // index in out of the current member's first byte, or 0 if before out
	outBase   int64 // uncompressed offset of out[0]
	span      int64
	onCP      func(inflate.Checkpoint)
	lastCP    int64
	atMember  bool  // the next thing is a member header, or the end
	started   bool  // a member was begun
	memberIn  int64 // compressed offset of the current member
	memberOut int64 // and uncompressed
	stuck     int   // calls in a row that did nothing
	last      C.imgfs_build_info
	err       error
}

const (
	isalBuildIn  = 256 << 10
	isalBuildOut = 1 << 20
	// isalSearch is the input ISA-L is given at a time while a checkpoint is due: the
	// headers of dynamic Huffman blocks as compressors write them are mostly longer, so
	// ISA-L stops at most of them.
	isalSearch = 64
)

func newISALGzip(r io.Reader, span int64, onCP func(inflate.Checkpoint)) (io.ReadCloser, error) {
	st := C.imgfs_build_start()
	if st == nil {
		return nil, errors.New("inflate: ISA-L state: out of memory")
	}
	z := &isalGzip{st: st, src: r, in: make([]byte, isalBuildIn), out: make([]byte, isalBuildOut),
		span: span, onCP: onCP, lastCP: -1, atMember: true}
	if span <= 0 {
		z.onCP = nil
	}
	if !z.ensure(1) {
		err := z.inputEnded("gzip header")
		if z.rerr == nil {
			err = fmt.Errorf("inflate: unexpected EOF at byte 0: empty input: %w", io.ErrUnexpectedEOF)
		}
		z.Close()
		return nil, err
	}
	return z, nil
}

func (z *isalGzip) Close() error {
	if z.st != nil {
		C.free(unsafe.Pointer(z.st))
		z.st = nil
	}
	if z.err == nil {
		z.err = errors.New("inflate: reader is closed")
	}
	return nil
}

func (z *isalGzip) Read(p []byte) (int, error) {
	for {
		if z.rp < z.wp {
			n := copy(p, z.out[z.rp:z.wp])
			z.rp += n
			return n, nil
		}
		if z.err != nil {
			return 0, z.err
		}
		if len(p) == 0 {
			return 0, nil
		}
		z.step()
	}
}

// ensure makes at least n bytes of input available if the source has them.
func (z *isalGzip) ensure(n int) bool {
	for z.ie-z.ip < n && !z.eof {
		z.fill()
	}
	return z.ie-z.ip >= n
}

// fill moves the unread input to the front and reads more after it, until in is full or
// the input ends: where ISA-L stops, and so where checkpoints are, depends on the input
// it is given at a time, so it must not depend on how the blob's reader splits it (an
// index built from a file and one built from a registry's stream are then the same). A
// few bytes before ip are kept: at a member's end, ISA-L may have taken whole bytes after
// it into its bit buffer, from input before the last fill.
func (z *isalGzip) fill() {
	keep := max(0, z.ip-16)
	n := copy(z.in, z.in[keep:z.ie])
	z.inBase += int64(keep)
	z.ip -= keep
	z.ie = n
	for tries := 0; z.ie < len(z.in); tries++ {
		n, err := z.src.Read(z.in[z.ie:])
		if n < 0 || n > len(z.in)-z.ie {
			z.eof, z.rerr = true, errors.New("reader returned an invalid count")
			return
		}
		z.ie += n
		if err != nil {
			z.eof = true
			if err != io.EOF {
				z.rerr = err
			}
			return
		}
		if n > 0 {
			tries = 0
			continue
		}
		if tries >= 100 {
			z.eof, z.rerr = true, io.ErrNoProgress
			return
		}
	}
}

func (z *isalGzip) inputEnded(what string) error {
	at := z.inBase + int64(z.ip)
	if z.rerr != nil {
		return fmt.Errorf("inflate: read error at byte %d: %s: %w", at, what, z.rerr)
	}
	return fmt.Errorf("inflate: unexpected EOF at byte %d: truncated %s: %w", at, what, io.ErrUnexpectedEOF)
}

// slide moves the last window of output to the front of out.
func (z *isalGzip) slide() {
	keep := z.wp - max(z.mstart, z.wp-windowSize)
	drop := z.wp - keep
	copy(z.out[:keep], z.out[drop:z.wp])
	z.outBase += int64(drop)
	z.mstart = max(0, z.mstart-drop)
	z.wp -= drop
	z.rp -= drop
}

const windowSize = 32 << 10

// checkpoint records a checkpoint at compressed bit in, uncompressed offset outBase+wp.
func (z *isalGzip) checkpoint(member bool, in int64) {
	out := z.outBase + int64(z.wp)
	z.lastCP = out
	cp := inflate.Checkpoint{In: in >> 3, Bit: uint8(in & 7), Out: out, Member: member}
	if !member {
		cp.Window = append([]byte(nil), z.out[max(z.mstart, z.wp-windowSize):z.wp]...)
	}
	z.onCP(cp)
}

// step decodes more output; called when all decoded output has been read.
func (z *isalGzip) step() {
	if len(z.out)-z.wp < 256<<10 {
		z.slide()
	}
	if z.atMember {
		z.nextMember()
		return
	}
	pos := z.outBase + int64(z.wp)
	due := z.onCP != nil && pos-z.lastCP >= z.span
	if z.ip == z.ie {
		z.fill()
		if z.ip == z.ie {
			z.err = z.inputEnded("DEFLATE data")
			return
		}
	}
	n := z.ie - z.ip
	room := len(z.out) - z.wp
	switch {
	case due && z.last.state == C.ISAL_BLOCK_TYPE0 && z.last.pending == 0 && int(z.last.stored)-int(z.last.bits/8) > 0:
		// To the end of the stored block, where ISA-L then stops at the next header.
		n = min(n, int(z.last.stored)-int(z.last.bits/8))
	case due:
		n = min(n, isalSearch)
	case z.onCP != nil:
		// Towards SpanSize by halves, so that the search starts close to where our
		// inflater's rule would: half the input that decodes to the rest of it at the
		// member's ratio so far. The input, not the output, is what stops ISA-L: stopped by
		// a full output, it has decoded on into its own buffer, through block headers no
		// longer seen.
		left := z.lastCP + z.span - pos
		in, out := z.inBase+int64(z.ip)-z.memberIn, pos-z.memberOut
		if in > 0 && out > 0 {
			left = left * in / out
		} else {
			// No ratio yet: a little input to learn it, which cannot decode past SpanSize
			// unless its ratio is over 64.
			left = min(left/64, isalSearch<<6)
		}
		n = int(min(int64(n), max(left/2, isalSearch)))
	}
	var info C.imgfs_build_info
	rc := C.imgfs_build_step(z.st, (*C.uint8_t)(unsafe.Pointer(&z.in[z.ip])), C.uint32_t(n),
		(*C.uint8_t)(unsafe.Pointer(&z.out[z.wp])), C.uint32_t(room), &info)
	used, made := n-int(info.in_left), room-int(info.out_left)
	z.ip += used
	z.wp += made
	if rc < 0 {
		z.err = z.isalError(int(rc))
		return
	}
	progress := used > 0 || made > 0 || info != z.last
	z.last = info
	if !progress {
		if z.stuck++; z.stuck > 3 {
			z.err = fmt.Errorf("inflate: ISA-L makes no progress at byte %d", z.inBase+int64(z.ip))
		}
		return
	}
	z.stuck = 0
	switch {
	case info.state == C.ISAL_BLOCK_FINISH:
		// The member and its trailer are read; whole bytes in the bit buffer are the
		// next member's.
		z.ip -= int(info.bits / 8)
		z.atMember = true
	case z.onCP != nil && z.outBase+int64(z.wp)-z.lastCP >= z.span && (info.state == C.ISAL_BLOCK_HDR || info.state == C.ISAL_BLOCK_NEW_HDR) && info.pending == 0 && info.out_left > 0:
		// At a block header: the bits not decoded yet are the bit buffer's and the
		// header bytes ISA-L keeps, all read from before ip.
		bit := (z.inBase+int64(z.ip))*8 - int64(info.tmp_in)*8 - int64(info.bits)
		z.checkpoint(false, bit)
	}
}

// nextMember starts the next member, or ends the stream where no input is left.
func (z *isalGzip) nextMember() {
	if !z.ensure(1) {
		if z.rerr != nil {
			z.err = z.inputEnded("input")
		} else {
			z.err = io.EOF
		}
		return
	}
	// ISA-L does not refuse the flag bits RFC 1952 reserves; our inflater does.
	if z.ensure(4) && z.in[z.ip+3]&^0x1f != 0 {
		z.err = fmt.Errorf("inflate: invalid gzip header at byte %d: %s", z.inBase+int64(z.ip), "reserved flag bits set")
		return
	}
	C.imgfs_build_member(z.st)
	z.last = C.imgfs_build_info{}
	z.memberIn = z.inBase + int64(z.ip)
	z.memberOut = z.outBase + int64(z.wp)
	z.mstart = z.wp
	z.atMember = false
	z.started = true
	if z.onCP != nil && (z.lastCP < 0 || z.outBase+int64(z.wp)-z.lastCP >= z.span) {
		z.checkpoint(true, z.memberIn*8)
	}
}

func (z *isalGzip) isalError(rc int) error {
	msg := map[int]string{
		C.ISAL_INVALID_BLOCK:      "invalid block",
		C.ISAL_INVALID_SYMBOL:     "invalid symbol",
		C.ISAL_INVALID_LOOKBACK:   "distance too far back",
		C.ISAL_INVALID_WRAPPER:    "invalid gzip header",
		C.ISAL_UNSUPPORTED_METHOD: "unknown compression method",
		C.ISAL_INCORRECT_CHECKSUM: "CRC-32 or ISIZE mismatch",
	}[rc]
	if msg == "" {
		msg = fmt.Sprintf("ISA-L error %d", rc)
	}
	return fmt.Errorf("inflate: corrupt gzip member at byte %d: %s (near byte %d)", z.memberIn, msg, z.inBase+int64(z.ip))
}
