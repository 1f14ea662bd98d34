package inflate

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
	"testing/iotest"

	kflate "github.com/klauspost/compress/flate"
)

func TestDeflateAgreement(t *testing.T) {
	for _, in := range testInputs(t) {
		for _, lv := range levels {
			t.Run(in.name+"/"+lv.name, func(t *testing.T) {
				raw := deflate(t, in.data, lv.level)
				got, err := readAll(NewReader(bytes.NewReader(raw)))
				if err != nil {
					t.Fatal(err)
				}
				checkEqual(t, "Read", got, in.data)
				// WriteTo, and input arriving in small pieces.
				var buf bytes.Buffer
				if _, err := io.Copy(&buf, NewReader(iotest.HalfReader(bytes.NewReader(raw)))); err != nil {
					t.Fatal(err)
				}
				checkEqual(t, "WriteTo", buf.Bytes(), in.data)
				// Trailing data after the final block is ignored.
				got, err = readAll(NewReader(bytes.NewReader(append(raw[:len(raw):len(raw)], "trailing junk"...))))
				if err != nil {
					t.Fatal(err)
				}
				checkEqual(t, "trailing", got, in.data)
			})
		}
	}
}

// Streams from another encoder (different block splitting and code choices).
func TestDeflateKlauspostEncoder(t *testing.T) {
	for _, in := range testInputs(t) {
		levels := []int{kflate.NoCompression, kflate.BestSpeed, 2, 3, 4, 5, 6, 7, 9, kflate.HuffmanOnly, kflate.ConstantCompression}
		if raceEnabled {
			levels = []int{kflate.NoCompression, kflate.BestSpeed, 5, 9, kflate.HuffmanOnly, kflate.ConstantCompression}
		}
		for _, level := range levels {
			var buf bytes.Buffer
			w, err := kflate.NewWriter(&buf, level)
			if err != nil {
				t.Fatal(err)
			}
			w.Write(in.data)
			w.Close()
			got, err := readAll(NewReader(bytes.NewReader(buf.Bytes())))
			if err != nil {
				t.Fatalf("%s level %d: %v", in.name, level, err)
			}
			checkEqual(t, fmt.Sprintf("%s level %d", in.name, level), got, in.data)
		}
	}
}

func TestOneByteReader(t *testing.T) {
	data := goSrcTar(t)[:200<<10]
	for _, lv := range levels {
		raw := deflate(t, data, lv.level)
		got, err := readAll(NewReader(iotest.OneByteReader(bytes.NewReader(raw))))
		if err != nil {
			t.Fatal(lv.name, err)
		}
		checkEqual(t, lv.name, got, data)
		gz := gzipBytes(t, data, lv.level)
		zr, err := NewGzipReader(iotest.OneByteReader(bytes.NewReader(gz)), 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err = readAll(iotest.OneByteReader(zr))
		if err != nil {
			t.Fatal(lv.name, err)
		}
		checkEqual(t, lv.name+" gzip", got, data)
	}
}

func TestEmptyDeflate(t *testing.T) {
	// Final empty fixed block; final empty stored block.
	for _, raw := range [][]byte{{0x03, 0x00}, {0x01, 0x00, 0x00, 0xff, 0xff}} {
		got, err := readAll(NewReader(bytes.NewReader(raw)))
		if err != nil || len(got) != 0 {
			t.Fatalf("%x: %q, %v", raw, got, err)
		}
	}
}

// Hand-made fixed-code streams: longest distance, length 258 both ways, overlapping copies
// of every short distance, stored blocks between.
func TestHandMadeBlocks(t *testing.T) {
	rnd := rand.New(rand.NewPCG(3, 4))
	var w bitWriter
	var want []byte
	lit := func(b byte) { w.fixedLit(int(b)); want = append(want, b) }
	match := func(length, dist int) {
		w.fixedMatch(length, dist)
		for i := 0; i < length; i++ {
			want = append(want, want[len(want)-dist])
		}
	}
	w.bits(0, 1) // not final
	w.bits(1, 2) // fixed
	for i := 0; i < 40000; i++ {
		lit(byte(rnd.Uint32()))
	}
	match(258, 32768)
	match(3, 32768)
	for dist := 1; dist <= 20; dist++ {
		for _, length := range []int{3, 4, 7, 8, 9, 15, 16, 17, 100, 257, 258} {
			match(length, dist)
			lit(byte(dist))
		}
	}
	w.fixedLit(256)
	// Stored block (non-final), then a final fixed block with 284+31 = length 258.
	w.bits(0, 1)
	w.bits(0, 2)
	w.align()
	stored := []byte("stored block contents")
	w.bits(uint64(len(stored)), 16)
	w.bits(uint64(^uint16(len(stored))), 16)
	for _, b := range stored {
		w.bits(uint64(b), 8)
	}
	want = append(want, stored...)
	w.bits(1, 1)
	w.bits(1, 2)
	w.fixedLit(284)
	w.bits(31, 5)
	w.code(0, 5) // distance 1
	for i := 0; i < 258; i++ {
		want = append(want, want[len(want)-1])
	}
	w.fixedLit(256)
	raw := w.bytes()

	got, err := readAll(NewReader(bytes.NewReader(raw)))
	if err != nil {
		t.Fatal(err)
	}
	checkEqual(t, "ours", got, want)
	std, err := stdInflate(raw)
	if err != nil {
		t.Fatal(err)
	}
	checkEqual(t, "compress/flate", std, want)
}

func TestGzipAgreement(t *testing.T) {
	for _, in := range testInputs(t) {
		for _, lv := range levels {
			gz := gzipBytes(t, in.data, lv.level)
			zr, err := NewGzipReader(bytes.NewReader(gz), 0, nil)
			if err != nil {
				t.Fatal(in.name, lv.name, err)
			}
			got, err := readAll(zr)
			if err != nil {
				t.Fatal(in.name, lv.name, err)
			}
			checkEqual(t, in.name+"/"+lv.name, got, in.data)
		}
	}
}

func TestGzipHeaders(t *testing.T) {
	data := []byte("some data, some data, some data")
	raw := deflate(t, data, 6)
	for flg := byte(0); flg < 32; flg++ {
		hdr := gzipHeader(flg, []byte("extra\x00field"), "name.txt", "a comment")
		gz := gzipMember(hdr, raw, data)
		gz = append(gz, gzipMember(gzipHeader(flg^0x1f, nil, "", "é"), raw, data)...)
		zr, err := NewGzipReader(bytes.NewReader(gz), 0, nil)
		if err != nil {
			t.Fatalf("flags %#x: %v", flg, err)
		}
		got, err := readAll(zr)
		if err != nil {
			t.Fatalf("flags %#x: %v", flg, err)
		}
		std, err := stdGunzip(gz)
		if err != nil {
			t.Fatalf("flags %#x: compress/gzip: %v", flg, err)
		}
		checkEqual(t, "vs compress/gzip", got, std)
		checkEqual(t, "data", got, append(data[:len(data):len(data)], data...))
	}
	// A long name (which compress/gzip refuses) and a 64 KiB extra field.
	hdr := gzipHeader(flagName|flagExtra|flagHdrCRC, make([]byte, 65535), string(bytes.Repeat([]byte("n"), 5000)), "")
	zr, err := NewGzipReader(bytes.NewReader(gzipMember(hdr, raw, data)), 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := readAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	checkEqual(t, "long header", got, data)
}

func TestMultiMember(t *testing.T) {
	rnd := rand.New(rand.NewPCG(5, 6))
	src := goSrcTar(t)
	var gz, want []byte
	for i := 0; i < 50; i++ {
		var n int
		switch i % 5 {
		case 0:
			n = 0
		case 1:
			n = rnd.IntN(100)
		default:
			n = rnd.IntN(200 << 10)
		}
		off := rnd.IntN(len(src) - n)
		chunk := src[off : off+n]
		want = append(want, chunk...)
		gz = append(gz, gzipBytes(t, chunk, levels[i%len(levels)].level)...)
	}
	zr, err := NewGzipReader(bytes.NewReader(gz), 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := readAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	checkEqual(t, "multi-member", got, want)

	// compress/gzip's own multi-member output.
	var buf bytes.Buffer
	for i := 0; i < 3; i++ {
		w := gzip.NewWriter(&buf)
		w.Name = fmt.Sprint("member", i)
		w.Write(src[:1000*i])
		w.Close()
	}
	zr, err = NewGzipReader(bytes.NewReader(buf.Bytes()), 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err = readAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	std, _ := stdGunzip(buf.Bytes())
	checkEqual(t, "members", got, std)
}

func TestEmptyInput(t *testing.T) {
	_, err := NewGzipReader(bytes.NewReader(nil), 0, nil)
	var e *Error
	if !errors.As(err, &e) || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("empty input: %v", err)
	}
	_, err = readAll(NewReader(bytes.NewReader(nil)))
	if !errors.As(err, &e) || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("empty raw input: %v", err)
	}
}

type errReader struct {
	r   io.Reader
	n   int
	err error
}

func (r *errReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, r.err
	}
	if len(p) > r.n {
		p = p[:r.n]
	}
	n, err := r.r.Read(p)
	r.n -= n
	return n, err
}

func TestReadErrorPropagates(t *testing.T) {
	gz := gzipBytes(t, goSrcTar(t)[:500<<10], 6)
	boom := errors.New("boom")
	zr, err := NewGzipReader(&errReader{bytes.NewReader(gz), len(gz) / 2, boom}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = readAll(zr)
	var e *Error
	if !errors.Is(err, boom) || !errors.As(err, &e) {
		t.Fatalf("got %v, want boom wrapped in *Error", err)
	}
}
