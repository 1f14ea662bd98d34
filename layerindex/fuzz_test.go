package layerindex

import (
	"archive/tar"
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

// FuzzBuild: the TOC builder on arbitrary bytes never panics, and whatever it accepts reads
// back through a Reader as the bytes it hashed.
func FuzzBuild(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("not a tar"))
	f.Fuzz(func(t *testing.T, blob []byte) {
		ix, err := Build(bytes.NewReader(blob), BuildOptions{SpanSize: 1 << 10})
		if err != nil {
			return
		}
		r, err := NewReader(bytes.NewReader(blob), ix, NewCache(4<<10))
		if err != nil {
			t.Fatalf("index of an accepted blob is refused by NewReader: %v", err)
		}
		defer r.Close()
		all, err := io.ReadAll(io.NewSectionReader(r, 0, r.Size()))
		if err != nil {
			t.Fatalf("reading an accepted blob: %v", err)
		}
		if digest.FromBytes(all) != ix.DiffID {
			t.Fatal("bytes read back do not hash to the diffID")
		}
		if int64(len(all)) != ix.Size {
			t.Fatalf("read %d bytes of %d", len(all), ix.Size)
		}
		for _, e := range ix.TOC.All() {
			if e.Offset < 0 || e.Offset > ix.Size {
				t.Fatalf("entry %q at offset %d outside the stream", e.Name, e.Offset)
			}
		}
	})
}

// FuzzCheckHeader: CheckHeader never panics, whatever the stream and the entry, and passes
// only an entry whose data starts on a block boundary after a header.
func FuzzCheckHeader(f *testing.F) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	long := strings.Repeat("long-name/", 30) + "file"
	for _, h := range []*tar.Header{
		{Name: "file", Size: 5},
		{Name: long, Size: 5, Format: tar.FormatPAX},
		{Name: long, Size: 5, Format: tar.FormatGNU},
		{Name: "grüße", Size: 5, Format: tar.FormatPAX},
	} {
		h.Typeflag, h.Mode = tar.TypeReg, 0o644
		tw.WriteHeader(h)
		tw.Write([]byte("data\n"))
	}
	tw.Close()
	ix, err := Build(bytes.NewReader(buf.Bytes()), BuildOptions{})
	if err != nil {
		f.Fatal(err)
	}
	for _, e := range ix.TOC.All() {
		f.Add(buf.Bytes(), e.Name, e.Type, e.Size, e.Offset)
	}
	f.Add([]byte{}, "", byte(0), int64(0), int64(0))
	f.Fuzz(func(t *testing.T, stream []byte, name string, typ byte, size, off int64) {
		e := Entry{Name: name, Type: typ, Size: size, Offset: off}
		if CheckHeader(bytes.NewReader(stream), e) == nil && (off < blockSize || off%blockSize != 0) {
			t.Fatalf("entry at offset %d passes", off)
		}
		// The quick path agrees with archive/tar wherever it decides.
		if off >= blockSize && off <= int64(len(stream)) {
			var blk [blockSize]byte
			copy(blk[:], stream[off-blockSize:off])
			if ustarMatches(&blk, &e) {
				h, err := tar.NewReader(bytes.NewReader(blk[:])).Next()
				if err != nil || h.Name != name || h.Typeflag != typ || h.Size != size {
					t.Fatalf("ustarMatches passes %q %q %d, archive/tar reads %+v, %v", name, typ, size, h, err)
				}
			}
		}
	})
}
