package layerindex

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// Helpers here are prefixed ixf to stay clear of other test files in the package.

const (
	ixfBlob   = digest.Digest("sha256:4f2ab1f6a6c1a0d7a1e4e1c5b7a9f3e2d1c0b9a8f7e6d5c4b3a2918273645546")
	ixfDiffID = digest.Digest("sha256:9b1e4c3d2a190817263544536271809a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e")
)

// ixfText returns n bytes of text-like data (words from a Zipf-distributed vocabulary, with
// lines, indentation and punctuation), compressing about 3x with DEFLATE like real text files.
func ixfText(rng *rand.Rand, n int) []byte {
	vocab := ixfVocab()
	zipf := rand.NewZipf(rng, 1.07, 2, uint64(len(vocab)-1))
	var b bytes.Buffer
	for b.Len() < n {
		b.WriteString(strings.Repeat(" ", 4*rng.IntN(3)))
		words := 3 + rng.IntN(12)
		for w := range words {
			if w > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(vocab[zipf.Uint64()])
			switch rng.IntN(20) {
			case 0:
				b.WriteByte(',')
			case 1:
				b.WriteString("()")
			case 2:
				fmt.Fprintf(&b, "=%d", rng.IntN(10000))
			}
		}
		b.WriteString(".\n")
	}
	return b.Bytes()[:n]
}

var ixfVocab = sync.OnceValue(func() []string {
	rng := rand.New(rand.NewPCG(7, 7))
	const letters = "etaoinshrdlcumwfgypbvkjxqz_"
	seen := map[string]bool{}
	var v []string
	for len(v) < 5000 {
		n := 2 + rng.IntN(9)
		var w []byte
		for range n {
			// Skewed letter choice, like English.
			w = append(w, letters[int(float64(len(letters))*math.Pow(rng.Float64(), 1.8))])
		}
		if !seen[string(w)] {
			seen[string(w)] = true
			v = append(v, string(w))
		}
	}
	return v
})

func ixfRandomBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// ixfLayer builds an Index resembling one of a distribution layer: about nEntries files of
// packages spread over usr/bin, usr/lib, usr/share/doc, man, locale and python trees and
// their directories, in the order a directory walk writes them, data totalling about total
// bytes, and nCheckpoints gzip checkpoints with 32 KiB text windows.
func ixfLayer(seed uint64, nEntries int, total int64, nCheckpoints int) *Index {
	rng := rand.New(rand.NewPCG(seed, 1))
	syl := []string{"lib", "gnu", "x", "ssl", "core", "util", "py", "perl", "net", "font", "data",
		"sys", "z", "curses", "crypt", "gtk", "common", "tools", "dbus", "glib", "pango", "cairo",
		"krb", "ldap", "sasl", "uuid", "blk", "mount", "systemd", "apt", "dpkg", "gpg", "tls",
		"idn", "xml", "yaml", "json", "http", "curl", "pcre", "sqlite", "bz", "lz", "ma", "ffi"}
	langs := []string{"de", "fr", "es", "it", "ja", "pt_BR", "ru", "zh_CN", "sv", "nl", "pl", "cs"}
	mods := []string{"__init__", "core", "utils", "compat", "config", "errors", "api", "client",
		"server", "parser", "types", "base", "models", "helpers", "exceptions", "version"}
	type file struct {
		mode      int64
		link      string
		linkType  byte
		mtime     int64
		text, big bool
	}
	files := map[string]file{}
	dirs := map[string]bool{}
	for len(files)+len(dirs) < nEntries {
		name := syl[rng.IntN(len(syl))] + syl[rng.IntN(len(syl))]
		if rng.IntN(3) == 0 {
			name += fmt.Sprint(rng.IntN(20))
		}
		mt := int64(1_690_000_000 + rng.IntN(20_000_000))
		add := func(p string, f file) {
			f.mtime = mt
			files[p] = f
			for d := p; ; {
				i := strings.LastIndexByte(d, '/')
				if i < 0 || dirs[d[:i]] {
					break
				}
				d = d[:i]
				dirs[d] = true
			}
		}
		doc := "usr/share/doc/" + name + "/"
		add(doc+"copyright", file{mode: 0o644, text: true})
		add(doc+"changelog.Debian.gz", file{mode: 0o644})
		if rng.IntN(2) == 0 {
			add(doc+"NEWS.gz", file{mode: 0o644})
			add(doc+"README.md", file{mode: 0o644, text: true})
		}
		if rng.IntN(2) == 0 {
			so := fmt.Sprintf("usr/lib/x86_64-linux-gnu/lib%s.so.%d", name, rng.IntN(6))
			full := fmt.Sprintf("%s.%d.%d", so, rng.IntN(30), rng.IntN(10))
			add(full, file{mode: 0o644, big: true})
			add(so, file{mode: 0o777, link: full[strings.LastIndexByte(full, '/')+1:], linkType: ixfSymlink})
		}
		if rng.IntN(2) == 0 {
			add("usr/bin/"+name, file{mode: 0o755, big: true})
			add("usr/share/man/man1/"+name+".1.gz", file{mode: 0o644})
			if rng.IntN(10) == 0 {
				add("usr/bin/"+name+"-compat", file{link: "usr/bin/" + name, linkType: ixfHardlink, mode: 0o755})
			}
		}
		if rng.IntN(4) == 0 {
			for _, l := range langs[:rng.IntN(len(langs))] {
				add("usr/share/locale/"+l+"/LC_MESSAGES/"+name+".mo", file{mode: 0o644})
			}
		}
		if rng.IntN(4) == 0 {
			base := "usr/lib/python3/dist-packages/" + name + "/"
			for _, m := range mods[:1+rng.IntN(len(mods)-1)] {
				add(base+m+".py", file{mode: 0o644, text: true})
				add(base+"__pycache__/"+m+".cpython-311.pyc", file{mode: 0o644})
			}
		}
		if rng.IntN(6) == 0 {
			base := "usr/share/" + name + "/"
			for range 5 + rng.IntN(40) {
				add(base+syl[rng.IntN(len(syl))]+"/"+mods[rng.IntN(len(mods))]+fmt.Sprintf("-%d.dat", rng.IntN(100)), file{mode: 0o644})
			}
		}
	}
	// Directories, then walk order: '/' sorts before every other byte.
	paths := make([]string, 0, len(files)+len(dirs))
	for p := range files {
		paths = append(paths, p)
	}
	for d := range dirs {
		paths = append(paths, d+"/")
	}
	key := func(p string) string { return strings.ReplaceAll(p, "/", "\x00") }
	sort.Slice(paths, func(i, j int) bool { return key(paths[i]) < key(paths[j]) })

	// File sizes: log-normal, scaled below so that the tar totals about total bytes.
	mu, sigma := math.Log(float64(total)/float64(len(files)))-2, 2.0
	ix := &Index{
		BlobDigest:  ixfBlob,
		MediaType:   "application/vnd.oci.image.layer.v1.tar+gzip",
		Compression: Gzip,
		DiffID:      ixfDiffID,
		SpanSize:    DefaultSpanSize,
	}
	ents := make([]Entry, 0, len(paths))
	for _, p := range paths {
		e := Entry{Name: p, Uname: "root", Gname: "root"}
		if strings.HasSuffix(p, "/") {
			e.Type, e.Mode = ixfDir, 0o755
			e.ModTime = time.Unix(1_700_000_000, 0).UTC()
		} else {
			f := files[p]
			e.Mode, e.ModTime = f.mode, time.Unix(f.mtime, 0).UTC()
			switch {
			case f.linkType != 0:
				e.Type, e.Linkname = f.linkType, f.link
			default:
				e.Type = ixfReg
				e.Size = int64(math.Exp(mu + sigma*rng.NormFloat64()))
				if f.big {
					e.Size *= 4
				}
				e.Size = min(e.Size, total/20)
			}
		}
		ents = append(ents, e)
	}
	var data int64
	for _, e := range ents {
		data += e.Size
	}
	scale := float64(total-int64(len(ents))*1024) / float64(data)
	var off int64
	for i := range ents {
		e := &ents[i]
		e.Size = int64(float64(e.Size) * scale)
		off += 512
		if len(e.Name) > 100 {
			off += 1024 // PAX header for the long name
		}
		e.Offset = off
		off += (e.Size + 511) &^ 511
	}
	off += 1024
	ix.TOC = NewTOC(ents)
	ix.Size = off
	ix.BlobSize = off * 35 / 100
	for i := range nCheckpoints {
		c := Checkpoint{Out: off * int64(i) / int64(nCheckpoints)}
		c.In = c.Out*35/100 + int64(rng.IntN(1000))
		if i == 0 {
			c.In, c.Out, c.Member = 0, 0, true
		} else {
			c.Bit = uint8(rng.IntN(8))
			c.Window = ixfText(rng, 32<<10)
		}
		ix.Checkpoints = append(ix.Checkpoints, c)
	}
	return ix
}

// tar typeflags, spelled out so this file does not depend on archive/tar.
const (
	ixfReg      = '0'
	ixfHardlink = '1'
	ixfSymlink  = '2'
	ixfChar     = '3'
	ixfBlock    = '4'
	ixfDir      = '5'
	ixfFifo     = '6'
)

// ixfRich returns a small layer plus every awkward case the format must carry.
func ixfRich() *Index {
	ix := ixfLayer(1, 200, 8<<20, 3)
	rng := rand.New(rand.NewPCG(2, 2))
	ents := ix.TOC.Entries()
	last := ents[len(ents)-1]
	off := last.Offset + last.Size + 4096
	t0 := time.Unix(1_700_000_000, 0).UTC()
	longDir := "opt/" + strings.Repeat("very-long-directory-name-", 12) // > 255 bytes with a file
	capability := "\x01\x00\x00\x02\x00\x30\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
	var firstFile string
	for _, e := range ents {
		if e.Type == ixfReg {
			firstFile = e.Name
			break
		}
	}
	add := func(e Entry) {
		if e.Uname == "" && e.UID == 0 {
			e.Uname, e.Gname = "root", "root"
		}
		if e.ModTime.IsZero() {
			e.ModTime = t0
		}
		off += 512
		e.Offset = off
		off += (e.Size + 511) &^ 511
		ents = append(ents, e)
	}
	add(Entry{Name: "dev/", Type: ixfDir, Mode: 0o755})
	add(Entry{Name: "dev/console", Type: ixfChar, Mode: 0o600, Devmajor: 5, Devminor: 1})
	add(Entry{Name: "dev/null", Type: ixfChar, Mode: 0o666, Devmajor: 1, Devminor: 3})
	add(Entry{Name: "dev/sda1", Type: ixfBlock, Mode: 0o660, Devmajor: 8, Devminor: 1, GID: 6, Gname: "disk"})
	add(Entry{Name: "dev/initctl", Type: ixfFifo, Mode: 0o600})
	add(Entry{Name: "dev/weird", Type: ixfChar, Mode: 0o600, Devmajor: -1, Devminor: math.MaxInt64})
	add(Entry{Name: "home/", Type: ixfDir, Mode: 0o755})
	add(Entry{Name: "home/user/", Type: ixfDir, Mode: 0o700, UID: 1000, GID: 1000, Uname: "user", Gname: "user"})
	add(Entry{Name: "home/user/.profile", Type: ixfReg, Mode: 0o644, UID: 1000, GID: 1000, Uname: "user", Gname: "user", Size: 807,
		ModTime: time.Unix(1_700_000_123, 456_789_012).UTC()})
	add(Entry{Name: "home/user/café/naïve résumé.txt", Type: ixfReg, Mode: 0o644, UID: 1000, GID: 1000, Uname: "user", Gname: "user", Size: 3})
	add(Entry{Name: "home/user/日本語/ファイル名.txt", Type: ixfReg, Mode: 0o644, UID: 1000, GID: 1000, Uname: "user", Gname: "user", Size: 10})
	add(Entry{Name: "home/user/bad\xff\xfeutf8", Type: ixfReg, Mode: 0o644, UID: 1000, GID: 1000, Uname: "user", Gname: "user"})
	add(Entry{Name: "home/user/nobody", Type: ixfReg, Mode: 0o644, UID: 65534, GID: 65534, Uname: "nobody", Gname: "nogroup"})
	add(Entry{Name: "home/user/noowner", Type: ixfReg, Mode: 0o644, UID: 4242, GID: 4243})
	add(Entry{Name: "home/user/negative-uid", Type: ixfReg, Mode: 0o644, UID: -2, GID: math.MinInt32, Uname: "x"})
	add(Entry{Name: longDir, Type: ixfDir, Mode: 0o755})
	add(Entry{Name: longDir + "/" + strings.Repeat("f", 120) + ".txt", Type: ixfReg, Mode: 0o644, Size: 5,
		PAXRecords: []Record{{Key: "path", Value: longDir + "/" + strings.Repeat("f", 120) + ".txt"}}})
	add(Entry{Name: "usr/bin/ping", Type: ixfReg, Mode: 0o4755, Size: 90_000,
		PAXRecords: []Record{
			{Key: "SCHILY.xattr.security.capability", Value: capability},
			{Key: "SCHILY.xattr.user.comment", Value: "héllo\x00world"},
			{Key: "mtime", Value: "1700000000.123456789"},
		}})
	add(Entry{Name: "usr/bin/ping6", Type: ixfHardlink, Mode: 0o4755, Linkname: "usr/bin/ping"})
	add(Entry{Name: "usr/bin/hard-to-first", Type: ixfHardlink, Mode: 0o644, Linkname: firstFile})
	add(Entry{Name: "usr/bin/sh", Type: ixfSymlink, Mode: 0o777, Linkname: "dash"})
	add(Entry{Name: "usr/bin/empty-pax", Type: ixfReg, Mode: 0o644, PAXRecords: []Record{}})
	add(Entry{Name: "usr/bin/empty-value", Type: ixfReg, Mode: 0o644, PAXRecords: []Record{{Key: "SCHILY.xattr.user.empty", Value: ""}}})
	add(Entry{Name: "usr/bin/old", Type: ixfReg, Mode: 0o644, ModTime: time.Unix(-86400*365*30, 999_999_999).UTC()})
	add(Entry{Name: "usr/bin/far-future", Type: ixfReg, Mode: 0o644, ModTime: time.Unix(1<<40, 1).UTC()})
	add(Entry{Name: "usr/bin/zero-time", Type: ixfReg, Mode: 0o644, ModTime: time.Unix(0, 0).UTC()})
	add(Entry{Name: "usr/bin/mode-bits", Type: ixfReg, Mode: 0o7777 | 0o170000, Size: math.MaxInt64})
	add(Entry{Name: "", Type: 'x', Mode: -1})
	add(Entry{Name: "usr", Type: 'g', Mode: 0})
	ents[len(ents)-1].ModTime = time.Time{} // zero Time is UTC without location
	// An entry whose offset goes backwards.
	add(Entry{Name: "usr/zz-backwards", Type: ixfReg, Mode: 0o644, Size: 1})
	ents[len(ents)-1].Offset = 17
	// Modes an int32 does not hold.
	add(Entry{Name: "usr/zz-mode-big", Type: ixfReg, Mode: 1 << 40})
	add(Entry{Name: "usr/zz-mode-min", Type: ixfReg, Mode: math.MinInt64})
	// The zero owner again after others, and a device with a sub-second mtime and PAX records.
	add(Entry{Name: "usr/zz-zero-owner", Type: ixfReg, Uname: "", Gname: "", UID: 0, GID: 0, Mode: 0o600})
	add(Entry{Name: "usr/zz-all-extra", Type: ixfBlock, Mode: 1 << 33, Devmajor: 7, ModTime: time.Unix(5, 5).UTC(),
		PAXRecords: []Record{{Key: "SCHILY.xattr.user.a", Value: "b"}}})
	ix.TOC = NewTOC(ents)
	ix.Size = off + 1024

	ix.Checkpoints = append(ix.Checkpoints,
		Checkpoint{In: ix.BlobSize - 9000, Out: off - 70000, Bit: 7, Window: ixfRandomBytes(rng, 32<<10), CRCs: []uint32{0xdeadbeef}},
		Checkpoint{In: ix.BlobSize - 5000, Out: off - 40000, Member: true},
		Checkpoint{In: ix.BlobSize - 4000, Out: off - 30000, Member: true, Window: []byte{}, CRCs: []uint32{}},
		Checkpoint{In: ix.BlobSize - 3000, Out: off - 20000, Bit: 3, Window: []byte("x"), CRCs: []uint32{1, 2, 0xffffffff}},
		Checkpoint{In: ix.BlobSize - 2000, Out: off - 10000, Bit: 1, Window: ixfText(rng, 1000)},
		Checkpoint{In: ix.BlobSize - 3500, Out: off - 5000, Bit: 5, Window: bytes.Repeat([]byte{0}, 32<<10)},
	)
	return ix
}

// ixfSmall returns a small index (a few hundred bytes encoded) for exhaustive corruption tests.
func ixfSmall() *Index {
	rng := rand.New(rand.NewPCG(3, 3))
	t0 := time.Unix(1_700_000_000, 0).UTC()
	return &Index{
		BlobDigest: ixfBlob, MediaType: "application/vnd.oci.image.layer.v1.tar+gzip", Compression: Gzip,
		BlobSize: 4000, Size: 12288, DiffID: ixfDiffID, SpanSize: 4096,
		TOC: NewTOC([]Entry{
			{Name: "etc/", Type: ixfDir, Mode: 0o755, Uname: "root", Gname: "root", ModTime: t0, Offset: 512},
			{Name: "etc/hostname", Type: ixfReg, Mode: 0o644, Uname: "root", Gname: "root", ModTime: t0, Size: 7, Offset: 1536},
			{Name: "etc/ping", Type: ixfReg, Mode: 0o4755, UID: 1, GID: 2, Uname: "daemon", Gname: "bin",
				ModTime: time.Unix(-5, 7).UTC(), Size: 3000, Offset: 3072,
				PAXRecords: []Record{{Key: "SCHILY.xattr.security.capability", Value: "\x01\x00\x00\x02\x00\x30"}}},
			{Name: "etc/ping6", Type: ixfHardlink, Mode: 0o4755, Linkname: "etc/ping", ModTime: t0, Offset: 6656},
			{Name: "dev/null", Type: ixfChar, Mode: 0o666, Devmajor: 1, Devminor: 3, ModTime: t0, Offset: 7680},
		}),
		Checkpoints: []Checkpoint{
			{Member: true},
			{In: 1500, Bit: 5, Out: 4096, Window: ixfText(rng, 300)},
			{In: 3000, Out: 8192, Window: ixfRandomBytes(rng, 20)},
			{In: 3500, Out: 10000, Member: true, Window: []byte{}},
		},
	}
}

func ixfEncode(t testing.TB, ix *Index) []byte {
	t.Helper()
	data, err := ix.MarshalBinary()
	if err != nil {
		t.Fatalf("MarshalBinary: %v", err)
	}
	return data
}

func ixfRoundTrip(t *testing.T, ix *Index) []byte {
	t.Helper()
	data := ixfEncode(t, ix)
	var got Index
	if err := got.UnmarshalBinary(data); err != nil {
		t.Fatalf("UnmarshalBinary: %v", err)
	}
	if !reflect.DeepEqual(unpacked(t, &got), ix) {
		ixfDiff(t, ix, unpacked(t, &got))
		t.Fatal("round trip changed the index")
	}
	if again := ixfEncode(t, &got); !bytes.Equal(again, data) {
		t.Fatal("re-encoding the decoded index gives different bytes")
	}
	return data
}

// unpacked returns a copy of ix with its windows as a built index has them: inflated
// into Window, none left packed.
func unpacked(t testing.TB, ix *Index) *Index {
	t.Helper()
	u := *ix
	u.Checkpoints = slices.Clone(ix.Checkpoints)
	for i := range u.Checkpoints {
		c := &u.Checkpoints[i]
		w, err := c.window()
		if err != nil {
			t.Fatalf("checkpoint %d: %v", i, err)
		}
		c.Window, c.packed, c.packedLen = w, nil, 0
	}
	return &u
}

func ixfDiff(t *testing.T, want, got *Index) {
	t.Helper()
	w, g := *want, *got
	w.TOC, w.Checkpoints, g.TOC, g.Checkpoints = nil, nil, nil, nil
	if !reflect.DeepEqual(w, g) {
		t.Errorf("header: got %+v, want %+v", g, w)
	}
	we, ge := want.TOC.Entries(), got.TOC.Entries()
	if len(we) != len(ge) || (we == nil) != (ge == nil) {
		t.Errorf("entries: got %d (nil %v), want %d (nil %v)", len(ge), ge == nil, len(we), we == nil)
	}
	for i := range min(len(we), len(ge)) {
		if !reflect.DeepEqual(we[i], ge[i]) {
			t.Errorf("entry %d:\n got %#v\nwant %#v", i, ge[i], we[i])
		}
	}
	if len(we) == len(ge) && !reflect.DeepEqual(want.TOC, got.TOC) {
		t.Errorf("same entries, different packing:\n got %#v\nwant %#v", got.TOC, want.TOC)
	}
	if len(want.Checkpoints) != len(got.Checkpoints) || (want.Checkpoints == nil) != (got.Checkpoints == nil) {
		t.Errorf("checkpoints: got %d, want %d", len(got.Checkpoints), len(want.Checkpoints))
	}
	for i := range min(len(want.Checkpoints), len(got.Checkpoints)) {
		if !reflect.DeepEqual(want.Checkpoints[i], got.Checkpoints[i]) {
			t.Errorf("checkpoint %d differs", i)
		}
	}
}

// ixfFixCRC returns a copy of data with its trailer set to the checksum of the rest, or nil
// if data is too short to have one.
func ixfFixCRC(data []byte) []byte {
	if len(data) < crcSize {
		return nil
	}
	out := bytes.Clone(data)
	body := out[:len(out)-crcSize]
	binary.LittleEndian.PutUint32(out[len(body):], crc32.Checksum(body, castagnoli))
	return out
}

func TestIndexFileRoundTrip(t *testing.T) {
	rich := ixfRich()
	data := ixfRoundTrip(t, rich)
	t.Logf("rich index: %d entries, %d checkpoints, %d bytes", rich.TOC.Len(), len(rich.Checkpoints), len(data))

	base := func() *Index {
		return &Index{BlobDigest: ixfBlob, DiffID: ixfDiffID, SpanSize: DefaultSpanSize}
	}
	cases := map[string]*Index{
		"small":                       ixfSmall(),
		"nil entries and checkpoints": base(),
		"empty entries and checkpoints": func() *Index {
			ix := base()
			ix.TOC, ix.Checkpoints = NewTOC([]Entry{}), []Checkpoint{}
			return ix
		}(),
		"zero entries": func() *Index {
			ix := ixfSmall()
			ix.TOC = nil
			return ix
		}(),
		"zero checkpoints, uncompressed": func() *Index {
			ix := ixfSmall()
			ix.Compression, ix.Checkpoints, ix.DiffID, ix.BlobSize = Uncompressed, nil, ix.BlobDigest, ix.Size
			return ix
		}(),
		"sequential zstd, sha512": func() *Index {
			ix := ixfSmall()
			ix.Compression, ix.Sequential, ix.MediaType = Zstd, true, "application/vnd.oci.image.layer.v1.tar+zstd"
			ix.BlobDigest = digest.SHA512.FromString("blob")
			ix.Checkpoints = []Checkpoint{{Member: true}}
			return ix
		}(),
		"extreme header values": func() *Index {
			ix := base()
			ix.BlobSize, ix.Size, ix.SpanSize = math.MaxInt64, -1, math.MinInt64
			ix.Checkpoints = []Checkpoint{{In: math.MinInt64, Out: math.MaxInt64, Bit: 7}, {In: math.MaxInt64, Out: math.MinInt64}}
			ix.TOC = NewTOC([]Entry{{Offset: math.MaxInt64, ModTime: time.Unix(math.MaxInt64/2, 0).UTC()}, {Offset: math.MinInt64}})
			return ix
		}(),
	}
	for name, ix := range cases {
		t.Run(name, func(t *testing.T) { ixfRoundTrip(t, ix) })
	}
}

// A local or monotonic ModTime keeps its instant: packed and decoded, the time is in UTC.
func TestIndexFileModTimeUTC(t *testing.T) {
	ix := ixfSmall()
	ents := ix.TOC.Entries()
	ents[0].ModTime = time.Now()
	ents[1].ModTime = time.Date(2020, 1, 2, 3, 4, 5, 6, time.FixedZone("X", 3600))
	ix.TOC = NewTOC(ents)
	var got Index
	if err := got.UnmarshalBinary(ixfEncode(t, ix)); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(unpacked(t, &got), ix) {
		ixfDiff(t, ix, unpacked(t, &got))
	}
	for i, e := range got.TOC.All() {
		want := ents[i].ModTime.UTC()
		if e.ModTime != want || e.ModTime.Location() != time.UTC {
			t.Errorf("entry %d: ModTime %#v, want %#v", i, e.ModTime, want)
		}
	}
}

func TestIndexFileTruncated(t *testing.T) {
	data := ixfEncode(t, ixfSmall())
	t.Logf("small index: %d bytes", len(data))
	for n := range len(data) {
		var ix Index
		err := ix.UnmarshalBinary(data[:n])
		if !errors.Is(err, ErrCorruptIndex) {
			t.Fatalf("prefix of %d bytes: err = %v, want ErrCorruptIndex", n, err)
		}
		// With a valid checksum, the structure itself must be found truncated.
		if n >= 9+crcSize && n < len(data)-crcSize {
			fixed := append(bytes.Clone(data[:n]), 0, 0, 0, 0)
			err := ix.UnmarshalBinary(ixfFixCRC(fixed))
			if !errors.Is(err, ErrCorruptIndex) {
				t.Fatalf("body prefix of %d bytes with checksum: err = %v, want ErrCorruptIndex", n, err)
			}
			if !strings.Contains(err.Error(), "at byte ") {
				t.Fatalf("error does not name an offset: %v", err)
			}
		}
	}
}

func TestIndexFileByteFlips(t *testing.T) {
	orig := ixfSmall()
	data := ixfEncode(t, orig)
	buf := bytes.Clone(data)
	parsed := 0
	for i := range data {
		for x := 1; x < 256; x++ {
			buf[i] = data[i] ^ byte(x)
			var ix Index
			if err := ix.UnmarshalBinary(buf); err == nil {
				t.Fatalf("flipping byte %d with %#x: no error", i, x)
			} else if !errors.Is(err, ErrCorruptIndex) && !(i == len(indexMagic) && errors.Is(err, ErrIndexVersion)) {
				t.Fatalf("flipping byte %d with %#x: %v", i, x, err)
			}
			// With the checksum repaired the parser sees the damage: it must not panic, and
			// what it accepts must be a valid index.
			if i < len(data)-crcSize && ixfFlipMask(x) {
				if ixfCheckDecode(t, ixfFixCRC(buf)) {
					parsed++
				}
			}
		}
		buf[i] = data[i]
	}
	t.Logf("%d bytes, %d flips with repaired checksum still decoded", len(data), parsed)
}

func ixfFlipMask(x int) bool { return x&(x-1) == 0 || x == 0xff }

func TestIndexFileVersion(t *testing.T) {
	data := ixfEncode(t, ixfSmall())
	if data[len(indexMagic)] != IndexVersion {
		t.Fatalf("version byte = %d", data[len(indexMagic)])
	}
	for _, v := range []uint64{0, 1, 3, 300, math.MaxUint64} {
		bumped := append([]byte(indexMagic), binary.AppendUvarint(nil, v)...)
		bumped = append(bumped, data[len(indexMagic)+1:]...)
		for _, b := range [][]byte{bumped, ixfFixCRC(bumped)} {
			var ix Index
			err := ix.UnmarshalBinary(b)
			if !errors.Is(err, ErrIndexVersion) || errors.Is(err, ErrCorruptIndex) {
				t.Fatalf("version %d: err = %v, want ErrIndexVersion only", v, err)
			}
		}
	}
}

func TestIndexFileGarbage(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	inputs := [][]byte{
		nil, {}, []byte("i"), []byte("imgfsidx"), []byte("imgfsidx\x02"), []byte("imgfsidx\x02\x00\x00\x00"),
		[]byte("imgfsidx\x81"), []byte("imgfsidx\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"),
		[]byte("\x1f\x8b\x08\x00\x00\x00\x00\x00"), []byte(`{"entries": []}`), bytes.Repeat([]byte{0}, 4096),
		ixfFixCRC([]byte("imgfsidx\x02\x00\x00\x00\x00")),
		ixfFixCRC(append([]byte("imgfsidx\x02"), ixfRandomBytes(rng, 200)...)),
	}
	for range 200 {
		inputs = append(inputs, ixfRandomBytes(rng, rng.IntN(300)))
		inputs = append(inputs, ixfFixCRC(append([]byte("imgfsidx\x02"), ixfRandomBytes(rng, 4+rng.IntN(300))...)))
	}
	for i, in := range inputs {
		var ix Index
		if err := ix.UnmarshalBinary(in); !errors.Is(err, ErrCorruptIndex) {
			t.Fatalf("input %d (%q): err = %v, want ErrCorruptIndex", i, in[:min(len(in), 20)], err)
		}
	}
}

// ixfBody builds an index from a hand-written body, for inputs MarshalBinary cannot produce.
func ixfBody(build func(e *encoder)) []byte {
	e := encoder{buf: []byte(indexMagic)}
	e.uvarint(IndexVersion)
	build(&e)
	return ixfFixCRC(append(e.buf, 0, 0, 0, 0))
}

func ixfHeader(e *encoder, flags byte) {
	e.str(string(ixfBlob))
	e.str("")
	e.buf = append(e.buf, byte(Gzip))
	e.uvarint(100)
	e.uvarint(200)
	e.str(string(ixfDiffID))
	e.uvarint(4096)
	e.buf = append(e.buf, flags)
}

// Hostile but well-checksummed inputs fail cleanly and without big allocations.
func TestIndexFileHostile(t *testing.T) {
	huge := uint64(1) << 62
	cases := map[string]func(e *encoder){
		"huge string count": func(e *encoder) { ixfHeader(e, 7); e.uvarint(huge) },
		"huge entry count":  func(e *encoder) { ixfHeader(e, 7); e.uvarint(0); e.uvarint(huge) },
		"entry count over bytes left": func(e *encoder) {
			ixfHeader(e, 7)
			e.uvarint(0)
			e.uvarint(100)
			e.buf = append(e.buf, make([]byte, 799)...)
		},
		"huge checkpoint count": func(e *encoder) { ixfHeader(e, 7); e.uvarint(0); e.uvarint(0); e.uvarint(huge) },
		"huge string length":    func(e *encoder) { ixfHeader(e, 7); e.uvarint(1); e.uvarint(huge) },
		"bad digest": func(e *encoder) {
			e.str("sha256:xyz")
		},
		"uppercase digest": func(e *encoder) {
			e.str(strings.ToUpper(string(ixfBlob)))
		},
		"unknown compression": func(e *encoder) {
			e.str(string(ixfBlob))
			e.str("")
			e.buf = append(e.buf, 3)
		},
		"unknown header flag": func(e *encoder) { ixfHeader(e, 8) },
		"entries flagged nil": func(e *encoder) {
			ixfHeader(e, 0)
			e.uvarint(2)
			e.str("root")
			e.str("")
			e.uvarint(1)
			e.buf = append(e.buf, entSameOwner, '0', 0, 0, 0, 0, 0, 0)
			e.uvarint(0)
		},
		"string index out of range": func(e *encoder) {
			ixfHeader(e, 7)
			e.uvarint(0)
			e.uvarint(1)
			e.buf = append(e.buf, 0, '0', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
			e.uvarint(0)
		},
		"prefix longer than previous name": func(e *encoder) {
			ixfHeader(e, 7)
			e.uvarint(0)
			e.uvarint(2)
			e.buf = append(e.buf, entSameOwner, '0', 0, 1, 'a', 0, 0, 0, 0)
			e.buf = append(e.buf, entSameOwner, '0', 2, 0, 0, 0, 0, 0)
			e.uvarint(0)
		},
		"unknown entry flag": func(e *encoder) {
			ixfHeader(e, 7)
			e.uvarint(0)
			e.uvarint(1)
			e.buf = append(e.buf, 0x20, '0', 0, 0, 0, 0, 0, 0)
			e.uvarint(0)
		},
		"nanoseconds out of range": func(e *encoder) {
			ixfHeader(e, 7)
			e.uvarint(0)
			e.uvarint(1)
			e.buf = append(e.buf, entSameOwner|entNsec, '0', 0, 0, 0, 0)
			e.uvarint(1e9)
			e.buf = append(e.buf, 0, 0)
			e.uvarint(0)
		},
		"huge PAX count": func(e *encoder) {
			ixfHeader(e, 7)
			e.uvarint(0)
			e.uvarint(1)
			e.buf = append(e.buf, entSameOwner|entPAX, '0', 0, 0, 0, 0, 0, 0)
			e.uvarint(huge)
		},
		"name amplification": func(e *encoder) {
			ixfHeader(e, 7)
			e.uvarint(0)
			const n = 200_000
			e.uvarint(n)
			e.buf = append(e.buf, entSameOwner, '0', 0)
			e.str(strings.Repeat("d", 60_000))
			e.buf = append(e.buf, 0, 0, 0, 0)
			for i := 1; i < n; i++ {
				e.buf = append(e.buf, entSameOwner, '0')
				e.uvarint(60_000)
				e.str("x")
				e.buf = append(e.buf, 0, 0, 0, 0)
			}
			e.uvarint(0)
		},
		"bit flag 7 ok but unknown checkpoint flag": func(e *encoder) {
			ixfHeader(e, 7)
			e.uvarint(0)
			e.uvarint(0)
			e.uvarint(1)
			e.buf = append(e.buf, 0x27, 0, 0)
		},
		"window too long": func(e *encoder) {
			ixfHeader(e, 7)
			e.uvarint(0)
			e.uvarint(0)
			e.uvarint(1)
			e.buf = append(e.buf, cpWindow, 0, 0)
			e.uvarint(maxWindowSize + 1)
		},
		"trailing bytes": func(e *encoder) {
			ixfHeader(e, 7)
			e.uvarint(0)
			e.uvarint(0)
			e.uvarint(0)
			e.buf = append(e.buf, 0)
		},
	}
	for name, build := range cases {
		t.Run(name, func(t *testing.T) {
			data := ixfBody(build)
			var ix Index
			var err error
			allocs := testing.AllocsPerRun(1, func() { err = ix.UnmarshalBinary(data) })
			if !errors.Is(err, ErrCorruptIndex) {
				t.Fatalf("err = %v, want ErrCorruptIndex", err)
			}
			t.Logf("%v (%.0f allocs)", err, allocs)
		})
	}
	// A well-formed body accepted by the same helpers, so the cases above fail for their
	// stated reason.
	ok := ixfBody(func(e *encoder) { ixfHeader(e, 7); e.uvarint(0); e.uvarint(0); e.uvarint(0) })
	var ix Index
	if err := ix.UnmarshalBinary(ok); err != nil {
		t.Fatalf("minimal body: %v", err)
	}
}

// A window that does not inflate to its length is found where a decode starts from it, not
// when the index is read (windows stay packed until then): the index decodes, and the
// window fails as a corrupt index.
func TestIndexFileBadWindows(t *testing.T) {
	cases := map[string]func(e *encoder){
		"window inflates past its length": func(e *encoder) {
			ixfHeader(e, 7)
			e.uvarint(0)
			e.uvarint(0)
			e.uvarint(1)
			e.buf = append(e.buf, cpWindow, 0, 0)
			e.uvarint(10)
			comp := ixfDeflate(make([]byte, 1<<20))
			e.uvarint(uint64(len(comp)))
			e.buf = append(e.buf, comp...)
		},
		"window inflates short": func(e *encoder) {
			ixfHeader(e, 7)
			e.uvarint(0)
			e.uvarint(0)
			e.uvarint(1)
			e.buf = append(e.buf, cpWindow, 0, 0)
			e.uvarint(100)
			comp := ixfDeflate(make([]byte, 99))
			e.uvarint(uint64(len(comp)))
			e.buf = append(e.buf, comp...)
		},
		"bytes after window stream": func(e *encoder) {
			ixfHeader(e, 7)
			e.uvarint(0)
			e.uvarint(0)
			e.uvarint(1)
			e.buf = append(e.buf, cpWindow, 0, 0)
			e.uvarint(100)
			comp := append(ixfDeflate(make([]byte, 100)), 0)
			e.uvarint(uint64(len(comp)))
			e.buf = append(e.buf, comp...)
		},
	}
	for name, build := range cases {
		t.Run(name, func(t *testing.T) {
			var ix Index
			if err := ix.UnmarshalBinary(ixfBody(build)); err != nil {
				t.Fatalf("UnmarshalBinary: %v", err)
			}
			if _, err := ix.Checkpoints[0].window(); !errors.Is(err, ErrCorruptIndex) {
				t.Fatalf("window: %v, want ErrCorruptIndex", err)
			}
		})
	}
}

func ixfDeflate(b []byte) []byte {
	var buf bytes.Buffer
	w, _ := flate.NewWriter(&buf, flate.BestCompression)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func TestMarshalIndexRejects(t *testing.T) {
	cases := map[string]func(ix *Index){
		"empty blob digest":   func(ix *Index) { ix.BlobDigest = "" },
		"bad diffID":          func(ix *Index) { ix.DiffID = "sha256:1234" },
		"unknown compression": func(ix *Index) { ix.Compression = 3 },
		"bit 8":               func(ix *Index) { ix.Checkpoints[1].Bit = 8 },
		"window over 32 KiB":  func(ix *Index) { ix.Checkpoints[1].Window = make([]byte, 32<<10+1) },
		"names over budget": func(ix *Index) {
			long := strings.Repeat("deep/", 1000)
			var ents []Entry
			for i := range 2000 {
				ents = append(ents, Entry{Name: fmt.Sprintf("%s%04d", long, i)})
			}
			ix.TOC = NewTOC(ents)
		},
	}
	for name, mutate := range cases {
		ix := ixfSmall()
		mutate(ix)
		if data, err := ix.MarshalBinary(); err == nil {
			t.Errorf("%s: MarshalBinary succeeded (%d bytes)", name, len(data))
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	// Just inside the name budget: long names with short new suffixes still encode.
	ix := ixfSmall()
	long := strings.Repeat("d/", 250)
	var ents []Entry
	for i := range 2000 {
		ents = append(ents, Entry{Name: fmt.Sprintf("%s%04d", long, i)})
	}
	ix.TOC = NewTOC(ents)
	ixfRoundTrip(t, ix)
}

var ixfBig = sync.OnceValue(func() *Index { return ixfLayer(42, 18_000, 300_000_000, 75) })

func TestIndexFileSize(t *testing.T) {
	ix := ixfBig()
	data := ixfRoundTrip(t, ix)
	const layer = 300_000_000
	pct := 100 * float64(len(data)) / layer
	noWin := *ix
	noWin.Checkpoints = nil
	entriesOnly := ixfEncode(t, &noWin)
	var names, windows int
	for _, e := range ix.TOC.All() {
		names += len(e.Name)
	}
	for _, c := range ix.Checkpoints {
		windows += len(c.Window)
	}
	t.Logf("%d entries (%d name bytes), %d checkpoints (%d window bytes), tar %d bytes", ix.TOC.Len(), names, len(ix.Checkpoints), windows, ix.Size)
	t.Logf("encoded: %d bytes = %.3f%% of 300 MB (entries %d bytes, %.1f/entry; checkpoints %d bytes, windows %.2fx)",
		len(data), pct, len(entriesOnly), float64(len(entriesOnly))/float64(ix.TOC.Len()),
		len(data)-len(entriesOnly), float64(windows)/float64(len(data)-len(entriesOnly)))
	if pct > 1.5 {
		t.Errorf("index is %.3f%% of the layer, want <= 1.5%%", pct)
	}
}

func BenchmarkUnmarshalIndex(b *testing.B) {
	data := ixfEncode(b, ixfBig())
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		var ix Index
		if err := ix.UnmarshalBinary(data); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/decode")
}

func BenchmarkMarshalIndex(b *testing.B) {
	ix := ixfBig()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ix.MarshalBinary(); err != nil {
			b.Fatal(err)
		}
	}
}

// ixfCheckDecode decodes data; if that succeeds, the index must re-encode, decode to an
// equal index and re-encode to the same bytes. It reports whether data decoded.
func ixfCheckDecode(t testing.TB, data []byte) bool {
	t.Helper()
	var ix, lean Index
	err := ix.UnmarshalBinary(data)
	// Skipping the entries checks them all the same: the same error, or the same index
	// but for the TOC.
	leanErr := lean.UnmarshalWithoutEntries(data)
	if fmt.Sprint(err) != fmt.Sprint(leanErr) {
		t.Fatalf("UnmarshalBinary: %v, but UnmarshalWithoutEntries: %v", err, leanErr)
	}
	if err != nil {
		if !errors.Is(err, ErrCorruptIndex) && !errors.Is(err, ErrIndexVersion) {
			t.Fatalf("error wraps neither ErrCorruptIndex nor ErrIndexVersion: %v", err)
		}
		return false
	}
	if lean.TOC != nil {
		t.Fatal("UnmarshalWithoutEntries kept entries")
	}
	full := ix
	full.TOC = nil
	if !reflect.DeepEqual(&full, &lean) {
		t.Fatal("UnmarshalWithoutEntries differs from UnmarshalBinary beyond the TOC")
	}
	enc, err := ix.MarshalBinary()
	if err != nil {
		t.Fatalf("decoded index does not re-encode: %v", err)
	}
	var ix2 Index
	if err := ix2.UnmarshalBinary(enc); err != nil {
		t.Fatalf("re-encoded index does not decode: %v", err)
	}
	if !reflect.DeepEqual(&ix, &ix2) {
		t.Fatalf("decode(encode(decode(data))) != decode(data)")
	}
	if enc2, _ := ix2.MarshalBinary(); !bytes.Equal(enc, enc2) {
		t.Fatalf("encoding is not deterministic")
	}
	return true
}

func FuzzUnmarshalIndex(f *testing.F) {
	// More seeds live in testdata/fuzz/FuzzUnmarshalIndex.
	f.Add(ixfEncode(f, ixfSmall()))
	f.Add(ixfEncode(f, &Index{BlobDigest: ixfBlob, DiffID: ixfDiffID}))
	f.Add([]byte("imgfsidx\x02"))
	f.Add([]byte("not an index at all"))
	f.Add(ixfEncode(f, ixfPlain(100<<10, 8<<10)))
	f.Fuzz(func(t *testing.T, data []byte) {
		ixfCheckPlainReads(t, data)
		// Most mutations break the checksum; repair it so the parser behind it is explored.
		if len(data) > len(indexMagic)+crcSize && string(data[:len(indexMagic)]) == indexMagic {
			ixfCheckPlainReads(t, ixfFixCRC(data))
		}
	})
}

// ixfPattern is a plain blob of any size without the memory: byte i is i*7 mod 251.
type ixfPattern int64

func (p ixfPattern) ReadAt(b []byte, off int64) (int, error) {
	n := 0
	for ; n < len(b) && off+int64(n) < int64(p); n++ {
		b[n] = byte((off + int64(n)) * 7 % 251)
	}
	if n < len(b) {
		return n, io.EOF
	}
	return n, nil
}

// ixfPlain is the index of a plain ixfPattern blob of size bytes, with pieces of span.
func ixfPlain(size, span int64) *Index {
	ix := &Index{BlobDigest: ixfBlob, DiffID: ixfDiffID, Size: size, BlobSize: size, SpanSize: span, Checkpoints: []Checkpoint{{}}}
	cp := &ix.Checkpoints[0]
	pieces(0, size, span, func(s, e int64) {
		b := make([]byte, e-s)
		ixfPattern(size).ReadAt(b, s)
		cp.CRCs = append(cp.CRCs, crc32.Checksum(b, castagnoli))
	})
	return ix
}

// ixfCheckPlainReads decodes data as ixfCheckDecode does and, for a plain layer's index
// that decodes, reads the ixfPattern blob through it: a Reader may refuse the index or a
// read, but every byte it returns lies in a piece whose CRC the index really has.
func ixfCheckPlainReads(t *testing.T, data []byte) {
	if !ixfCheckDecode(t, data) {
		return
	}
	var ix Index
	if err := ix.UnmarshalWithoutEntries(data); err != nil || ix.Compression != Uncompressed || ix.Size > 1<<20 {
		return
	}
	blob := ixfPattern(ix.BlobSize)
	r, err := NewReader(blob, &ix, NewCache(1<<20))
	if err != nil {
		return
	}
	defer r.Close()
	var want []uint32
	pieces(0, ix.Size, ix.SpanSize, func(s, e int64) {
		b := make([]byte, e-s)
		blob.ReadAt(b, s)
		want = append(want, crc32.Checksum(b, castagnoli))
	})
	buf := make([]byte, 5000)
	for _, off := range []int64{0, ix.Size / 3, ix.Size - 100, ix.Size - 1} {
		n, _ := r.ReadAt(buf, max(off, 0))
		k := 0
		pieces(0, ix.Size, ix.SpanSize, func(s, e int64) {
			if n > 0 && s < max(off, 0)+int64(n) && e > max(off, 0) && ix.Checkpoints[0].CRCs[k] != want[k] {
				t.Fatalf("read at %d returned %d bytes, through piece %d-%d whose CRC the index does not have", off, n, s, e)
			}
			k++
		})
	}
}
