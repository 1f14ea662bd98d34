package inflate

import (
	"archive/tar"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"hash/crc32"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
)

// tarRoot is a directory tree to put in a test tar, up to a number of bytes of tar.
type tarRoot struct {
	path  string
	bytes int
}

// buildTar makes a tar of the files under the roots (in lexical order, skipping what cannot
// be read).
func buildTar(tb testing.TB, roots ...tarRoot) []byte {
	tb.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	limit := 0
	for _, root := range roots {
		limit += root.bytes
		filepath.WalkDir(root.path, func(path string, de fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			if buf.Len() >= limit {
				return filepath.SkipAll
			}
			info, err := de.Info()
			if err != nil {
				return nil
			}
			if !de.IsDir() && !info.Mode().IsRegular() {
				return nil
			}
			if info.Mode().IsRegular() && info.Size() > int64(root.bytes) {
				return nil
			}
			var data []byte
			if info.Mode().IsRegular() {
				if data, err = os.ReadFile(path); err != nil {
					return nil
				}
			}
			hdr, err := tar.FileInfoHeader(info, "")
			if err != nil {
				return nil
			}
			hdr.Name = strings.TrimPrefix(path, "/")
			hdr.Size = int64(len(data))
			if tw.WriteHeader(hdr) != nil {
				return filepath.SkipAll
			}
			tw.Write(data)
			return nil
		})
	}
	tw.Close()
	if buf.Len() == 0 {
		tb.Fatal("no files for the tar")
	}
	return buf.Bytes()
}

var (
	goTarOnce sync.Once
	goTar     []byte
)

// goSrcTar is a tar of about 4.5 MB of Go source and a Go binary (1 MiB under the race
// detector).
func goSrcTar(tb testing.TB) []byte {
	goTarOnce.Do(func() {
		goroot := runtime.GOROOT()
		scale := 1
		if raceEnabled {
			scale = 3
		}
		goTar = buildTar(tb, tarRoot{filepath.Join(goroot, "src", "compress"), 1 << 20 / scale},
			tarRoot{filepath.Join(goroot, "src", "net"), 1 << 20 / scale},
			tarRoot{filepath.Join(goroot, "pkg", "tool", runtime.GOOS+"_"+runtime.GOARCH, "preprofile"), 3 << 20})
		if raceEnabled && len(goTar) > 1<<20 {
			goTar = goTar[:1<<20] // a cut tar is still realistic data
		}
	})
	return goTar
}

type input struct {
	name string
	data []byte
}

var (
	inputsOnce sync.Once
	inputs     []input
)

// testInputs are uncompressed inputs of various kinds.
func testInputs(tb testing.TB) []input {
	inputsOnce.Do(func() { inputs = makeInputs(tb) })
	return inputs
}

func makeInputs(tb testing.TB) []input {
	rnd := rand.New(rand.NewPCG(1, 2))
	random := make([]byte, 300<<10)
	for i := range random {
		random[i] = byte(rnd.Uint32())
	}
	// Text-like: words from a small vocabulary, so there are many matches at all distances.
	words := strings.Fields("the quick brown fox jumps over lazy dog layer image container gzip deflate window checkpoint offset block huffman literal distance")
	var text bytes.Buffer
	for text.Len() < 400<<10 {
		text.WriteString(words[rnd.IntN(len(words))])
		if rnd.IntN(10) == 0 {
			text.WriteByte('\n')
		} else {
			text.WriteByte(' ')
		}
	}
	// Short periods (overlapping copies with distances 1-7) and long runs.
	var periodic bytes.Buffer
	for p := 1; p <= 9; p++ {
		pat := make([]byte, p)
		for i := range pat {
			pat[i] = byte(rnd.Uint32())
		}
		for i := 0; i < 3000+p*17; i++ {
			periodic.Write(pat)
		}
		periodic.Write(random[:100*p])
	}
	// Low-entropy bytes: many literals with skewed frequencies (long codes).
	skewed := make([]byte, 200<<10)
	for i := range skewed {
		v := rnd.ExpFloat64() * 3
		skewed[i] = byte(min(255, int(v)))
	}
	return []input{
		{"empty", nil},
		{"one", []byte{'x'}},
		{"short", []byte("hello, hello, hello world\n")},
		{"zeros", make([]byte, 1<<20)},
		{"random", random},
		{"text", text.Bytes()},
		{"periodic", periodic.Bytes()},
		{"skewed", skewed},
		{"gosrc", goSrcTar(tb)},
	}
}

var levels = []struct {
	name  string
	level int
}{
	{"stored", flate.NoCompression},
	{"speed", flate.BestSpeed},
	{"default", flate.DefaultCompression},
	{"l6", 6},
	{"best", flate.BestCompression},
	{"huffonly", flate.HuffmanOnly},
}

// compressed caches compressed test inputs, by kind, level and data.
var compressed sync.Map

type compressKey struct {
	gzip  bool
	level int
	ptr   *byte
	len   int
}

func cached(gz bool, data []byte, level int, f func() []byte) []byte {
	if len(data) < 100<<10 {
		return f()
	}
	k := compressKey{gz, level, &data[0], len(data)}
	if v, ok := compressed.Load(k); ok {
		return v.([]byte)
	}
	v := f()
	compressed.Store(k, v)
	return v
}

func deflate(tb testing.TB, data []byte, level int) []byte {
	tb.Helper()
	return cached(false, data, level, func() []byte { return deflateNoCache(tb, data, level) })
}

func deflateNoCache(tb testing.TB, data []byte, level int) []byte {
	var buf bytes.Buffer
	w, err := flate.NewWriter(&buf, level)
	if err != nil {
		tb.Fatal(err)
	}
	w.Write(data)
	w.Close()
	return buf.Bytes()
}

func gzipBytes(tb testing.TB, data []byte, level int) []byte {
	tb.Helper()
	return cached(true, data, level, func() []byte { return gzipNoCache(tb, data, level) })
}

func gzipNoCache(tb testing.TB, data []byte, level int) []byte {
	var buf bytes.Buffer
	w, err := gzip.NewWriterLevel(&buf, level)
	if err != nil {
		tb.Fatal(err)
	}
	w.Write(data)
	w.Close()
	return buf.Bytes()
}

// gzipHeader makes a gzip header with the given flags and fields.
func gzipHeader(flg byte, extra []byte, name, comment string) []byte {
	h := []byte{0x1f, 0x8b, 8, flg, 1, 2, 3, 4, 0, 3}
	if flg&flagExtra != 0 {
		h = append(h, byte(len(extra)), byte(len(extra)>>8))
		h = append(h, extra...)
	}
	if flg&flagName != 0 {
		h = append(h, name...)
		h = append(h, 0)
	}
	if flg&flagComment != 0 {
		h = append(h, comment...)
		h = append(h, 0)
	}
	if flg&flagHdrCRC != 0 {
		c := crc32.ChecksumIEEE(h)
		h = append(h, byte(c), byte(c>>8))
	}
	return h
}

// gzipMember makes a gzip member with a custom header around raw DEFLATE data.
func gzipMember(hdr, raw, data []byte) []byte {
	m := append([]byte(nil), hdr...)
	m = append(m, raw...)
	c := crc32.ChecksumIEEE(data)
	n := uint32(len(data))
	return append(m, byte(c), byte(c>>8), byte(c>>16), byte(c>>24), byte(n), byte(n>>8), byte(n>>16), byte(n>>24))
}

// readAllOurs decodes gzip data with our reader, using various read patterns.
func readAll(r io.Reader) ([]byte, error) {
	var out bytes.Buffer
	_, err := io.Copy(&out, struct{ io.Reader }{r}) // plain Read, not WriteTo
	return out.Bytes(), err
}

func stdGunzip(data []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	return io.ReadAll(zr)
}

func stdInflate(data []byte) ([]byte, error) {
	return io.ReadAll(flate.NewReader(bytes.NewReader(data)))
}

func checkEqual(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if bytes.Equal(got, want) {
		return
	}
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	t.Fatalf("%s: output differs at byte %d (got %d bytes, want %d)", what, i, len(got), len(want))
}

// bitWriter writes DEFLATE bit fields for hand-made streams.
type bitWriter struct {
	buf   []byte
	acc   uint64
	nbits uint
}

func (w *bitWriter) bits(v uint64, n uint) {
	w.acc |= v << w.nbits
	w.nbits += n
	for w.nbits >= 8 {
		w.buf = append(w.buf, byte(w.acc))
		w.acc >>= 8
		w.nbits -= 8
	}
}

// code writes a Huffman code of n bits, most significant bit first.
func (w *bitWriter) code(c uint64, n uint) {
	for i := int(n) - 1; i >= 0; i-- {
		w.bits(c>>uint(i)&1, 1)
	}
}

func (w *bitWriter) align() {
	if w.nbits > 0 {
		w.bits(0, 8-w.nbits)
	}
}

func (w *bitWriter) bytes() []byte {
	w.align()
	return w.buf
}

// fixedLitCode writes literal/length symbol s with the fixed code.
func (w *bitWriter) fixedLit(s int) {
	switch {
	case s < 144:
		w.code(uint64(0x30+s), 8)
	case s < 256:
		w.code(uint64(0x190+s-144), 9)
	case s < 280:
		w.code(uint64(s-256), 7)
	default:
		w.code(uint64(0xc0+s-280), 8)
	}
}

// fixedMatch writes a length/distance pair with the fixed codes.
func (w *bitWriter) fixedMatch(length, dist int) {
	for s := 285; s >= 257; s-- {
		p := litPayload[s]
		base, extra := int(p>>16), uint(p>>4&15)
		if length >= base && length-base < 1<<extra && !(s == 284 && length == 258) {
			w.fixedLit(s)
			w.bits(uint64(length-base), extra)
			break
		}
	}
	for c := 29; c >= 0; c-- {
		p := distPayload[c]
		base, extra := int(p>>16), uint(p>>4&15)
		if dist >= base {
			w.code(uint64(c), 5)
			w.bits(uint64(dist-base), extra)
			break
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	var k []string
	for s := range m {
		k = append(k, s)
	}
	sort.Strings(k)
	return k
}
