package layerindex

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
)

// zstd frames are independent: decoding can start at any frame. klauspost's decoder does not
// say where one frame ends, so frameReader walks the frame and block headers itself (RFC 8878
// section 3.1) and hands the decoder exactly one frame at a time.

const (
	zstdMagic          = 0xFD2FB528
	zstdSkippableMask  = 0xFFFFFFF0
	zstdSkippableMagic = 0x184D2A50
	zstdMaxBlock       = 128 << 10
	// zstdMaxWindow caps the memory one decoder may ask for: zstd -19 uses 8 MiB and
	// --long 128 MiB; a blob asking for more is refused rather than trusted.
	zstdMaxWindow = 128 << 20
)

// frameReader yields the bytes of one zstd frame at a time from r, then io.EOF; Next moves
// on to the following frame, skipping skippable frames.
type frameReader struct {
	r   *bufio.Reader
	off int64 // bytes of r consumed

	start   int64  // offset of the current frame's magic
	hdr     []byte // structural bytes read but not yet handed out
	pending int64  // block content bytes still to hand out
	last    bool   // the current block is the frame's last
	crc     bool   // the frame ends with a 4-byte content checksum
	done    bool   // the current frame has been handed out completely
}

func newFrameReader(r io.Reader) *frameReader {
	return &frameReader{r: bufio.NewReaderSize(r, 64<<10), done: true}
}

func (f *frameReader) readFull(b []byte) error {
	n, err := io.ReadFull(f.r, b)
	f.off += int64(n)
	if err == io.EOF && n == 0 {
		return io.EOF
	}
	if err != nil {
		return fmt.Errorf("zstd: truncated at byte %d: %w", f.off, io.ErrUnexpectedEOF)
	}
	return nil
}

// Next positions f at the next frame and reports its start offset, or io.EOF at the end of
// the stream.
func (f *frameReader) Next() (int64, error) {
	if !f.done {
		// The decoder stopped short of the frame's end; step over the rest.
		if _, err := io.Copy(io.Discard, f); err != nil {
			return 0, err
		}
	}
	for {
		var m [4]byte
		start := f.off
		if err := f.readFull(m[:]); err != nil {
			return 0, err
		}
		magic := binary.LittleEndian.Uint32(m[:])
		// Past the magic, the end of the input is a truncated frame, not the end of the stream.
		if magic&zstdSkippableMask == zstdSkippableMagic {
			if err := f.readFull(m[:]); err != nil {
				return 0, errTrunc(err, f.off)
			}
			n := int64(binary.LittleEndian.Uint32(m[:]))
			d, err := f.r.Discard(int(n))
			f.off += int64(d)
			if err != nil {
				return 0, fmt.Errorf("zstd: truncated skippable frame at byte %d: %w", start, io.ErrUnexpectedEOF)
			}
			continue
		}
		if magic != zstdMagic {
			return 0, fmt.Errorf("zstd: bad frame magic %#08x at byte %d", magic, start)
		}
		var fhd [1]byte
		if err := f.readFull(fhd[:]); err != nil {
			return 0, errTrunc(err, f.off)
		}
		d := fhd[0]
		if d&0x08 != 0 {
			return 0, fmt.Errorf("zstd: reserved bit set in frame header at byte %d", start)
		}
		single := d&0x20 != 0
		fcsLen := [4]int{0, 2, 4, 8}[d>>6]
		if fcsLen == 0 && single {
			fcsLen = 1
		}
		rest := fcsLen + [4]int{0, 1, 2, 4}[d&3]
		if !single {
			rest++ // window descriptor
		}
		hdr := make([]byte, 5+rest, 5+rest+3)
		copy(hdr, m[:])
		hdr[4] = d
		if err := f.readFull(hdr[5:]); err != nil {
			return 0, errTrunc(err, f.off)
		}
		f.start, f.hdr, f.pending, f.last, f.crc, f.done = start, hdr, 0, false, d&0x04 != 0, false
		return start, nil
	}
}

// Read hands out the current frame's bytes.
func (f *frameReader) Read(p []byte) (int, error) {
	for {
		if len(f.hdr) > 0 {
			n := copy(p, f.hdr)
			f.hdr = f.hdr[n:]
			return n, nil
		}
		if f.pending > 0 {
			if int64(len(p)) > f.pending {
				p = p[:f.pending]
			}
			n, err := f.r.Read(p)
			f.off += int64(n)
			f.pending -= int64(n)
			if err == io.EOF {
				err = fmt.Errorf("zstd: truncated block at byte %d: %w", f.off, io.ErrUnexpectedEOF)
			}
			return n, err
		}
		if f.done {
			return 0, io.EOF
		}
		if f.last {
			f.done = true
			if f.crc {
				var c [4]byte
				if err := f.readFull(c[:]); err != nil {
					return 0, errTrunc(err, f.off)
				}
				f.hdr = c[:]
			}
			continue
		}
		var b [3]byte
		at := f.off
		if err := f.readFull(b[:]); err != nil {
			return 0, errTrunc(err, f.off)
		}
		h := uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16
		f.last = h&1 != 0
		size := int64(h >> 3)
		switch (h >> 1) & 3 {
		case 0: // raw
		case 1: // RLE: one byte repeated size times
			size = 1
		case 2: // compressed
		default:
			return 0, fmt.Errorf("zstd: reserved block type at byte %d", at)
		}
		if size > zstdMaxBlock {
			return 0, fmt.Errorf("zstd: block of %d bytes at byte %d exceeds the maximum", size, at)
		}
		f.hdr = b[:]
		f.pending = size
	}
}

func errTrunc(err error, off int64) error {
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("zstd: truncated at byte %d: %w", off, io.ErrUnexpectedEOF)
	}
	return err
}

// zstdReader decodes a zstd stream frame by frame, reporting each frame's start.
type zstdReader struct {
	frames  *frameReader
	dec     *zstd.Decoder
	out     int64
	onFrame func(in, out int64) // called at the start of every frame after the first
}

// newZstdReader starts decoding at the frame beginning at the first byte of r. base is the
// blob offset of that byte, so that onFrame reports blob offsets.
func newZstdReader(r io.Reader, base int64, onFrame func(in, out int64)) (*zstdReader, error) {
	z := &zstdReader{frames: newFrameReader(r), onFrame: onFrame}
	z.frames.off = base
	if _, err := z.frames.Next(); err != nil {
		if err == io.EOF {
			return nil, fmt.Errorf("zstd: no frame at byte %d", base)
		}
		return nil, err
	}
	dec, err := zstd.NewReader(z.frames, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(zstdMaxWindow))
	if err != nil {
		return nil, err
	}
	z.dec = dec
	return z, nil
}

func (z *zstdReader) Read(p []byte) (int, error) {
	for {
		n, err := z.dec.Read(p)
		z.out += int64(n)
		if err != io.EOF {
			if err != nil {
				err = fmt.Errorf("zstd: frame at byte %d: %w", z.frames.start, err)
			}
			return n, err
		}
		if n > 0 {
			return n, nil
		}
		in, err := z.frames.Next()
		if err != nil {
			return 0, err
		}
		if z.onFrame != nil {
			z.onFrame(in, z.out)
		}
		if err := z.dec.Reset(z.frames); err != nil {
			return 0, err
		}
	}
}

func (z *zstdReader) Close() { z.dec.Close() }
