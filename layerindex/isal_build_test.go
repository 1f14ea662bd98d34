//go:build isal && cgo

package layerindex

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"math/rand"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/imgfs/imgfs/layerindex/internal/inflate"
)

// mixedTar is a tar of about size bytes as layers hold: Go sources (text), random bytes
// (which compressors store), and runs of zeros.
func mixedTar(t testing.TB, size int) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	rng := rand.New(rand.NewSource(int64(size)))
	add := func(name string, data []byte) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data))}); err != nil {
			t.Fatal(err)
		}
		tw.Write(data)
	}
	noise := func(n int) []byte {
		b := make([]byte, n)
		rng.Read(b)
		return b
	}
	add("random-big", noise(size/8))
	add("zeros", make([]byte, size/16))
	err := filepath.WalkDir(filepath.Join(runtime.GOROOT(), "src"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || buf.Len() >= size {
			return filepath.SkipAll
		}
		if d.Type().IsRegular() {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			add(strings.TrimPrefix(path, "/"), b)
			if rng.Intn(50) == 0 {
				add(path+".rnd", noise(rng.Intn(200<<10)))
			}
		}
		return nil
	})
	if err != nil && err != filepath.SkipAll {
		t.Fatal(err)
	}
	tw.Close()
	return buf.Bytes()
}

type gzipCase struct {
	name string
	blob []byte
}

// gzipCases are the layers the two inflaters are compared on: every compressor and level
// layers are written with, members, stored blocks, empty streams.
func gzipCases(t testing.TB) []gzipCase {
	needTool(t, "gzip", "gzip")
	needTool(t, "pigz", "pigz")
	small := goTar(t)
	mixed := mixedTar(t, 12<<20)
	var cs []gzipCase
	for _, d := range []struct {
		name string
		data []byte
	}{{"small", small}, {"mixed", mixed}} {
		for _, l := range []string{"1", "6", "9"} {
			cs = append(cs, gzipCase{d.name + "/gzip-" + l, run(t, d.data, "gzip", "-c", "-"+l)})
			cs = append(cs, gzipCase{d.name + "/pigz-" + l, run(t, d.data, "pigz", "-c", "-p", "2", "-"+l)})
		}
		cs = append(cs, gzipCase{d.name + "/pigz-independent", run(t, d.data, "pigz", "-c", "-i", "-p", "2", "-b", "64")})
		for _, l := range []int{gzip.NoCompression, gzip.HuffmanOnly, gzip.BestSpeed, gzip.BestCompression} {
			cs = append(cs, gzipCase{fmt.Sprintf("%s/go-%d", d.name, l), gzipLevel(t, d.data, l)})
		}
		cs = append(cs, gzipCase{d.name + "/multi-member", multiMember(t, d.data, 7)})
	}
	// Members of every size, empty ones among them, some cut short of a span.
	var mm []byte
	rest := mixed
	for _, n := range []int{0, 100, 300 << 10, 1, 0, 2 << 20, 70 << 10, 5 << 20, len(mixed)} {
		n = min(n, len(rest))
		mm = append(mm, run(t, rest[:n], "gzip", "-c", "-6")...)
		rest = rest[n:]
	}
	cs = append(cs, gzipCase{"odd-members", mm})
	cs = append(cs, gzipCase{"empty-tar", run(t, make([]byte, 1024), "gzip", "-c")})
	cs = append(cs, gzipCase{"empty-stream", run(t, nil, "gzip", "-c")})
	// Larger layers given by path, as the bench's (lxbench mktar, compressed by hand).
	for _, p := range strings.Fields(os.Getenv("IMGFS_ISAL_BLOBS")) {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, gzipCase{filepath.Base(p), b})
	}
	return cs
}

// buildWith builds the index of blob with ISA-L or with our inflater.
func buildWith(t testing.TB, isal bool, blob []byte, span int64) (*Index, error) {
	t.Helper()
	defer func(old bool) { buildISAL = old }(buildISAL)
	buildISAL = isal
	return Build(bytes.NewReader(blob), BuildOptions{SpanSize: span})
}

// blockBoundaries is every place our inflater can resume from: each member start and
// block header, by uncompressed offset (the last one at an offset: a member start is
// followed by its first block header at the same offset, which our inflater never
// prefers).
func blockBoundaries(t testing.TB, blob []byte) map[int64][]inflate.Checkpoint {
	all := map[int64][]inflate.Checkpoint{}
	z, err := inflate.NewGzipReader(bytes.NewReader(blob), 1, func(cp inflate.Checkpoint) {
		all[cp.Out] = append(all[cp.Out], cp)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer z.Close()
	if _, err := io.Copy(io.Discard, z); err != nil {
		t.Fatal(err)
	}
	// span 1 skips a header that produced nothing since the last checkpoint (a member
	// start's first block, an empty stored block): those stay unrecorded, and are not
	// needed, as a checkpoint at the same offset is.
	return all
}

// Built with ISA-L, Build gives the same layer as with our inflater (size, digests, TOC,
// span checksums where the checkpoints agree), and every checkpoint it records is one our
// inflater would record with span 1: a member start or a block boundary, with the same
// bit and window. Checkpoints follow the SpanSize rule and read back right.
func TestISALBuildMatchesInflater(t *testing.T) {
	for _, c := range gzipCases(t) {
		for _, span := range []int64{64 << 10, testSpan, DefaultSpanSize} {
			t.Run(fmt.Sprintf("%s/span=%d", c.name, span), func(t *testing.T) {
				testISALBuild(t, c.blob, span)
			})
		}
	}
}

func testISALBuild(t *testing.T, blob []byte, span int64) {
	ixI, err := buildWith(t, true, blob, span)
	if err != nil {
		t.Fatal(err)
	}
	ixG, err := buildWith(t, false, blob, span)
	if err != nil {
		t.Fatal(err)
	}
	if ixI.Size != ixG.Size || ixI.DiffID != ixG.DiffID || ixI.BlobDigest != ixG.BlobDigest || ixI.BlobSize != ixG.BlobSize ||
		ixI.Compression != Gzip || ixI.SpanSize != ixG.SpanSize {
		t.Fatalf("ISA-L: size %d diffID %s blob %s/%d; ours: %d %s %s/%d", ixI.Size, ixI.DiffID, ixI.BlobDigest, ixI.BlobSize,
			ixG.Size, ixG.DiffID, ixG.BlobDigest, ixG.BlobSize)
	}
	if !reflect.DeepEqual(ixI.TOC.Entries(), ixG.TOC.Entries()) {
		t.Fatal("TOCs differ")
	}
	want, err := io.ReadAll(mustGunzip(t, blob))
	if err != nil {
		t.Fatal(err)
	}
	bounds := blockBoundaries(t, blob)
	same := 0
	for k, cp := range ixI.Checkpoints {
		if k == 0 && (cp.Out != 0 || !cp.Member || cp.In != 0) {
			t.Fatalf("first checkpoint %+v", cp)
		}
		if k > 0 && cp.Out-ixI.Checkpoints[k-1].Out < span {
			t.Fatalf("checkpoint %d at %d, %d after the one before", k, cp.Out, cp.Out-ixI.Checkpoints[k-1].Out)
		}
		found := false
		for _, b := range bounds[cp.Out] {
			if b.In == cp.In && b.Bit == cp.Bit && b.Member == cp.Member && bytes.Equal(b.Window, cp.Window) {
				found = true
			}
		}
		if !found && !cp.Member && len(bounds[cp.Out]) > 0 && bytes.Equal(bounds[cp.Out][0].Window, cp.Window) {
			// A second header at the same offset, after an empty block (pigz ends each
			// piece with an empty stored block): our inflater records the first only.
			// It is one if our inflater, started there, decodes the rest of the stream.
			found = decodesRest(t, blob, ixI, k, want)
		}
		if !found && cp.Member && bytes.HasPrefix(blob[cp.In:], []byte{0x1f, 0x8b}) {
			// A member start right after an empty last block is not recorded either.
			found = decodesRest(t, blob, ixI, k, want)
		}
		if !found {
			var near []string
			for _, b := range bounds[cp.Out] {
				near = append(near, fmt.Sprintf("in %d bit %d member %v window %d (same %v)", b.In, b.Bit, b.Member, len(b.Window), bytes.Equal(b.Window, cp.Window)))
			}
			t.Fatalf("checkpoint %d (in %d bit %d out %d member %v, window %d) is not a boundary of the stream: %s",
				k, cp.In, cp.Bit, cp.Out, cp.Member, len(cp.Window), near)
		}
		// The same place as ours, or a second boundary at the same offset (checked above).
		if k < len(ixG.Checkpoints) && ixG.Checkpoints[k].Out == cp.Out && ixG.Checkpoints[k].In == cp.In {
			same++
		}
	}
	t.Logf("%d checkpoints with ISA-L, %d with ours, %d the same; longest interval %.2f spans (ours %.2f)",
		len(ixI.Checkpoints), len(ixG.Checkpoints), same, longest(ixI), longest(ixG))
	// Every span reads back the tar, decoded by ISA-L and by our inflater.
	for _, isal := range []bool{true, false} {
		checkReadBack(t, blob, ixI, want, isal)
	}
}

// longest is the longest interval between checkpoints, in spans.
func longest(ix *Index) float64 {
	m := int64(0)
	for k, cp := range ix.Checkpoints {
		end := ix.Size
		if k+1 < len(ix.Checkpoints) {
			end = ix.Checkpoints[k+1].Out
		}
		m = max(m, end-cp.Out)
	}
	return float64(m) / float64(ix.SpanSize)
}

// decodesRest says whether our inflater, resumed at cp, decodes the stream after it as
// want, up to the next checkpoint and a little beyond (to the end if there is none).
func decodesRest(t testing.TB, blob []byte, ix *Index, k int, want []byte) bool {
	cp := ix.Checkpoints[k]
	end := int64(len(want))
	if k+1 < len(ix.Checkpoints) {
		end = min(end, ix.Checkpoints[k+1].Out+64<<10)
	}
	z, err := inflate.Resume(bytes.NewReader(blob[cp.In:]), inflate.Checkpoint{In: cp.In, Bit: cp.Bit, Out: cp.Out, Member: cp.Member, Window: cp.Window})
	if err != nil {
		return false
	}
	defer z.Close()
	rest := make([]byte, end-cp.Out)
	_, err = io.ReadFull(z, rest)
	return err == nil && bytes.Equal(rest, want[cp.Out:end])
}

func mustGunzip(t testing.TB, blob []byte) io.Reader {
	z, err := inflate.NewGzipReader(bytes.NewReader(blob), 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	return z
}

// checkReadBack reads every span of ix, and random ranges across the stream, with
// ISA-L decoding the spans or our inflater, against want.
func checkReadBack(t *testing.T, blob []byte, ix *Index, want []byte, isal bool) {
	t.Helper()
	r, err := NewReader(bytes.NewReader(blob), ix, NewCache(4<<20))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for i, s := range r.spans {
		var got []byte
		if isal {
			in, ok := r.isalInput(i)
			if !ok {
				continue
			}
			if got, err = r.decodeISAL(i, in); err != nil {
				t.Fatalf("ISA-L on span %d: %v", i, err)
			}
		} else {
			cp := ix.Checkpoints[s.cp]
			z, err := inflate.Resume(bytes.NewReader(blob[cp.In:]), inflate.Checkpoint{In: cp.In, Bit: cp.Bit, Out: cp.Out, Member: cp.Member, Window: cp.Window})
			if err != nil {
				t.Fatal(err)
			}
			got = make([]byte, s.end-cp.Out)
			_, err = io.ReadFull(z, got)
			z.Close()
			if err != nil {
				t.Fatalf("our inflater on checkpoint %d: %v", s.cp, err)
			}
			got = got[s.start-ix.Checkpoints[s.cp].Out:]
		}
		if !bytes.Equal(got, want[s.start:s.end]) {
			t.Fatalf("span %d (%d-%d) decodes wrong (isal %v)", i, s.start, s.end, isal)
		}
	}
	rng := rand.New(rand.NewSource(1))
	for range 50 {
		if len(want) == 0 {
			break
		}
		off := rng.Int63n(int64(len(want)))
		checkRead(t, r, want, off, rng.Intn(300<<10))
	}
	all, err := io.ReadAll(io.NewSectionReader(r, 0, r.Size()))
	if err != nil || !bytes.Equal(all, want) {
		t.Fatalf("whole stream reads back wrong: %v", err)
	}
}

// TestISALBuildSameWhateverTheReads: an index built with ISA-L does not depend on how the
// blob's reader splits it (a file, a registry's stream, a pipe): the same blob read in
// pieces of random sizes, or a byte at a time, gives the same index file, byte for byte,
// so that stores index a layer alike wherever they read it from.
func TestISALBuildSameWhateverTheReads(t *testing.T) {
	for _, c := range gzipCases(t) {
		t.Run(c.name, func(t *testing.T) {
			want := encode(t, bytes.NewReader(c.blob))
			if got := encode(t, &randomReads{r: bytes.NewReader(c.blob), rnd: rand.New(rand.NewSource(1))}); !bytes.Equal(got, want) {
				t.Error("read in pieces of random sizes: another index")
			}
			if len(c.blob) < 1<<20 {
				if got := encode(t, iotest.OneByteReader(bytes.NewReader(c.blob))); !bytes.Equal(got, want) {
					t.Error("read a byte at a time: another index")
				}
			}
		})
	}
}

// encode builds the index of the blob r reads, with ISA-L, and encodes it.
func encode(t *testing.T, r io.Reader) []byte {
	t.Helper()
	ix, err := Build(r, BuildOptions{SpanSize: testSpan})
	if err != nil {
		t.Fatal(err)
	}
	data, err := ix.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// randomReads returns pieces of r of random sizes, up to 300 KB.
type randomReads struct {
	r   io.Reader
	rnd *rand.Rand
}

func (r *randomReads) Read(p []byte) (int, error) {
	return r.r.Read(p[:min(len(p), 1+r.rnd.Intn(300<<10))])
}

// Bad gzip is refused with ISA-L as with our inflater, and a damaged blob too, wherever it
// is damaged.
func TestISALBuildRefusesAsInflater(t *testing.T) {
	gz := run(t, mixedTar(t, 2<<20), "gzip", "-c", "-6")
	rng := rand.New(rand.NewSource(2))
	check := func(name string, blob []byte) {
		_, errI := buildWith(t, true, blob, 64<<10)
		_, errG := buildWith(t, false, blob, 64<<10)
		if (errI == nil) != (errG == nil) {
			t.Errorf("%s: ISA-L: %v; ours: %v", name, errI, errG)
		}
	}
	for i := range 40 {
		b := bytes.Clone(gz)
		at := rng.Intn(len(b))
		b[at] ^= byte(1 << rng.Intn(8))
		check(fmt.Sprintf("flip %d at %d", i, at), b)
		check(fmt.Sprintf("cut %d at %d", i, at), gz[:at])
	}
	hdr := bytes.Clone(gz)
	hdr[3] |= 0x80
	check("reserved flag", hdr)
	// Headers with every optional field, right and wrong.
	body := gz[10 : len(gz)-8]
	trailer := gz[len(gz)-8:]
	member := func(flags byte, fields []byte, hcrc int) []byte {
		h := append([]byte{0x1f, 0x8b, 8, flags, 0, 0, 0, 0, 0, 3}, fields...)
		if flags&0x02 != 0 {
			c := crc32.ChecksumIEEE(h) + uint32(hcrc)
			h = append(h, byte(c), byte(c>>8))
		}
		return append(append(h, body...), trailer...)
	}
	fields := append(append([]byte{4, 0, 'a', 'b', 'c', 'd'}, "name\x00"...), "comment\x00"...)
	for _, c := range []struct {
		name   string
		blob   []byte
		accept bool
	}{
		{"extra name comment", member(0x1c, fields, 0), true},
		{"header CRC", member(0x1e, fields, 0), true},
		{"bad header CRC", member(0x1e, fields, 1), false},
		{"text flag", member(0x01, nil, 0), true},
		{"reserved flag 0x20", member(0x20, nil, 0), false},
		{"name without end", member(0x08, []byte("name"), 0)[:30], false},
	} {
		_, errI := buildWith(t, true, c.blob, 64<<10)
		_, errG := buildWith(t, false, c.blob, 64<<10)
		if (errI == nil) != c.accept || (errG == nil) != c.accept {
			t.Errorf("%s: ISA-L: %v; ours: %v", c.name, errI, errG)
		}
	}
	check("trailing garbage", append(bytes.Clone(gz), "junk"...))
	check("trailing zeros", append(bytes.Clone(gz), make([]byte, 10)...))
	check("second member cut", append(bytes.Clone(gz), gz[:30]...))
}

// FuzzISALBuild: on any bytes, Build with ISA-L accepts what Build with our inflater
// accepts, and gives the same layer.
func FuzzISALBuild(f *testing.F) {
	// Small seeds, so the fuzzer runs many: a few files, text and random bytes.
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	rng := rand.New(rand.NewSource(3))
	for i, n := range []int{3000, 0, 9000, 500} {
		b := []byte(strings.Repeat(fmt.Sprintf("line %d of a text file\n", i), n/20))
		if i == 2 {
			b = make([]byte, n)
			rng.Read(b)
		}
		tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("f%d", i), Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(b))})
		tw.Write(b)
	}
	tw.Close()
	data := buf.Bytes()
	f.Add(gzipLevel(f, data, 6))
	f.Add(gzipLevel(f, data, gzip.NoCompression))
	f.Add(gzipLevel(f, data, gzip.HuffmanOnly))
	f.Add(append(gzipLevel(f, data[:3000], 1), gzipLevel(f, data[3000:], 9)...))
	f.Fuzz(func(t *testing.T, blob []byte) {
		ixI, errI := buildWith(t, true, blob, 1<<10)
		ixG, errG := buildWith(t, false, blob, 1<<10)
		if (errI == nil) != (errG == nil) {
			t.Fatalf("ISA-L: %v; ours: %v", errI, errG)
		}
		if errI != nil {
			return
		}
		if ixI.Size != ixG.Size || ixI.DiffID != ixG.DiffID || !reflect.DeepEqual(ixI.TOC.Entries(), ixG.TOC.Entries()) {
			t.Fatal("ISA-L and our inflater give different layers")
		}
	})
}
