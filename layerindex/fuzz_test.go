package layerindex

import (
	"bytes"
	"io"
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
