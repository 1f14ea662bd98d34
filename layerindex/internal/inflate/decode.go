package inflate

import "encoding/binary"

// huffman decodes the symbols of a Huffman-coded block (RFC 1951 section 3.2.5) until the
// block ends, out fills up, or an error.
//
// The fast loop runs while 8 bytes of input are buffered: it refills the bit buffer to at
// least 56 bits with one 8-byte load per symbol, which is enough for the longest
// length/distance pair (15+5+15+13 bits). Near the end of the buffered input it hands over
// to slowSymbol, which reads byte by byte and detects truncation.
func (d *decoder) huffman() {
	lit, dist := d.lit, d.dist
	out := d.out
	hs := d.hstart
	for {
		in := d.in[:d.ie]
		ip, bits, nb, wp := d.ip, d.bits, d.nbits, d.wp
		for wp < outLimit && ip+8 <= len(in) {
			bits |= binary.LittleEndian.Uint64(in[ip:]) << (nb & 63)
			ip += int((63 - nb) >> 3)
			nb |= 56

			e := lit[bits&litMask]
			if e&fSub != 0 {
				e = lit[((e>>16)+uint32(bits>>litBits)&(1<<(e&15)-1))&(litTabLen-1)]
			}
			if e&fLit != 0 {
				n := uint(e & 15)
				bits >>= n
				nb -= n
				out[wp] = byte(e >> 16)
				wp++
				// Up to two more literals without a refill (41 bits are left at least).
				e = lit[bits&litMask]
				if e&fLit == 0 {
					continue
				}
				n = uint(e & 15)
				bits >>= n
				nb -= n
				out[wp] = byte(e >> 16)
				wp++
				e = lit[bits&litMask]
				if e&fLit == 0 {
					continue
				}
				n = uint(e & 15)
				bits >>= n
				nb -= n
				out[wp] = byte(e >> 16)
				wp++
				continue
			}
			if e&(fEOB|fBad) != 0 {
				d.ip, d.bits, d.nbits, d.wp = ip, bits, nb, wp
				if e&fBad != 0 {
					d.corrupt(d.pos(), "invalid literal/length code")
					return
				}
				d.consume(uint(e & 15))
				d.endBlock()
				return
			}
			n := uint(e & 15)
			x := uint(e>>4) & 15
			length := int(e>>16) + int((bits>>n)&(1<<x-1))
			bits >>= n + x
			nb -= n + x

			e = dist[bits&distMask]
			if e&fSub != 0 {
				e = dist[((e>>16)+uint32(bits>>distBits)&(1<<(e&15)-1))&(distTabLen-1)]
			}
			if e&fBad != 0 {
				d.ip, d.bits, d.nbits, d.wp = ip, bits, nb, wp
				d.corrupt(d.pos(), "invalid distance code")
				return
			}
			n = uint(e & 15)
			x = uint(e>>4) & 15
			dst := int(e>>16) + int((bits>>n)&(1<<x-1))
			if dst > wp-hs {
				d.ip, d.bits, d.nbits, d.wp = ip, bits, nb, wp
				d.corrupt(d.pos(), "invalid distance: too far back")
				return
			}
			bits >>= n + x
			nb -= n + x

			src := wp - dst
			switch {
			case dst >= 8:
				for i := 0; i < length; i += 8 {
					binary.LittleEndian.PutUint64(out[wp+i:], binary.LittleEndian.Uint64(out[src+i:]))
				}
			case dst == 1:
				v := uint64(out[src]) * 0x0101010101010101
				for i := 0; i < length; i += 8 {
					binary.LittleEndian.PutUint64(out[wp+i:], v)
				}
			default:
				for i := 0; i < length; i++ {
					out[wp+i] = out[src+i]
				}
			}
			wp += length
		}
		d.ip, d.bits, d.nbits, d.wp = ip, bits, nb, wp
		if wp >= outLimit {
			return
		}
		if !d.eof {
			d.fill()
			if d.ip+8 <= d.ie {
				continue
			}
		}
		if !d.slowSymbol() {
			return
		}
	}
}

// slowSymbol decodes one literal, length/distance pair or end of block, reading the input
// byte by byte. It reports whether the block goes on.
func (d *decoder) slowSymbol() bool {
	for d.nbits <= 56 && d.fetchByte() {
	}
	// At the end of the input the bits past nbits are zero; a code that fits in nbits was
	// decoded from real bits only.
	at := d.pos()
	e := d.lit[d.bits&litMask]
	if e&fSub != 0 {
		e = d.lit[((e>>16)+uint32(d.bits>>litBits)&(1<<(e&15)-1))&(litTabLen-1)]
	}
	if e&fBad != 0 {
		d.corrupt(at, "invalid literal/length code")
		return false
	}
	n := uint(e & 15)
	if n > d.nbits {
		d.truncated(at, "Huffman block")
		return false
	}
	if e&fLit != 0 {
		d.consume(n)
		d.out[d.wp] = byte(e >> 16)
		d.wp++
		return true
	}
	if e&fEOB != 0 {
		d.consume(n)
		d.endBlock()
		return false
	}
	x := uint(e>>4) & 15
	if n+x > d.nbits {
		d.truncated(at, "Huffman block")
		return false
	}
	length := int(e>>16) + int((d.bits>>n)&(1<<x-1))
	d.consume(n + x)

	at = d.pos()
	e = d.dist[d.bits&distMask]
	if e&fSub != 0 {
		e = d.dist[((e>>16)+uint32(d.bits>>distBits)&(1<<(e&15)-1))&(distTabLen-1)]
	}
	if e&fBad != 0 {
		d.corrupt(at, "invalid distance code")
		return false
	}
	n = uint(e & 15)
	x = uint(e>>4) & 15
	if n+x > d.nbits {
		d.truncated(at, "Huffman block")
		return false
	}
	dst := int(e>>16) + int((d.bits>>n)&(1<<x-1))
	if dst > d.wp-d.hstart {
		d.corrupt(at, "invalid distance: too far back")
		return false
	}
	d.consume(n + x)
	copyMatch(d.out, d.wp, dst, length)
	d.wp += length
	return true
}
