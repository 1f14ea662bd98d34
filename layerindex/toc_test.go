package layerindex

import (
	"archive/tar"
	"fmt"
	"io"
	"math"
	"reflect"
	"runtime"
	"testing"
	"time"
	"unsafe"
)

// The fixed part of an entry is what a mount pays per entry of every layer it serves.
func TestTOCRecordSize(t *testing.T) {
	if n := unsafe.Sizeof(tocRec{}); n != 48 {
		t.Errorf("tocRec is %d bytes, want 48", n)
	}
}

// tocEntries returns n entries over a few chunks, each field varied, the rare ones now and
// then.
func tocEntries(n int) []Entry {
	ents := make([]Entry, n)
	for i := range ents {
		e := Entry{
			Name:    fmt.Sprintf("d%d/f%d", i/300, i),
			Type:    "05"[i%7/6],
			Mode:    int64(0o644 + i%3),
			UID:     i % 5 / 3,
			GID:     i % 11 / 7,
			Uname:   []string{"root", "user"}[i%5/3],
			Gname:   []string{"root", "staff"}[i%11/7],
			ModTime: time.Unix(int64(1_700_000_000+i), 0).UTC(),
			Size:    int64(i * 10),
			Offset:  int64(i * 1024),
		}
		switch i % 97 {
		case 1:
			e.Type, e.Linkname = tar.TypeSymlink, fmt.Sprintf("../t%d", i%4)
		case 2:
			e.Type, e.Linkname = tar.TypeLink, ents[i-1].Name
		case 3:
			e.Type, e.Devmajor, e.Devminor = tar.TypeChar, 1, int64(i)
		case 4:
			e.PAXRecords = []Record{{Key: "SCHILY.xattr.user.n", Value: fmt.Sprint(i)}}
		case 5:
			e.ModTime = time.Unix(int64(i), int64(i)).UTC()
		case 6:
			e.Mode = math.MaxInt32 + int64(i)
		case 7:
			e.Name = ""
		case 8:
			e.PAXRecords = []Record{}
		}
		ents[i] = e
	}
	return ents
}

func TestTOCEntries(t *testing.T) {
	for _, n := range []int{0, 1, tocChunkSize - 1, tocChunkSize, tocChunkSize + 1, 3*tocChunkSize + 17} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			want := tocEntries(n)
			toc := NewTOC(want)
			if toc.Len() != n {
				t.Fatalf("Len %d, want %d", toc.Len(), n)
			}
			got := toc.Entries()
			if !reflect.DeepEqual(got, want) {
				for i := range min(len(got), len(want)) {
					if !reflect.DeepEqual(got[i], want[i]) {
						t.Fatalf("entry %d:\n got %#v\nwant %#v", i, got[i], want[i])
					}
				}
				t.Fatalf("entries differ")
			}
			for i := range n {
				if toc.Name(i) != want[i].Name || toc.Type(i) != want[i].Type || toc.Linkname(i) != want[i].Linkname {
					t.Fatalf("entry %d: accessors give %q %c %q", i, toc.Name(i), toc.Type(i), toc.Linkname(i))
				}
			}
			// Packing what a TOC gives packs it the same.
			if again := NewTOC(got); !reflect.DeepEqual(again, toc) {
				t.Fatal("NewTOC(toc.Entries()) differs from toc")
			}
			seen := 0
			for i := range toc.All() {
				if i != seen || i == 5 {
					break
				}
				seen++
			}
			if seen != min(n, 5) {
				t.Fatalf("All stopped after %d", seen)
			}
		})
	}
	var nilTOC *TOC
	if nilTOC.Len() != 0 || nilTOC.Entries() != nil {
		t.Fatal("a nil TOC has entries")
	}
	if e := NewTOC([]Entry{}).Entries(); e == nil || len(e) != 0 {
		t.Fatalf("an empty TOC gives %#v", e)
	}
}

// At, over a packed TOC, allocates nothing.
func TestTOCAtAllocs(t *testing.T) {
	toc := NewTOC(tocEntries(2000))
	var sink int
	allocs := testing.AllocsPerRun(10, func() {
		for i := range toc.Len() {
			e := toc.At(i)
			sink += len(e.Name) + len(e.PAXRecords)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations for %d entries", allocs, toc.Len())
	}
}

// The decoder makes the owner "before" the first entry of uid and gid 0 and empty names,
// whether or not the file's string table holds an empty string, and once it has, the
// index re-encodes and decodes to itself.
func TestTOCZeroOwner(t *testing.T) {
	entry := func(e *encoder, f byte) {
		e.buf = append(e.buf, f, '0', 0)
		e.str("x")
		e.buf = append(e.buf, 0, 0, 0, 0)
	}
	cases := map[string]func(e *encoder){
		"no strings": func(e *encoder) {
			ixfHeader(e, 7)
			e.uvarint(0)
			e.uvarint(1)
			entry(e, entSameOwner)
			e.uvarint(0)
		},
		"two empty strings, the second named": func(e *encoder) {
			ixfHeader(e, 7)
			e.uvarint(2)
			e.str("")
			e.str("")
			e.uvarint(2)
			e.buf = append(e.buf, 0, '0', 0)
			e.str("x")
			e.buf = append(e.buf, 0, 0, 0, 1, 1, 0, 0, 0) // mode uid gid uname gname mtime size offset
			e.buf = append(e.buf, 0, '0', 0)
			e.str("y")
			e.buf = append(e.buf, 0, 0, 0, 0, 0, 0, 0, 0) // the same by the first empty string
			e.uvarint(0)
		},
	}
	for name, body := range cases {
		t.Run(name, func(t *testing.T) {
			data := ixfBody(body)
			if !ixfCheckDecode(t, data) {
				var ix Index
				t.Fatal(ix.UnmarshalBinary(data))
			}
			var ix Index
			ix.UnmarshalBinary(data)
			for i, e := range ix.TOC.All() {
				if e.UID != 0 || e.GID != 0 || e.Uname != "" || e.Gname != "" {
					t.Errorf("entry %d: owner %d %d %q %q", i, e.UID, e.GID, e.Uname, e.Gname)
				}
			}
		})
	}
}

// tocTar streams a tar of n empty files, names as `lxbench mkmany` makes them, 1000 a
// directory.
func tocTar(n int) io.Reader {
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		t0 := time.Unix(1_700_000_000, 0)
		for i := range n {
			if i%1000 == 0 {
				tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("d%04d/", i/1000), Typeflag: tar.TypeDir, Mode: 0o755, ModTime: t0})
			}
			tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("d%04d/f%07d", i/1000, i), Typeflag: tar.TypeReg, Mode: 0o644, ModTime: t0})
		}
		pw.CloseWithError(tw.Close())
	}()
	return pr
}

// What a TOC built by Build holds per entry beyond its name: the record and a share of
// the chunk slack. Imports and mounts of a million entries are bounded by this.
func TestTOCMemoryPerEntry(t *testing.T) {
	const n = 100_000
	heap := func() uint64 {
		runtime.GC()
		runtime.GC() // and what sync.Pools kept through the first
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	ix, err := Build(tocTar(n), BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ix.Checkpoints = nil // a plain layer's CRCs: not the TOC
	used := heap() - before
	names := 0
	for i := range ix.TOC.Len() {
		names += len(ix.TOC.Name(i))
	}
	entries := ix.TOC.Len()
	runtime.KeepAlive(ix)
	perEntry := float64(used) / float64(entries)
	beyond := float64(int(used)-names) / float64(entries)
	t.Logf("%d entries: %d bytes live, %.1f per entry, %.1f beyond the name (%d name bytes)", entries, used, perEntry, beyond, names)
	if beyond > 52 {
		t.Errorf("%.1f bytes per entry beyond the name, want <= 52", beyond)
	}
}
