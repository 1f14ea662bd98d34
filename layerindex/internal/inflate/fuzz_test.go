package inflate

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// maxFuzzOutput bounds the output compared for one fuzz input (DEFLATE expands up to
// 1032:1); both decoders are cut off at the same point past it.
const maxFuzzOutput = 16 << 20

// compareInflate decodes raw DEFLATE data with ours and compress/flate and fails the test
// unless both fail, or both succeed with the same output.
func compareInflate(t testing.TB, raw []byte) {
	zr := NewReader(bytes.NewReader(raw))
	ours, oerr := io.ReadAll(io.LimitReader(zr, maxFuzzOutput))
	defer zr.(io.Closer).Close()
	std, serr := io.ReadAll(io.LimitReader(stdFlateReader(raw), maxFuzzOutput))
	if (oerr == nil) != (serr == nil) {
		t.Fatalf("ours: %v; compress/flate: %v (input %x)", oerr, serr, raw)
	}
	if oerr != nil {
		checkErr(t, oerr)
		return
	}
	if !bytes.Equal(ours, std) {
		t.Fatalf("outputs differ: %d vs %d bytes (input %x)", len(ours), len(std), raw)
	}
}

// compareGunzip is compareInflate for gzip streams, against compress/gzip (multistream).
func compareGunzip(t testing.TB, gz []byte) {
	var ours []byte
	zr, oerr := NewGzipReader(bytes.NewReader(gz), 1+int64(len(gz)%3)*5000, func(Checkpoint) {})
	if oerr == nil {
		ours, oerr = io.ReadAll(io.LimitReader(zr, maxFuzzOutput))
		defer zr.Close()
	}
	var std []byte
	sr, serr := gzip.NewReader(bytes.NewReader(gz))
	if serr == nil {
		std, serr = io.ReadAll(io.LimitReader(sr, maxFuzzOutput))
	}
	if (oerr == nil) != (serr == nil) {
		// Known, deliberate differences: RFC 1952 requires an error for reserved flag bits,
		// which compress/gzip ignores; compress/gzip refuses names and comments of 512 bytes
		// or more, which RFC 1952 allows.
		var e *Error
		if oerr != nil && errors.As(oerr, &e) && e.Msg == errReservedFlags {
			return
		}
		if serr == gzip.ErrHeader && zr != nil && zr.d.longName {
			return
		}
		t.Fatalf("ours: %v; compress/gzip: %v (input %x)", oerr, serr, gz)
	}
	if oerr != nil {
		checkErr(t, oerr)
		return
	}
	if !bytes.Equal(ours, std) {
		t.Fatalf("outputs differ: %d vs %d bytes (input %x)", len(ours), len(std), gz)
	}
}

func stdFlateReader(raw []byte) io.Reader {
	return flate.NewReader(bytes.NewReader(raw))
}

// checkErr checks that a decoding error is an *Error naming a place.
func checkErr(t testing.TB, err error) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not an *Error", err, err)
	}
	if err == io.EOF || errors.Is(err, io.EOF) {
		t.Fatalf("error %v is io.EOF", err)
	}
}

// resumeCheck compresses data at a level (into several members if cuts is not empty, with
// sync flushes every flushEvery bytes to make blocks), indexes it with span and resumes from
// every checkpoint.
func resumeCheck(t testing.TB, data []byte, level int, span int64, flushEvery int, cuts []int) {
	var gz bytes.Buffer
	var members []member
	start := 0
	for _, end := range append(cuts, len(data)) {
		end = max(start, min(end, len(data)))
		members = append(members, member{int64(gz.Len()), int64(start)})
		w := gzipWriter(t, &gz, level)
		for p := start; p < end; p += flushEvery {
			w.Write(data[p:min(end, p+flushEvery)])
			w.Flush()
		}
		w.Close()
		gzipWriters[level+2].Put(w)
		start = end
	}
	cps := index(t, gz.Bytes(), data, span)
	checkCheckpoints(t, cps, gz.Bytes(), data, span, members)
	resumeAll(t, cps, gz.Bytes(), data)
}

// gzipWriters recycles compressors (which are large) by level+2.
var gzipWriters [12]sync.Pool

func gzipWriter(t testing.TB, w io.Writer, level int) *gzip.Writer {
	if zw, ok := gzipWriters[level+2].Get().(*gzip.Writer); ok {
		zw.Reset(w)
		return zw
	}
	zw, err := gzip.NewWriterLevel(w, level)
	if err != nil {
		t.Fatal(err)
	}
	return zw
}

func FuzzInflate(f *testing.F) {
	for _, s := range inflateSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		compareInflate(t, raw)
	})
}

func FuzzGzip(f *testing.F) {
	for _, s := range gzipSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, gz []byte) {
		compareGunzip(t, gz)
	})
}

func FuzzResume(f *testing.F) {
	f.Add(uint8(6), uint16(1000), uint16(300), []byte("hello hello hello hello, world"))
	f.Add(uint8(0), uint16(10), uint16(7), bytes.Repeat([]byte("abcdefgh"), 500))
	f.Add(uint8(1), uint16(4000), uint16(2000), bytes.Repeat([]byte{0}, 20000))
	f.Fuzz(func(t *testing.T, level uint8, span, flush uint16, data []byte) {
		if len(data) > 1<<20 {
			return
		}
		lv := int(level%12) - 2 // HuffmanOnly, Default, 0..9
		var cuts []int
		if level >= 128 && len(data) > 0 {
			cuts = []int{len(data) / 3, len(data) / 3, len(data) / 2}
		}
		// At most about 32 checkpoints, each resumed to the end.
		resumeCheck(t, data, lv, max(1+int64(span), int64(len(data)/32)), 1+int(flush), cuts)
	})
}

// Seeds written to testdata/fuzz by TestWriteSeedCorpus, and added with f.Add.

func inflateSeeds(tb testing.TB) [][]byte {
	var seeds [][]byte
	text := []byte("inflate seeds: the quick brown fox jumps over the lazy dog, the lazy dog, the lazy dog")
	for _, lv := range levels {
		seeds = append(seeds, deflate(tb, text, lv.level))
	}
	seeds = append(seeds, deflate(tb, bytes.Repeat([]byte{0}, 3000), 9))
	seeds = append(seeds,
		[]byte{0x03, 0x00},                   // empty final fixed block
		[]byte{0x01, 0x00, 0x00, 0xff, 0xff}, // empty final stored block
		[]byte{0x01, 0x01, 0x00, 0xfe, 0xff, 'x'},
		[]byte{0x07},       // block type 3
		[]byte{0x05, 0xe0}, // dynamic header, truncated
	)
	var w bitWriter // distance too far back
	w.bits(1, 1)
	w.bits(1, 2)
	w.fixedLit('a')
	w.fixedMatch(3, 2)
	w.fixedLit(256)
	seeds = append(seeds, w.bytes())
	seeds = append(seeds, dynamicBlock(fill(286, 8), []uint8{1}), dynamicBlock(fill(257, 9), []uint8{1}),
		dynamicBlock(append(fill(256, 8), 8), []uint8{1}))
	return seeds
}

func gzipSeeds(tb testing.TB) [][]byte {
	data := []byte("gzip seed data, gzip seed data")
	raw := deflate(tb, data, 6)
	seeds := [][]byte{
		gzipBytes(tb, data, 6),
		gzipBytes(tb, nil, 6),
		append(gzipBytes(tb, data, 1), gzipBytes(tb, data, 0)...),
		gzipMember(gzipHeader(flagExtra|flagName|flagComment|flagHdrCRC, []byte("xx"), "n", "c"), raw, data),
		gzipMember(gzipHeader(0x20, nil, "", ""), raw, data),
		append(gzipBytes(tb, data, 9), 0, 0, 0),
	}
	bad := gzipBytes(tb, data, 6)
	bad[len(bad)-5] ^= 1
	return append(seeds, bad)
}

// fill makes n code lengths of l.
func fill(n int, l uint8) []uint8 {
	s := make([]uint8, n)
	for i := range s {
		s[i] = l
	}
	return s
}

// dynamicBlock makes a final dynamic block header with the given code lengths (written with a
// code-length code that gives symbols 0-15 four bits each), followed by a few fixed-looking
// bits, for testing header checks.
func dynamicBlock(litLens, distLens []uint8) []byte {
	var w bitWriter
	w.bits(1, 1)
	w.bits(2, 2)
	w.bits(uint64(len(litLens)-257), 5)
	w.bits(uint64(len(distLens)-1), 5)
	w.bits(19-4, 4)
	for _, s := range clOrder {
		if s < 16 {
			w.bits(4, 3)
		} else {
			w.bits(0, 3)
		}
	}
	for _, l := range append(litLens, distLens...) {
		w.code(uint64(l), 4)
	}
	w.bits(0, 16)
	return w.bytes()
}

// TestSeedCorpus checks that the hand-made seeds are committed under testdata/fuzz (the
// fuzz targets start from them), and writes them anew when INFLATE_WRITE_SEEDS=1.
func TestSeedCorpus(t *testing.T) {
	if os.Getenv("INFLATE_WRITE_SEEDS") != "1" {
		for _, name := range []string{"FuzzInflate", "FuzzGzip", "FuzzResume"} {
			seeds, _ := filepath.Glob(filepath.Join("testdata", "fuzz", name, "seed-*"))
			if len(seeds) < 3 {
				t.Errorf("%s: %d seeds in testdata/fuzz; write them with INFLATE_WRITE_SEEDS=1 go test -run TestSeedCorpus", name, len(seeds))
			}
		}
		return
	}
	write := func(name string, i int, vals ...any) {
		dir := filepath.Join("testdata", "fuzz", name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		b.WriteString("go test fuzz v1\n")
		for _, v := range vals {
			switch v := v.(type) {
			case []byte:
				fmt.Fprintf(&b, "[]byte(%q)\n", v)
			default:
				fmt.Fprintf(&b, "%T(%v)\n", v, v)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i, s := range inflateSeeds(t) {
		write("FuzzInflate", i, s)
	}
	for i, s := range gzipSeeds(t) {
		write("FuzzGzip", i, s)
	}
	src := goSrcTar(t)
	write("FuzzResume", 0, uint8(6), uint16(2000), uint16(700), src[:20000])
	write("FuzzResume", 1, uint8(128+9), uint16(500), uint16(3000), src[50000:60000])
	write("FuzzResume", 2, uint8(2), uint16(100), uint16(50), bytes.Repeat([]byte("0123456789"), 1000))
}
