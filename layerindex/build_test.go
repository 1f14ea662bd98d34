package layerindex

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
)

// variant is one encoding of a layer: the blob as stored and what it must decode to.
type variant struct {
	name string
	blob []byte
	tar  []byte
	comp Compression
}

func variants(t *testing.T) []variant {
	data := goTar(t)
	return []variant{
		{"plain", data, data, Uncompressed},
		{"gzip-1", gzipLevel(t, data, 1), data, Gzip},
		{"gzip-6", gzipLevel(t, data, 6), data, Gzip},
		{"gzip-9", gzipLevel(t, data, 9), data, Gzip},
		{"gzip-multi", multiMember(t, data, 7), data, Gzip},
		{"pigz", pigz(t, data), data, Gzip},
		{"zstd-single", zstdCLI(t, data), data, Zstd},
		{"zstd-multi", zstdFrames(t, data, 300<<10), data, Zstd},
	}
}

const testSpan = 256 << 10

func build(t testing.TB, blob []byte, span int64) *Index {
	t.Helper()
	ix, err := Build(bytes.NewReader(blob), BuildOptions{Digest: digest.FromBytes(blob), SpanSize: span})
	if err != nil {
		t.Fatal(err)
	}
	return ix
}

// TestTOCMatchesArchiveTar checks every field of every entry against archive/tar's view of
// the same tar, and that each entry's data sits at its Offset.
func TestTOCMatchesArchiveTar(t *testing.T) {
	tars := map[string][]byte{
		"archive-tar": goTar(t),
		"gnu-tar-gnu": gnuTar(t, "gnu"),
		"gnu-tar-pax": gnuTar(t, "posix"),
	}
	for name, data := range tars {
		t.Run(name, func(t *testing.T) {
			want := readTar(t, data)
			ix := build(t, gzipLevel(t, data, 6), testSpan)
			if ix.TOC.Len() != len(want) {
				t.Fatalf("%d entries, archive/tar reads %d", ix.TOC.Len(), len(want))
			}
			r, err := NewReader(bytes.NewReader(gzipLevel(t, data, 6)), ix, NewCache(0))
			if err != nil {
				t.Fatal(err)
			}
			kinds := map[byte]int{}
			for i, e := range ix.TOC.All() {
				h := want[i].hdr
				kinds[e.Type]++
				checkEntry(t, &e, h)
				body := make([]byte, len(want[i].data))
				if _, err := r.ReadAt(body, e.Offset); err != nil && !(err == io.EOF && len(body) == 0) {
					t.Fatalf("%s: read at %d: %v", e.Name, e.Offset, err)
				}
				if !bytes.Equal(body, want[i].data) {
					t.Errorf("%s: data at offset %d differs from archive/tar's", e.Name, e.Offset)
				}
			}
			for _, k := range []byte{tar.TypeReg, tar.TypeDir, tar.TypeSymlink, tar.TypeLink, tar.TypeChar, tar.TypeBlock, tar.TypeFifo} {
				if kinds[k] == 0 {
					t.Errorf("fixture has no entry of type %q", k)
				}
			}
		})
	}
}

func checkEntry(t *testing.T, e *Entry, h *tar.Header) {
	t.Helper()
	got := fmt.Sprintf("%q %q %c %o %d/%d %q/%q %s %d %d,%d", e.Name, e.Linkname, e.Type, e.Mode,
		e.UID, e.GID, e.Uname, e.Gname, e.ModTime.UTC().Format("2006-01-02T15:04:05.999999999"), e.Size, e.Devmajor, e.Devminor)
	want := fmt.Sprintf("%q %q %c %o %d/%d %q/%q %s %d %d,%d", h.Name, h.Linkname, h.Typeflag, h.Mode,
		h.Uid, h.Gid, h.Uname, h.Gname, h.ModTime.UTC().Format("2006-01-02T15:04:05.999999999"), h.Size, h.Devmajor, h.Devminor)
	if got != want {
		t.Errorf("entry\n got  %s\n want %s", got, want)
	}
	wantPAX := map[string]string{}
	for k, v := range h.PAXRecords {
		if !mergedPAX[k] {
			wantPAX[k] = v
		}
	}
	gotPAX := map[string]string{}
	for _, r := range e.PAXRecords {
		gotPAX[r.Key] = r.Value
	}
	if fmt.Sprint(gotPAX) != fmt.Sprint(wantPAX) {
		t.Errorf("%s: PAX records %q, want %q", e.Name, gotPAX, wantPAX)
	}
	if fmt.Sprint(e.Xattrs()) != fmt.Sprint(sortedXattrs(h)) {
		t.Errorf("%s: xattrs %q, want %q", e.Name, e.Xattrs(), sortedXattrs(h))
	}
}

func sortedXattrs(h *tar.Header) []Record {
	var out []Record
	for k, v := range h.PAXRecords {
		if name, ok := strings.CutPrefix(k, xattrPrefix); ok {
			out = append(out, Record{name, v})
		}
	}
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j].Key < out[i].Key {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

func TestBuildSizesAndDigests(t *testing.T) {
	for _, v := range variants(t) {
		t.Run(v.name, func(t *testing.T) {
			ix := build(t, v.blob, testSpan)
			if ix.Compression != v.comp {
				t.Errorf("compression %v, want %v", ix.Compression, v.comp)
			}
			if ix.Size != int64(len(v.tar)) || ix.BlobSize != int64(len(v.blob)) {
				t.Errorf("sizes %d/%d, want %d/%d", ix.Size, ix.BlobSize, len(v.tar), len(v.blob))
			}
			if ix.DiffID != digest.FromBytes(v.tar) || ix.BlobDigest != digest.FromBytes(v.blob) {
				t.Errorf("digests %s %s", ix.DiffID, ix.BlobDigest)
			}
			if v.comp != Uncompressed && len(ix.Checkpoints) < 2 && v.name != "zstd-single" {
				t.Errorf("%d checkpoints for %d bytes with span %d", len(ix.Checkpoints), ix.Size, testSpan)
			}
			if ix.Sequential != (v.name == "zstd-single") {
				t.Errorf("Sequential = %v", ix.Sequential)
			}
		})
	}
}

// TestBuildVerified: with Verified, Build takes the caller's word for the blob's digest
// (the store hashes the blob as it writes it) and still computes the diffID; Verified
// without a digest is refused.
func TestBuildVerified(t *testing.T) {
	for _, v := range variants(t) {
		t.Run(v.name, func(t *testing.T) {
			given := digest.FromString("the caller hashed it")
			ix, err := Build(bytes.NewReader(v.blob), BuildOptions{Digest: given, Verified: true, SpanSize: testSpan})
			if err != nil {
				t.Fatal(err)
			}
			if ix.BlobDigest != given || ix.DiffID != digest.FromBytes(v.tar) || ix.BlobSize != int64(len(v.blob)) {
				t.Errorf("digest %s diffID %s size %d", ix.BlobDigest, ix.DiffID, ix.BlobSize)
			}
			if _, err := Build(bytes.NewReader(v.blob), BuildOptions{Digest: given, SpanSize: testSpan}); err == nil || !strings.Contains(err.Error(), "digest mismatch") {
				t.Errorf("without Verified: %v, want a digest mismatch", err)
			}
		})
	}
	if _, err := Build(bytes.NewReader(nil), BuildOptions{Verified: true}); err == nil {
		t.Error("Verified without a Digest was accepted")
	}
}

// TestRandomReads: 1000 random reads per encoding, across span boundaries, with a cache
// small enough to evict, equal the uncompressed bytes.
func TestRandomReads(t *testing.T) {
	for _, v := range variants(t) {
		t.Run(v.name, func(t *testing.T) {
			r := openVariant(t, v, 1<<20)
			rng := rand.New(rand.NewPCG(1, uint64(len(v.blob))))
			size := int64(len(v.tar))
			reads := 1000
			if testing.Short() {
				reads = 200
			}
			for i := 0; i < reads; i++ {
				off := rng.Int64N(size)
				n := rng.IntN(3 * testSpan)
				if i%4 == 0 { // straddle a span boundary
					off = (off/testSpan+1)*testSpan - int64(rng.IntN(100)) - 1
				}
				checkRead(t, r, v.tar, off, n)
			}
			checkRead(t, r, v.tar, size-10, 100) // past the end
			if n, err := r.ReadAt(make([]byte, 1), size); n != 0 || err != io.EOF {
				t.Errorf("read at end: %d, %v", n, err)
			}
		})
	}
}

// openVariant opens a Reader over v's blob with spans of testSpan and a cache of
// cacheSize, closed when the test ends.
func openVariant(t *testing.T, v variant, cacheSize int64) *Reader {
	t.Helper()
	r, err := NewReader(bytes.NewReader(v.blob), build(t, v.blob, testSpan), NewCache(cacheSize))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func checkRead(t *testing.T, r io.ReaderAt, want []byte, off int64, n int) {
	t.Helper()
	off = max(0, min(off, int64(len(want))-1))
	p := make([]byte, n)
	got, err := r.ReadAt(p, off)
	end := min(off+int64(n), int64(len(want)))
	if int64(got) != end-off || (err != nil && !(err == io.EOF && end-off < int64(n))) {
		t.Fatalf("ReadAt(%d bytes at %d) = %d, %v", n, off, got, err)
	}
	if !bytes.Equal(p[:got], want[off:end]) {
		t.Fatalf("ReadAt(%d bytes at %d): wrong bytes", n, off)
	}
}

// TestSequentialAndConcurrentReads: a streaming reader (which triggers read-ahead) and
// several random readers at once on one Reader, under the race detector in `make test`.
func TestSequentialAndConcurrentReads(t *testing.T) {
	for _, v := range variants(t) {
		t.Run(v.name, func(t *testing.T) {
			r := openVariant(t, v, 2<<20)
			var got bytes.Buffer
			if _, err := io.Copy(&got, io.NewSectionReader(r, 0, r.Size())); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Bytes(), v.tar) {
				t.Fatal("sequential read differs")
			}
			var wg sync.WaitGroup
			errs := make(chan error, 4)
			for g := 0; g < 4; g++ {
				wg.Add(1)
				go func(g int) {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(uint64(g), 7))
					off := rng.Int64N(r.Size())
					for i := 0; i < 50; i++ {
						if g%2 == 0 {
							off = rng.Int64N(r.Size())
						}
						p := make([]byte, 64<<10)
						n, err := r.ReadAt(p, off)
						if err != nil && err != io.EOF {
							errs <- err
							return
						}
						if !bytes.Equal(p[:n], v.tar[off:off+int64(n)]) {
							errs <- fmt.Errorf("reader %d: wrong bytes at %d", g, off)
							return
						}
						off = (off + int64(n)) % r.Size()
					}
				}(g)
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
}

// TestBadInput: every kind of damage is an error naming the layer and where, never a panic.
func TestBadInput(t *testing.T) {
	data := goTar(t)
	gz := gzipLevel(t, data, 6)
	flip := func(b []byte, at int) []byte {
		c := bytes.Clone(b)
		c[at] ^= 0x5a
		return c
	}
	badHeader := bytes.Clone(data)
	badHeader[512*2+10] ^= 0xff // inside the name of the third header (./, bin/, bin/sh)
	cases := []struct {
		name, want string
		blob       []byte
	}{
		{"truncated gzip", "byte", gz[:len(gz)/2]},
		{"truncated gzip trailer", "byte", gz[:len(gz)-3]},
		{"gzip bad CRC", "byte", flip(gz, len(gz)-6)},
		{"gzip bad ISIZE", "byte", flip(gz, len(gz)-2)},
		{"gzip corrupt deflate", "offset", flip(gz, len(gz)/3)},
		{"bad tar header checksum", "uncompressed offset 1024", badHeader},
		{"truncated tar", "uncompressed offset", data[:len(data)/2+7]},
		{"truncated zstd", "byte", zstdCLI(t, data)[:20000]},
		{"not a layer", "uncompressed offset 0", []byte(strings.Repeat("definitely not a tar file ", 100))},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := digest.FromBytes(c.blob)
			_, err := Build(bytes.NewReader(c.blob), BuildOptions{Digest: d})
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), d.String()) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q should name %s and %q", err, d, c.want)
			}
		})
	}
	t.Run("digest mismatch", func(t *testing.T) {
		d := digest.FromString("something else")
		_, err := Build(bytes.NewReader(gz), BuildOptions{Digest: d})
		if err == nil || !strings.Contains(err.Error(), d.String()) || !strings.Contains(err.Error(), "digest mismatch") {
			t.Errorf("error %v", err)
		}
	})
	for _, format := range []string{"gnu", "posix"} {
		t.Run("sparse file refused/"+format, func(t *testing.T) {
			needTool(t, "tar", "tar")
			dir := t.TempDir()
			f, err := os.Create(dir + "/holes")
			if err != nil {
				t.Fatal(err)
			}
			f.WriteAt([]byte("end"), 8<<20)
			f.Close()
			blob := run(t, nil, "tar", "--format="+format, "--sparse", "-cf", "-", "-C", dir, "holes")
			_, err = Build(bytes.NewReader(blob), BuildOptions{})
			if !errors.Is(err, ErrSparse) || !strings.Contains(err.Error(), "holes") {
				t.Errorf("error %v, want ErrSparse naming the file", err)
			}
		})
	}
}

// TestCorruptBlobAfterIndexing: a blob damaged after it was indexed makes reads of the
// damaged spans fail; no read ever returns wrong bytes. A plain layer is read straight
// from its blob, so every read that covers the damaged byte must fail, whatever its
// offset and length.
func TestCorruptBlobAfterIndexing(t *testing.T) {
	data := goTar(t)
	for _, v := range variants(t) {
		t.Run(v.name, func(t *testing.T) {
			ix := build(t, v.blob, testSpan)
			failed, flips := 0, 8
			if testing.Short() {
				flips = 3
			}
			for k := 0; k < flips; k++ {
				bad := bytes.Clone(v.blob)
				at := len(bad) * (2*k + 1) / (2 * flips)
				bad[at] ^= 0x01
				r, err := NewReader(bytes.NewReader(bad), ix, NewCache(1<<20))
				if err != nil {
					t.Fatal(err)
				}
				p := make([]byte, 64<<10)
				for off := int64(0); off < r.Size(); off += int64(len(p)) {
					n, err := r.ReadAt(p, off)
					if err != nil && err != io.EOF {
						failed++
						if !strings.Contains(err.Error(), ix.BlobDigest.String()) {
							t.Errorf("error %q does not name the layer", err)
						}
						continue
					}
					if !bytes.Equal(p[:n], data[off:off+int64(n)]) {
						t.Fatalf("flip at blob byte %d: read at %d returned wrong bytes without error", at, off)
					}
				}
				if v.comp == Uncompressed {
					checkPlainFlip(t, r, data, int64(at))
				}
				r.Close()
			}
			if failed == 0 {
				t.Error("no read failed on a damaged blob")
			}
		})
	}
}

// checkPlainFlip reads a plain layer whose blob byte at is damaged with reads of many
// offsets and lengths: those that cover at fail, and every byte returned is right.
func checkPlainFlip(t *testing.T, r *Reader, data []byte, at int64) {
	t.Helper()
	for _, n := range []int64{1, 100, 511, 4096, 40000, 200000} {
		for _, off := range []int64{at - n, at - n + 1, at - n/2, at, at + 1, at + 3000} {
			if off < 0 || off >= r.Size() {
				continue
			}
			p := make([]byte, n)
			got, err := r.ReadAt(p, off)
			if !bytes.Equal(p[:got], data[off:off+int64(got)]) {
				t.Fatalf("flip at %d: ReadAt(%d bytes at %d) returned wrong bytes", at, n, off)
			}
			covers := off <= at && at < off+n
			if covers && (err == nil || err == io.EOF) {
				t.Fatalf("flip at %d: ReadAt(%d bytes at %d) returned %d bytes and %v, want an error", at, n, off, got, err)
			}
			if covers && off+int64(got) > at {
				t.Fatalf("flip at %d: ReadAt(%d bytes at %d) returned the damaged byte", at, n, off)
			}
			bufs, release, err := r.ReadPinned(p, off)
			if covers && (err == nil || err == io.EOF) {
				t.Fatalf("flip at %d: ReadPinned(%d bytes at %d) succeeded", at, n, off)
			}
			k := off
			for _, b := range bufs {
				if !bytes.Equal(b, data[k:k+int64(len(b))]) {
					t.Fatalf("flip at %d: ReadPinned(%d bytes at %d) returned wrong bytes", at, n, off)
				}
				k += int64(len(b))
			}
			release()
		}
	}
}

func TestEmptyAndTinyLayers(t *testing.T) {
	var buf bytes.Buffer
	tar.NewWriter(&buf).Close() // two zero blocks: the smallest valid layer
	for name, blob := range map[string][]byte{
		"empty tar":      buf.Bytes(),
		"empty tar gzip": gzipLevel(t, buf.Bytes(), 6),
		"empty gzip":     gzipLevel(t, nil, 6),
	} {
		t.Run(name, func(t *testing.T) {
			ix := build(t, blob, testSpan)
			r, err := NewReader(bytes.NewReader(blob), ix, NewCache(0))
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(io.NewSectionReader(r, 0, r.Size()))
			if err != nil || int64(len(got)) != ix.Size {
				t.Fatalf("%d bytes, %v", len(got), err)
			}
		})
	}
}

// TestBuiltIndexRoundTrip: a built index survives MarshalBinary/UnmarshalBinary whole, and a
// Reader over the decoded index reads the layer right.
func TestBuiltIndexRoundTrip(t *testing.T) {
	for _, v := range variants(t) {
		t.Run(v.name, func(t *testing.T) {
			ix := build(t, v.blob, testSpan)
			enc, err := ix.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			var got Index
			if err := got.UnmarshalBinary(enc); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(unpacked(t, &got), ix) {
				t.Fatal("decoded index differs from the built one")
			}
			for i, c := range got.Checkpoints {
				if len(ix.Checkpoints[i].Window) > 0 && c.Window != nil {
					t.Fatalf("checkpoint %d: its window was inflated as the index was read", i)
				}
			}
			r, err := NewReader(bytes.NewReader(v.blob), &got, NewCache(0))
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			checkRead(t, r, v.tar, int64(len(v.tar))/3, 3*testSpan)
			t.Logf("%s: index %d bytes for %d uncompressed (%.2f%%)", v.name, len(enc), ix.Size, 100*float64(len(enc))/float64(ix.Size))
		})
	}
}

// A window that does not inflate as its index says fails the reads of the spans decoded
// from its checkpoint as a corrupt index, and gives no bytes; the other spans read on.
func TestReaderBadWindow(t *testing.T) {
	data := goTar(t)
	blob := gzipLevel(t, data, 6)
	enc, err := build(t, blob, testSpan).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var ix Index
	if err := ix.UnmarshalBinary(enc); err != nil {
		t.Fatal(err)
	}
	k := len(ix.Checkpoints) / 2
	for k < len(ix.Checkpoints) && ix.Checkpoints[k].packed == nil {
		k++
	}
	if k == len(ix.Checkpoints) {
		t.Fatalf("no packed window among %d checkpoints", len(ix.Checkpoints))
	}
	// Well formed, well checksummed, and short of its length by one byte.
	ix.Checkpoints[k].packed = ixfDeflate(make([]byte, ix.Checkpoints[k].packedLen-1))
	if enc, err = ix.MarshalBinary(); err != nil {
		t.Fatal(err)
	}
	var bad Index
	if err := bad.UnmarshalBinary(enc); err != nil {
		t.Fatalf("the index with a bad window does not decode: %v", err)
	}
	r, err := NewReader(bytes.NewReader(blob), &bad, NewCache(0))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	at := bad.Checkpoints[k].Out
	buf := make([]byte, 4096)
	for range 2 {
		n, err := r.ReadAt(buf, at)
		if !errors.Is(err, ErrCorruptIndex) || n != 0 {
			t.Fatalf("read at %d (checkpoint %d's span): %d bytes, %v; want none and ErrCorruptIndex", at, k, n, err)
		}
	}
	checkRead(t, r, data, 0, 4096)
	if k+1 < len(bad.Checkpoints) {
		checkRead(t, r, data, bad.Checkpoints[k+1].Out, 4096)
	}
}

// TestReadPinned: pinned reads equal the uncompressed bytes and stay so while they are
// held, whatever a sequential reader pushes through a cache too small for both meanwhile.
func TestReadPinned(t *testing.T) {
	for _, v := range variants(t) {
		t.Run(v.name, func(t *testing.T) {
			r := openVariant(t, v, 1<<20)
			stop := make(chan struct{})
			done := make(chan struct{})
			go func() { // evicts the pinned spans from the cache, again and again
				defer close(done)
				p := make([]byte, 64<<10)
				for off := int64(0); ; off = (off + int64(len(p))) % r.Size() {
					select {
					case <-stop:
						return
					default:
					}
					r.ReadAt(p, off)
				}
			}()
			defer func() { close(stop); <-done }()
			type pin struct {
				off     int64
				bufs    [][]byte
				release func()
			}
			check := func(p pin) {
				t.Helper()
				got := bytes.Join(p.bufs, nil)
				end := min(p.off+int64(len(got)), int64(len(v.tar)))
				if !bytes.Equal(got, v.tar[p.off:end]) {
					t.Fatalf("pinned read at %d (%d bytes): wrong bytes when released", p.off, len(got))
				}
				p.release()
			}
			rng := rand.New(rand.NewPCG(2, uint64(len(v.blob))))
			var held []pin
			reads := 300
			if testing.Short() {
				reads = 60
			}
			for i := 0; i < reads; i++ {
				off := rng.Int64N(r.Size())
				n := rng.IntN(3 * testSpan)
				bufs, release, err := r.ReadPinned(make([]byte, n), off)
				want := min(int64(n), r.Size()-off)
				if got := len(bytes.Join(bufs, nil)); int64(got) != want || (err != nil && !(err == io.EOF && want < int64(n))) {
					t.Fatalf("ReadPinned(%d bytes at %d) = %d bytes, %v", n, off, got, err)
				}
				held = append(held, pin{off, bufs, release})
				if len(held) > 3 {
					check(held[0])
					held = held[1:]
				}
			}
			for _, p := range held {
				check(p)
			}
			if _, release, err := r.ReadPinned(make([]byte, 10), r.Size()); err != io.EOF {
				t.Errorf("pinned read at the end: %v, want EOF", err)
			} else {
				release()
			}
		})
	}
}
