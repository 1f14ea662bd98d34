//go:build isal && cgo

package layerindex

/*
#cgo LDFLAGS: -lisal
#include <stdlib.h>
#include <isa-l/igzip_lib.h>

// imgfs_span is the decoding of one span, fed its compressed bytes a piece at a time.
typedef struct {
	struct inflate_state s;
	int gzip;        // the member being decoded began with a header, which ISA-L read
	int next_member; // a member ended: the next one begins after skip more bytes
	uint32_t skip;   // bytes of the ended member's trailer still to step over
	uint32_t left;   // output still to produce, after the last imgfs_span_feed
} imgfs_span;

// imgfs_span_start sets up the decoding of raw DEFLATE after the history dict or, with gzip
// set, of a gzip member from its header. NULL if it cannot.
static imgfs_span *imgfs_span_start(uint8_t *dict, uint32_t dict_len, int gzip) {
	imgfs_span *sp = malloc(sizeof *sp);
	if (sp == NULL) return NULL;
	isal_inflate_init(&sp->s);
	sp->s.crc_flag = gzip ? ISAL_GZIP : ISAL_DEFLATE;
	sp->gzip = gzip;
	sp->next_member = 0;
	sp->skip = 0;
	if (dict_len > 0 && isal_inflate_set_dict(&sp->s, dict, dict_len) != COMP_OK) {
		free(sp);
		return NULL;
	}
	return sp;
}

// imgfs_span_bits makes the bits of b from `bit` on the first ones: the checkpoint is
// inside that byte.
static void imgfs_span_bits(imgfs_span *sp, uint8_t b, int bit) {
	sp->s.read_in = b >> bit;
	sp->s.read_in_length = 8 - bit;
}

// imgfs_span_feed decodes in[0:in_len] into out[0:out_len], going on from the pieces
// before. It returns 0 once out is full, 3 when it needs the next piece, 1 if it made no
// progress, -101 if a member ended where its end cannot be found in this piece, or ISA-L's
// (negative) error. sp->left is what out still lacks. No pointer outlives the call.
static int imgfs_span_feed(imgfs_span *sp, uint8_t *in, uint32_t in_len, uint8_t *out, uint32_t out_len) {
	struct inflate_state *s = &sp->s;
	int ret = 0;
	s->next_in = in;
	s->avail_in = in_len;
	s->next_out = out;
	s->avail_out = out_len;
	while (s->avail_out > 0) {
		if (sp->next_member) {
			uint32_t k = sp->skip < s->avail_in ? sp->skip : s->avail_in;
			s->next_in += k;
			s->avail_in -= k;
			sp->skip -= k;
			if (sp->skip > 0) {
				ret = 3;
				break;
			}
			// Members refer to nothing before them: a fresh state, which reads the header.
			uint8_t *next_in = s->next_in, *next_out = s->next_out;
			uint32_t avail_in = s->avail_in, avail_out = s->avail_out;
			isal_inflate_reset(s);
			s->crc_flag = ISAL_GZIP;
			s->next_in = next_in;
			s->avail_in = avail_in;
			s->next_out = next_out;
			s->avail_out = avail_out;
			sp->gzip = 1;
			sp->next_member = 0;
		}
		uint32_t before_in = s->avail_in, before_out = s->avail_out;
		ret = isal_inflate(s);
		if (ret != ISAL_DECOMP_OK || s->avail_out == 0) break;
		if (s->block_state == ISAL_BLOCK_FINISH) {
			// The member ended. The whole bytes still in the bit buffer are not read
			// yet; then comes its trailer, which ISA-L has read only in gzip mode.
			uint32_t unread = s->read_in_length / 8;
			if (unread > (uint32_t)(s->next_in - in)) {
				ret = -101;
				break;
			}
			s->next_in -= unread;
			s->avail_in += unread;
			sp->skip = sp->gzip ? 0 : 8;
			sp->next_member = 1;
			continue;
		}
		if (s->avail_in == 0) {
			ret = 3;
			break;
		}
		if (s->avail_in == before_in && s->avail_out == before_out) {
			ret = 1;
			break;
		}
	}
	sp->left = s->avail_out;
	s->next_in = NULL;
	s->next_out = NULL;
	return ret;
}

// imgfs_inflate_whole inflates in, a whole raw DEFLATE stream, into out, which has room
// for one byte more than is wanted: it returns the bytes produced, or -1 when the data is
// bad or does not end (its last block) exactly at the end of in.
static long imgfs_inflate_whole(uint8_t *in, uint32_t in_len, uint8_t *out, uint32_t out_len) {
	struct inflate_state *s = malloc(sizeof *s);
	if (s == NULL) return -1;
	isal_inflate_init(s);
	s->crc_flag = ISAL_DEFLATE;
	s->next_in = in;
	s->avail_in = in_len;
	s->next_out = out;
	s->avail_out = out_len;
	int ret = isal_inflate(s);
	long n = -1;
	if (ret == ISAL_DECOMP_OK && s->block_state == ISAL_BLOCK_FINISH &&
	    s->avail_in + s->read_in_length / 8 == 0) {
		n = out_len - s->avail_out;
	}
	free(s);
	return n;
}
*/
import "C"

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"unsafe"
)

// haveISAL says gzip spans are decoded with ISA-L (Intel's inflate, from libisal): about
// twice as fast as our own inflater on one core, and straight into the span's buffer.
// ISA-L reads the header of a span at a gzip member start itself, and goes on through the
// ends of members. Pieces of long intervals go through our inflater, and so does a span
// that ISA-L fails on (bad data, which our inflater then reports exactly).
const haveISAL = true

// inflateWindow inflates comp, a checkpoint's window as an index stores it (a whole raw
// DEFLATE stream), which must give exactly n bytes, with nothing of comp left over.
// ISA-L does it several times faster than compress/flate, and every span decoded from a
// checkpoint of an index read from its file begins with it.
func inflateWindow(comp []byte, n int) ([]byte, error) {
	if len(comp) == 0 {
		return nil, errors.New("no DEFLATE stream")
	}
	out := make([]byte, n+1) // room for a byte too many, to tell a longer stream
	got := C.imgfs_inflate_whole((*C.uint8_t)(unsafe.Pointer(&comp[0])), C.uint32_t(len(comp)),
		(*C.uint8_t)(unsafe.Pointer(&out[0])), C.uint32_t(len(out)))
	runtime.KeepAlive(comp)
	switch {
	case got < 0:
		return nil, errors.New("not one whole DEFLATE stream")
	case int(got) != n:
		return nil, fmt.Errorf("inflates to %d bytes, not %d", int(got), n)
	}
	return out[:n:n], nil
}

// isalPiece is how much compressed input is read at a time. Reading a span's input whole
// would take a buffer as long as the longest span's input per decoder, kept or faulted in
// again for every span.
var isalPiece = 256 << 10 // a variable for tests

// isalPieces keeps a piece buffer per decoder that can run at once (a sync.Pool would
// drop them at every garbage collection, and a new one is faulted in).
var isalPieces = struct {
	mu   sync.Mutex
	list bufferList
}{list: bufferList{max: runtime.GOMAXPROCS(0) + 1}}

// inflateSpan decodes len(out) bytes from the compressed bytes of blob in `in`: raw DEFLATE
// that starts at bit `bit` of the first byte, with window as the history before it; or,
// member set, the gzip member whose header is the first byte.
func inflateSpan(blob io.ReaderAt, in section, bit uint8, window []byte, member bool, out []byte) error {
	if len(out) == 0 {
		return nil
	}
	if in.end <= in.start || bit > 7 {
		return io.ErrUnexpectedEOF
	}
	if len(window) > 32<<10 {
		window = window[len(window)-32<<10:]
	}
	gzip := C.int(0)
	if member {
		gzip, window = 1, nil // a member refers to nothing before it
	}
	var dict *C.uint8_t
	if len(window) > 0 {
		dict = (*C.uint8_t)(unsafe.Pointer(&window[0]))
	}
	sp := C.imgfs_span_start(dict, C.uint32_t(len(window)), gzip)
	if sp == nil {
		return fmt.Errorf("ISA-L could not start at the checkpoint")
	}
	defer C.free(unsafe.Pointer(sp))
	isalPieces.mu.Lock()
	buf := isalPieces.list.get(int64(isalPiece))
	isalPieces.mu.Unlock()
	defer func() {
		isalPieces.mu.Lock()
		isalPieces.list.put(buf)
		isalPieces.mu.Unlock()
	}()
	done := 0
	for off := in.start; off < in.end; {
		p := buf[:min(int64(len(buf)), in.end-off)]
		if n, err := blob.ReadAt(p, off); n < len(p) {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		if off == in.start && bit > 0 {
			C.imgfs_span_bits(sp, C.uint8_t(p[0]), C.int(bit))
			p = p[1:]
			off++
		}
		off += int64(len(p))
		if len(p) == 0 {
			continue
		}
		rc := C.imgfs_span_feed(sp, (*C.uint8_t)(unsafe.Pointer(&p[0])), C.uint32_t(len(p)),
			(*C.uint8_t)(unsafe.Pointer(&out[done])), C.uint32_t(len(out)-done))
		runtime.KeepAlive(p)
		done = len(out) - int(sp.left)
		switch rc {
		case 0:
			return nil
		case 3:
		case 1:
			return fmt.Errorf("ISA-L stopped short of the span's end")
		case -101:
			return fmt.Errorf("a gzip member ends where ISA-L cannot go on")
		default:
			return fmt.Errorf("corrupt DEFLATE data (ISA-L error %d)", int(rc))
		}
	}
	return fmt.Errorf("compressed data ends before the span does: %w", io.ErrUnexpectedEOF)
}
