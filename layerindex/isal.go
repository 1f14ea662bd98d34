//go:build isal && cgo

package layerindex

/*
#cgo LDFLAGS: -lisal
#include <stdlib.h>
#include <isa-l/igzip_lib.h>

// imgfs_inflate_span decodes out_len bytes of raw DEFLATE that start at bit `bit` of in[0],
// after the history dict, into out; or, with gzip set, the data of the gzip member whose
// header starts in[0]. It returns 0 once out is full, 1 if the input ends first, 2 if the
// DEFLATE stream (a gzip member) does, -100 if the state could not be set up, or ISA-L's
// (negative) error.
static int imgfs_inflate_span(uint8_t *in, uint32_t in_len, int bit, uint8_t *dict,
		uint32_t dict_len, int gzip, uint8_t *out, uint32_t out_len) {
	struct inflate_state *s = malloc(sizeof(struct inflate_state));
	if (s == NULL) return -100;
	isal_inflate_init(s);
	s->crc_flag = gzip ? ISAL_GZIP : ISAL_DEFLATE;
	int ret = 0;
	if (dict_len > 0 && isal_inflate_set_dict(s, dict, dict_len) != COMP_OK) {
		ret = -100;
		goto out;
	}
	if (bit > 0) {
		// The checkpoint is inside in[0]: its bits from `bit` on are the first ones.
		s->read_in = in[0] >> bit;
		s->read_in_length = 8 - bit;
		in++;
		in_len--;
	}
	s->next_in = in;
	s->avail_in = in_len;
	s->next_out = out;
	s->avail_out = out_len;
	while (s->avail_out > 0) {
		uint32_t before_in = s->avail_in, before_out = s->avail_out;
		ret = isal_inflate(s);
		if (ret != ISAL_DECOMP_OK || s->avail_out == 0) break;
		if (s->block_state == ISAL_BLOCK_FINISH) {
			// The member ended; the next one follows its trailer, which ISA-L has read
			// only in gzip mode. Whole bytes still in the bit buffer are not read yet.
			// Members refer to nothing before them.
			uint32_t unread = s->read_in_length / 8;
			uint8_t *next_in = s->next_in - unread, *next_out = s->next_out;
			uint32_t avail_in = s->avail_in + unread, avail_out = s->avail_out;
			if (!gzip) {
				if (avail_in < 8) {
					ret = 2;
					break;
				}
				next_in += 8;
				avail_in -= 8;
			}
			isal_inflate_reset(s);
			gzip = 1;
			s->crc_flag = ISAL_GZIP;
			s->next_in = next_in;
			s->avail_in = avail_in;
			s->next_out = next_out;
			s->avail_out = avail_out;
			continue;
		}
		if (s->avail_in == before_in && s->avail_out == before_out) {
			ret = 1;
			break;
		}
	}
out:
	free(s);
	return ret;
}
*/
import "C"

import (
	"errors"
	"fmt"
	"io"
	"unsafe"
)

var errMemberEnds = errors.New("the gzip member ends before the span does")

// haveISAL says gzip spans are decoded with ISA-L (Intel's inflate, from libisal): about
// twice as fast as our own inflater on one core, and straight into the span's buffer.
// ISA-L parses the header of a span at a gzip member start itself. Pieces of long intervals
// go through our inflater, and so does a span that ISA-L fails on (one that runs into the
// next gzip member, or bad data, which our inflater then reports exactly).
const haveISAL = true

// inflateSpan decodes len(out) bytes of raw DEFLATE that start at bit `bit` of in[0], with
// window as the history before them; or, member set, the start of the gzip member whose
// header is at in[0].
func inflateSpan(in []byte, bit uint8, window []byte, member bool, out []byte) error {
	if len(out) == 0 {
		return nil
	}
	if len(in) == 0 || bit > 7 {
		return io.ErrUnexpectedEOF
	}
	if len(window) > 32<<10 {
		window = window[len(window)-32<<10:]
	}
	var dict *C.uint8_t
	if len(window) > 0 {
		dict = (*C.uint8_t)(unsafe.Pointer(&window[0]))
	}
	gzip := C.int(0)
	if member {
		gzip, dict, window = 1, nil, nil // a member refers to nothing before it
	}
	rc := C.imgfs_inflate_span((*C.uint8_t)(unsafe.Pointer(&in[0])), C.uint32_t(len(in)), C.int(bit),
		dict, C.uint32_t(len(window)), gzip, (*C.uint8_t)(unsafe.Pointer(&out[0])), C.uint32_t(len(out)))
	switch rc {
	case 0:
		return nil
	case 1:
		return fmt.Errorf("compressed data ends before the span does: %w", io.ErrUnexpectedEOF)
	case 2:
		return errMemberEnds
	case -100:
		return fmt.Errorf("ISA-L could not start at the checkpoint")
	}
	return fmt.Errorf("corrupt DEFLATE data (ISA-L error %d)", int(rc))
}
