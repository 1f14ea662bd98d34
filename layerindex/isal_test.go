//go:build isal && cgo

package layerindex

import (
	"bytes"
	"io"
	"testing"
)

// Built with ISA-L, gzip spans are decoded by it, and the bytes are the same; spans it
// cannot do (member starts, spans running into the next member) still read right.
func TestISALDecodes(t *testing.T) {
	for _, v := range variants(t) {
		if v.name == "plain" || v.name == "zstd-single" || v.name == "zstd-multi" {
			continue
		}
		t.Run(v.name, func(t *testing.T) {
			ix := build(t, v.blob, testSpan)
			r, err := NewReader(bytes.NewReader(v.blob), ix, NewCache(1<<20))
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			var got bytes.Buffer
			if _, err := io.Copy(&got, io.NewSectionReader(r, 0, r.Size())); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Bytes(), v.tar) {
				t.Fatal("bytes differ")
			}
			// Members shorter than a span (gzip-multi) leave ISA-L few spans of its own.
			if n := r.isalDecoded.Load(); n < int64(len(r.spans))/2 && v.name != "gzip-multi" || n == 0 {
				t.Errorf("ISA-L decoded %d of %d spans", n, len(r.spans))
			}
		})
	}
}
