package inflate

import "math/bits"

// Huffman decoding tables.
//
// A table is indexed by the next bits of the stream, least significant bit first (the order
// RFC 1951 section 3.1.1 packs Huffman codes in, reversed). Codes of up to primary bits are
// decoded with one look-up: every entry whose low bits equal the reversed code holds it.
// Longer codes share a primary entry per distinct first-primary-bits prefix, which links to a
// sub-table indexed by the bits that follow the prefix.
//
// An entry is a uint32:
//
//	bits  0-3   length of the code in bits (for a link: width of the sub-table in bits)
//	bits  4-7   number of extra bits following the code (length and distance symbols)
//	bits  8-11  flags: fLit, fEOB, fSub, fBad; none set means a length or distance
//	bits 16-31  value: literal byte, base length, base distance, code-length symbol, or
//	            index of the sub-table (for fSub)
const (
	fLit = 1 << 8  // literal byte
	fEOB = 1 << 9  // end of block
	fSub = 1 << 10 // link to a sub-table
	fBad = 1 << 11 // no such code, or a symbol that must not occur

	litBits    = 10 // primary bits of the literal/length table
	litMask    = 1<<litBits - 1
	litTabLen  = 4096 // power of two, more than any complete code over 286 symbols needs
	distBits   = 8
	distMask   = 1<<distBits - 1
	distTabLen = 1024 // likewise, for 30 symbols
	clBits     = 7
	clTabLen   = 1 << clBits

	maxCodeLen = 15
	numLit     = 286 // literal/length symbols that may occur
	numDist    = 30  // distance symbols that may occur
)

type (
	litTable  [litTabLen]uint32
	distTable [distTabLen]uint32
	clTable   [clTabLen]uint32
)

// Payloads (entry without the code length) of every symbol of each alphabet.
var (
	litPayload  [288]uint32
	distPayload [32]uint32
	clPayload   [19]uint32

	fixedLit  litTable
	fixedDist distTable
)

func init() {
	for s := 0; s < 256; s++ {
		litPayload[s] = fLit | uint32(s)<<16
	}
	litPayload[256] = fEOB
	// RFC 1951 section 3.2.5: length codes 257..284 have base lengths 3..227 in groups of
	// four with 0..5 extra bits (the first eight have none); 285 is length 258.
	for i := 0; i < 28; i++ {
		var base, extra uint32
		if i < 8 {
			base = 3 + uint32(i)
		} else {
			extra = uint32(i/4 - 1)
			base = (4+uint32(i%4))<<extra + 3
		}
		litPayload[257+i] = base<<16 | extra<<4
	}
	litPayload[285] = 258 << 16
	litPayload[286] = fBad
	litPayload[287] = fBad
	// Distance codes 0..3 are distances 1..4; then pairs with 1..13 extra bits.
	for c := 0; c < 30; c++ {
		var base, extra uint32
		if c < 4 {
			base = 1 + uint32(c)
		} else {
			extra = uint32(c/2 - 1)
			base = (2+uint32(c&1))<<extra + 1
		}
		distPayload[c] = base<<16 | extra<<4
	}
	distPayload[30] = fBad
	distPayload[31] = fBad
	for s := range clPayload {
		clPayload[s] = uint32(s) << 16
	}

	// Fixed Huffman codes, RFC 1951 section 3.2.6.
	var l [288]uint8
	for s := range l {
		switch {
		case s < 144:
			l[s] = 8
		case s < 256:
			l[s] = 9
		case s < 280:
			l[s] = 7
		default:
			l[s] = 8
		}
	}
	if buildTable(fixedLit[:], l[:], litPayload[:], litBits) != "" {
		panic("inflate: fixed literal table")
	}
	var dl [32]uint8
	for s := range dl {
		dl[s] = 5
	}
	if buildTable(fixedDist[:], dl[:], distPayload[:], distBits) != "" {
		panic("inflate: fixed distance table")
	}
}

// buildTable fills tab with the decoding table of the canonical Huffman code (RFC 1951
// section 3.2.2) that has the given code lengths, with primary table bits primary. It
// returns a description of what is wrong with the lengths, or "".
//
// The code must be complete, except that (as zlib and compress/flate do) a code with a
// single symbol of length 1 is accepted, as is an empty code: the unused bit patterns decode
// to fBad entries.
func buildTable(tab []uint32, lengths []uint8, payload []uint32, primary uint) string {
	var count [maxCodeLen + 1]int
	for _, l := range lengths {
		count[l]++
	}
	count[0] = 0
	left := 1
	total := 0
	for l := 1; l <= maxCodeLen; l++ {
		left = left<<1 - count[l]
		if left < 0 {
			return "over-subscribed Huffman code"
		}
		total += count[l]
	}
	if left > 0 && total != 0 && !(total == 1 && count[1] == 1) {
		return "incomplete Huffman code"
	}

	var next [maxCodeLen + 1]uint32
	code := uint32(0)
	for l := 1; l <= maxCodeLen; l++ {
		code = (code + uint32(count[l-1])) << 1
		next[l] = code
	}

	psize := uint32(1) << primary
	pmask := psize - 1
	if left > 0 {
		for i := range tab[:psize] {
			tab[i] = fBad
		}
	}

	// Short codes, and the widest sub-table each long-code prefix needs.
	var width [1 << litBits]uint8 // indexed by the reversed primary prefix
	var long [numLit + 2]uint16   // reversed long codes, by symbol
	anyLong := false
	for s, l := range lengths {
		if l == 0 {
			continue
		}
		c := next[l]
		next[l]++
		r := uint32(bits.Reverse16(uint16(c))) >> (16 - uint(l))
		if uint(l) <= primary {
			e := payload[s] | uint32(l)
			for j := r; j < psize; j += 1 << l {
				tab[j] = e
			}
			continue
		}
		anyLong = true
		long[s] = uint16(r)
		if w := l - uint8(primary); w > width[r&pmask] {
			width[r&pmask] = w
		}
	}
	if !anyLong {
		return ""
	}

	// Lay out the sub-tables after the primary table.
	var subOff [1 << litBits]uint32
	off := psize
	for p := uint32(0); p < psize; p++ {
		w := width[p]
		if w == 0 {
			continue
		}
		if off+1<<w > uint32(len(tab)) {
			return "Huffman table overflow" // cannot happen for a complete code
		}
		subOff[p] = off
		tab[p] = fSub | off<<16 | uint32(w)
		off += 1 << w
	}
	for s, l := range lengths {
		if uint(l) <= primary {
			continue
		}
		r := uint32(long[s])
		p := r & pmask
		base := subOff[p]
		size := uint32(1) << width[p]
		e := payload[s] | uint32(l)
		for j := r >> primary; j < size; j += 1 << (uint(l) - primary) {
			tab[base+j] = e
		}
	}
	return ""
}
