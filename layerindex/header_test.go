package layerindex

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Long names, each cut differently by the writers: a component too long for the ustar
// name field, paths over 255 bytes, a non-ASCII directory where GNU tar cuts at 100 bytes,
// and two files of the same size whose names share their first 100 bytes, which every
// cut to the name field makes alike.
var (
	longDir  = strings.Repeat("d", 90) + "/" + strings.Repeat("e", 90)
	longName = map[string]string{
		strings.Repeat("a", 150):                                        "one long component\n",
		longDir + "/file120":                                            "a path ustar splits\n",
		longDir + "/" + strings.Repeat("d", 90) + "/f300":               "a path over 255 bytes\n",
		strings.Repeat("d", 90) + "/dir_ünï/" + strings.Repeat("g", 40): "non-ASCII at the cut\n",
		"héllo wörld.txt":                                               "short, not ASCII\n",
		longDir + "/twin-A":                                             "twin A\n",
		longDir + "/twin-B":                                             "twin B\n",
		"small":                                                         "short\n",
	}
)

// longTree writes longName's files under a new directory.
func longTree(t *testing.T) string {
	dir := t.TempDir()
	for name, body := range longName {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// goLongTar writes longName's files with archive/tar in format f.
func goLongTar(t *testing.T, f tar.Format) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, body := range longName {
		h := &tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body)), ModTime: time.Unix(1700000000, 0), Format: f}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatalf("%v: %s: %v", f, name, err)
		}
		tw.Write([]byte(body))
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// checkEvery checks every entry of the plain tar data against its own stream, and
// returns how many took the extended headers to check (the ustar header alone had a cut
// name or no size).
func checkEvery(t *testing.T, data []byte, entries []Entry) (extended int) {
	t.Helper()
	if len(entries) == 0 {
		t.Fatal("no entries")
	}
	for i := range entries {
		e := &entries[i]
		if e.Type == tar.TypeXGlobalHeader {
			continue // archive/tar gives it as an entry of its own, after its data
		}
		if err := CheckHeader(bytes.NewReader(data), *e); err != nil {
			t.Errorf("entry %d: %v", i, err)
		}
		if h, err := tar.NewReader(bytes.NewReader(data[e.Offset-blockSize:])).Next(); err != nil || h.Name != e.Name || h.Size != e.Size {
			extended++
		}
	}
	return extended
}

func buildPlain(t *testing.T, data []byte) []Entry {
	t.Helper()
	ix, err := Build(bytes.NewReader(data), BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return ix.TOC.Entries()
}

// TestCheckHeaderWriters: every entry of tars written by GNU tar, bsdtar and archive/tar,
// in each of their formats, passes, long and non-ASCII names included.
func TestCheckHeaderWriters(t *testing.T) {
	needTool(t, "tar", "tar")
	needTool(t, "bsdtar", "libarchive-tools")
	long := longTree(t)
	type fixture struct {
		name string
		data []byte
		long bool // has names the ustar fields cannot hold
	}
	fixtures := []fixture{
		{"archive/tar mixed", goTar(t), true},
		{"archive/tar PAX", goLongTar(t, tar.FormatPAX), true},
		{"archive/tar GNU", goLongTar(t, tar.FormatGNU), true},
	}
	for _, f := range []string{"gnu", "oldgnu", "pax"} {
		fixtures = append(fixtures,
			fixture{"GNU tar " + f, run(t, nil, "tar", "--format="+f, "-cf", "-", "-C", long, "."), true},
			fixture{"GNU tar " + f + " (devices, links, xattrs)", gnuTar(t, f), true})
	}
	for _, f := range []string{"pax", "gnutar"} {
		fixtures = append(fixtures, fixture{"bsdtar " + f, run(t, nil, "bsdtar", "--format="+f, "-cf", "-", "-C", long, "."), true})
	}
	// ustar and v7 cannot hold the long names: a tree of short ones.
	short := t.TempDir()
	os.MkdirAll(filepath.Join(short, "dir"), 0o755)
	os.WriteFile(filepath.Join(short, "dir", "file"), []byte("file\n"), 0o644)
	os.WriteFile(filepath.Join(short, "héllo"), []byte("non-ASCII\n"), 0o644)
	os.Link(filepath.Join(short, "dir", "file"), filepath.Join(short, "hardlink"))
	os.Symlink("dir/file", filepath.Join(short, "symlink"))
	for _, f := range []string{"ustar", "v7"} {
		fixtures = append(fixtures,
			fixture{"GNU tar " + f, run(t, nil, "tar", "--format="+f, "-cf", "-", "-C", short, "."), false},
			fixture{"bsdtar " + f, run(t, nil, "bsdtar", "--format="+f, "-cf", "-", "-C", short, "."), false})
	}
	for _, fx := range fixtures {
		t.Run(fx.name, func(t *testing.T) {
			entries := buildPlain(t, fx.data)
			ext := checkEvery(t, fx.data, entries)
			if fx.long && ext == 0 {
				t.Error("no entry needed its extended headers: the fixture misses long names")
			}
			t.Logf("%d entries, %d checked through extended headers", len(entries), ext)
		})
	}

	// Through a Reader over a gzip layer, as a mount reads.
	t.Run("gzip layer", func(t *testing.T) {
		data := goTar(t)
		blob := gzipLevel(t, data, 6)
		ix := build(t, blob, 64<<10)
		r, err := NewReader(bytes.NewReader(blob), ix, NewCache(1<<20))
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		for _, e := range ix.TOC.All() {
			if err := CheckHeader(r, e); err != nil {
				t.Error(err)
			}
		}
	})
}

// TestCheckHeaderBigFiles: a file over 8 GiB, whose size does not fit the ustar field in
// octal: GNU tar and archive/tar put 0 there and the size in a PAX record, bsdtar writes
// all 12 digits, the GNU format base-256. Only the headers are written: the streams are
// cut after them, and entries are read from what there is.
func TestCheckHeaderBigFiles(t *testing.T) {
	needTool(t, "tar", "tar")
	needTool(t, "bsdtar", "libarchive-tools")
	const size = 9 << 30
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "small"), []byte("before the big one\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(dir, strings.Repeat("big", 40))) // a long name too
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := os.Truncate(f.Name(), size); err != nil { // sparse: nothing written
		t.Fatal(err)
	}
	head := func(cmd string) []byte {
		return run(t, nil, "sh", "-c", cmd+" 2>/dev/null | head -c 16384")
	}
	streams := map[string][]byte{
		"GNU tar pax":     head("tar --format=pax -cf - -C " + dir + " small " + filepath.Base(f.Name())),
		"GNU tar gnu":     head("tar --format=gnu -cf - -C " + dir + " small " + filepath.Base(f.Name())),
		"bsdtar pax":      head("bsdtar --no-read-sparse --format=pax -cf - -C " + dir + " small " + filepath.Base(f.Name())),
		"bsdtar gnutar":   head("bsdtar --no-read-sparse --format=gnutar -cf - -C " + dir + " small " + filepath.Base(f.Name())),
		"archive/tar PAX": goBigHeader(t, tar.FormatPAX, size),
		"archive/tar GNU": goBigHeader(t, tar.FormatGNU, size),
	}
	for name, data := range streams {
		t.Run(name, func(t *testing.T) {
			entries := headEntries(data)
			var big *Entry
			for i := range entries {
				if entries[i].Size == size {
					big = &entries[i]
				}
			}
			if big == nil {
				t.Fatalf("no %d-byte entry among %d", size, len(entries))
			}
			checkEvery(t, data, entries)
			forged := *big
			forged.Size = size + 1
			if err := CheckHeader(bytes.NewReader(data), forged); !errors.Is(err, ErrHeaderMismatch) {
				t.Errorf("a size one byte over the header's: %v", err)
			}
		})
	}
}

// goBigHeader is the start of a tar of archive/tar with a big file: its headers only.
func goBigHeader(t *testing.T, f tar.Format, size int64) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: strings.Repeat("big", 40), Typeflag: tar.TypeReg, Size: size, Format: f}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// headEntries reads the entries of the start of a tar, as Build does, up to where it is cut.
func headEntries(data []byte) []Entry {
	cr := &CountingReader{R: bytes.NewReader(data)}
	tr := tar.NewReader(cr)
	var out []Entry
	for {
		h, err := tr.Next()
		if err != nil {
			return out
		}
		out = append(out, Entry{Name: h.Name, Type: h.Typeflag, Size: h.Size, Offset: cr.N})
	}
}

// TestCheckHeaderForged: an entry whose offset is another file's, whose size or type is
// not the header's, or whose header is damaged fails with ErrHeaderMismatch; so do the
// twins, whose ustar headers are alike but for the size-equal data, in every format that
// cuts their names.
func TestCheckHeaderForged(t *testing.T) {
	needTool(t, "tar", "tar")
	needTool(t, "bsdtar", "libarchive-tools")
	long := longTree(t)
	fixtures := map[string][]byte{
		"archive/tar PAX": goLongTar(t, tar.FormatPAX),
		"archive/tar GNU": goLongTar(t, tar.FormatGNU),
		"GNU tar gnu":     run(t, nil, "tar", "--format=gnu", "-cf", "-", "-C", long, "."),
		"GNU tar pax":     run(t, nil, "tar", "--format=pax", "-cf", "-", "-C", long, "."),
		"bsdtar pax":      run(t, nil, "bsdtar", "--format=pax", "-cf", "-", "-C", long, "."),
		"mixed":           goTar(t),
	}
	mismatch := func(t *testing.T, data []byte, e *Entry, why string) {
		t.Helper()
		err := CheckHeader(bytes.NewReader(data), *e)
		if !errors.Is(err, ErrHeaderMismatch) {
			t.Errorf("%s: %q at %d: got %v, want ErrHeaderMismatch", why, e.Name, e.Offset, err)
		} else if !strings.Contains(err.Error(), e.Name) {
			t.Errorf("%s: error does not name the entry: %v", why, err)
		}
	}
	for name, data := range fixtures {
		t.Run(name, func(t *testing.T) {
			entries := buildPlain(t, data)
			var files []Entry
			for _, e := range entries {
				if e.Type == tar.TypeReg && e.Size > 0 && len(files) < 40 { // pairs of them
					files = append(files, e)
				}
			}
			twins := 0
			for _, a := range files {
				for _, b := range files {
					if a.Offset == b.Offset {
						continue
					}
					forged := a
					forged.Offset = b.Offset
					mismatch(t, data, &forged, "another file's offset ("+b.Name+")")
					if strings.HasSuffix(a.Name, "/twin-A") && strings.HasSuffix(b.Name, "/twin-B") {
						twins++
					}
				}
				for _, d := range []int64{-1, 1} {
					forged := a
					forged.Size += d
					mismatch(t, data, &forged, "size off by one")
				}
				forged := a
				forged.Type = tar.TypeSymlink
				mismatch(t, data, &forged, "type")
				for _, off := range []int64{a.Offset + 1, a.Offset + blockSize, blockSize - 1, 0, -blockSize} {
					forged := a
					forged.Offset = off
					if err := CheckHeader(bytes.NewReader(data), forged); err == nil {
						t.Errorf("offset %d for %q passes", off, a.Name)
					}
				}
				forged = a
				forged.Name = a.Name + "x"
				mismatch(t, data, &forged, "name")
			}
			if name != "mixed" && twins != 1 {
				t.Errorf("twins swapped %d times, want 1", twins)
			}

			// Damage in each header: the checksum no longer adds up.
			for _, a := range files {
				bad := bytes.Clone(data)
				bad[a.Offset-blockSize+5] ^= 0x20
				mismatch(t, bad, &a, "damaged header")
			}
		})
	}
}

type failingReaderAt struct{ err error }

func (f failingReaderAt) ReadAt(p []byte, off int64) (int, error) { return 0, f.err }

// TestCheckHeaderReadError: a stream that cannot be read is an error of its own, not a
// mismatch, and it is passed on.
func TestCheckHeaderReadError(t *testing.T) {
	boom := errors.New("span fails its checksum")
	err := CheckHeader(failingReaderAt{boom}, Entry{Name: "etc/passwd", Type: tar.TypeReg, Size: 10, Offset: 1024})
	if !errors.Is(err, boom) || errors.Is(err, ErrHeaderMismatch) || !strings.Contains(err.Error(), "etc/passwd") {
		t.Fatalf("got %v", err)
	}
	// A stream shorter than the index says.
	err = CheckHeader(bytes.NewReader(make([]byte, 100)), Entry{Name: "x", Type: tar.TypeReg, Size: 1, Offset: 512})
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("short stream: got %v", err)
	}
}

// rawHeader is a header block as a writer might make it, with its checksum.
func rawHeader(name string, typ byte, size int64) []byte {
	blk := make([]byte, blockSize)
	copy(blk, name)
	copy(blk[100:], "0000644\x00")
	copy(blk[124:], fmt.Sprintf("%011o\x00", size))
	blk[156] = typ
	copy(blk[257:], "ustar\x0000")
	return fixSum(blk)
}

// fixSum writes blk's checksum.
func fixSum(blk []byte) []byte {
	copy(blk[148:], "        ")
	sum := 0
	for _, c := range blk {
		sum += int(c)
	}
	copy(blk[148:], fmt.Sprintf("%06o\x00 ", sum))
	return blk
}

// TestUstarMatches: the quick path passes what archive/tar reads as the entry, and only
// that: every header of the writers' tars, and headers archive/tar reads otherwise than
// their fields look (a GNU header whose times are not numbers: archive/tar takes them for
// a prefix), or refuses (a numeric field that is not a number).
func TestUstarMatches(t *testing.T) {
	full := 0 // headers archive/tar reads as the entry from their block alone
	agree := func(t *testing.T, blk []byte, e *Entry) bool {
		t.Helper()
		var b [blockSize]byte
		copy(b[:], blk)
		quick := ustarMatches(&b, e)
		h, err := tar.NewReader(bytes.NewReader(blk)).Next()
		whole := err == nil && h.Name == e.Name && h.Typeflag == e.Type && h.Size == e.Size
		if quick && !whole {
			t.Errorf("ustarMatches passes %q, archive/tar reads %+v, %v", e.Name, h, err)
		}
		if whole {
			full++
		}
		return quick
	}
	quick := 0
	for _, data := range [][]byte{goTar(t), goLongTar(t, tar.FormatPAX), goLongTar(t, tar.FormatGNU)} {
		for _, e := range buildPlain(t, data) {
			if e.Type != tar.TypeXGlobalHeader && agree(t, data[e.Offset-blockSize:e.Offset], &e) {
				quick++
			}
		}
	}
	// Every header of these writers that archive/tar reads whole from its block, the quick
	// path decides too.
	if quick != full || quick < 100 {
		t.Errorf("the quick path passed %d headers of the writers' tars, archive/tar %d", quick, full)
	}

	gnu := rawHeader("x", tar.TypeReg, 5)
	copy(gnu[257:], "ustar  \x00")
	copy(gnu[345:], "p")
	fixSum(gnu)
	if agree(t, gnu, &Entry{Name: "x", Type: tar.TypeReg, Size: 5}) {
		t.Error("a GNU header with a prefix where its times are passes under its name field alone")
	}
	badUID := rawHeader("x", tar.TypeReg, 5)
	copy(badUID[108:], "zz\x00")
	fixSum(badUID)
	if agree(t, badUID, &Entry{Name: "x", Type: tar.TypeReg, Size: 5}) {
		t.Error("a header with a uid that is not a number passes")
	}
	star := rawHeader("x", tar.TypeReg, 5)
	copy(star[345:], "dir")
	copy(star[508:], "tar\x00")
	fixSum(star)
	if !agree(t, star, &Entry{Name: "dir/x", Type: tar.TypeReg, Size: 5}) || agree(t, star, &Entry{Name: "x", Type: tar.TypeReg, Size: 5}) {
		t.Error("a star header's prefix is not read as archive/tar reads it")
	}
}

// TestCheckHeaderManyExtendedHeaders: thousands of empty PAX headers before an entry whose
// ustar name is cut do not make the check slow, and it still fails when none gives the
// name (and passes when the nearest does).
func TestCheckHeaderManyExtendedHeaders(t *testing.T) {
	name := strings.Repeat("n", 150)
	var stream []byte
	for range maxExtHeader / blockSize {
		stream = append(stream, rawHeader("PaxHeaders/x", tar.TypeXHeader, 0)...)
	}
	stream = append(stream, rawHeader(name[:100], tar.TypeReg, 5)...)
	stream = append(stream, []byte("data\n")...)
	e := &Entry{Name: name, Type: tar.TypeReg, Size: 5, Offset: int64(len(stream)) - 5}
	start := time.Now()
	if err := CheckHeader(bytes.NewReader(stream), *e); !errors.Is(err, ErrHeaderMismatch) {
		t.Fatalf("got %v, want ErrHeaderMismatch", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("the check took %v", d)
	}

	// The nearest header gives the name: it passes.
	rec := fmt.Sprintf("path=%s\n", name)
	rec = fmt.Sprintf("%d %s", len(rec)+4, rec) // the length counts its own 3 digits and a space
	pax := append(rawHeader("PaxHeaders/x", tar.TypeXHeader, int64(len(rec))), []byte(rec)...)
	pax = append(pax, make([]byte, blockSize-len(rec))...)
	ok := append(append(bytes.Clone(stream[:len(stream)-blockSize-5]), pax...), stream[len(stream)-blockSize-5:]...)
	e.Offset = int64(len(ok)) - 5
	if err := CheckHeader(bytes.NewReader(ok), *e); err != nil {
		t.Fatal(err)
	}
}
