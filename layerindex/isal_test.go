//go:build isal && cgo

package layerindex

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"testing"
)

// Built with ISA-L, gzip spans are decoded by it, member starts included, and the bytes are
// the same; spans it cannot do (running into the next member) still read right.
func TestISALDecodes(t *testing.T) {
	for _, v := range variants(t) {
		if v.name == "plain" || v.name == "zstd-single" || v.name == "zstd-multi" {
			continue
		}
		// Input read in pieces as long as the bench's, and in pieces of 977 bytes, which
		// split blocks, member ends and trailers.
		for _, piece := range []int{isalPiece, 977} {
			t.Run(fmt.Sprintf("%s/piece=%d", v.name, piece), func(t *testing.T) {
				defer func(old int) { isalPiece = old }(isalPiece)
				isalPiece = piece
				testISALDecodes(t, v.blob, v.tar)
			})
		}
	}
}

func testISALDecodes(t *testing.T, blob, tar []byte) {
	ix := build(t, blob, testSpan)
	r, err := NewReader(bytes.NewReader(blob), ix, NewCache(1<<20))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	counts := countDecodes(t, r)
	var got bytes.Buffer
	if _, err := io.Copy(&got, io.NewSectionReader(r, 0, r.Size())); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), tar) {
		t.Fatal("bytes differ")
	}
	// The first span starts at a gzip header, which ISA-L reads too.
	if in, ok := r.isalInput(0); !ok {
		t.Error("span 0 (a gzip member start) is not ISA-L's")
	} else if b, err := r.decodeISAL(0, in); err != nil {
		t.Errorf("ISA-L on span 0: %v", err)
	} else if err == nil && !bytes.Equal(b, tar[:len(b)]) {
		t.Error("ISA-L decodes span 0 wrong")
	}
	// ISA-L decodes every span that is a whole interval, through member ends
	// (gzip-multi) too: none falls back to our inflater.
	whole := int64(1) // span 0 again, above
	for _, sp := range r.spans {
		if !sp.split {
			whole++
		}
	}
	if n, failed := counts.isal.Load(), counts.isalFailed.Load(); n < whole || failed > 0 {
		t.Errorf("ISA-L decoded %d spans and failed on %d; want all %d whole intervals of %d spans",
			n, failed, whole, len(r.spans))
	}
}

// FuzzISALSpans decodes the spans of a gzip layer, corrupted or not, with ISA-L (its input
// read in pieces of any length) and through the Reader: whatever either returns without an
// error is the layer's bytes. ISA-L parses
// untrusted blobs in C; the span's CRC-32C is what stands between it and wrong bytes.
func FuzzISALSpans(f *testing.F) {
	f.Add([]byte("hello, layer"), uint8(6), uint8(0), uint16(0), uint8(0), uint16(65000))
	f.Add([]byte("members"), uint8(1), uint8(3), uint16(0), uint8(0), uint16(100))
	f.Add([]byte("corrupt"), uint8(9), uint8(2), uint16(700), uint8(0x10), uint16(3000))
	f.Fuzz(func(t *testing.T, content []byte, level, members uint8, at uint16, xor uint8, piece uint16) {
		defer func(old int) { isalPiece = old }(isalPiece)
		isalPiece = 16 + int(piece) // input read in pieces of any length
		if len(content) == 0 {
			content = []byte{0}
		}
		body := bytes.Repeat(content, 16<<10/len(content)+1)
		var tb bytes.Buffer
		tw := tar.NewWriter(&tb)
		tw.WriteHeader(&tar.Header{Name: "f", Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg})
		tw.Write(body)
		tw.Close()
		layer := tb.Bytes()
		var blob []byte
		n := int(members%4) + 1
		step := len(layer)/n + 1
		for i := 0; i < len(layer); i += step {
			blob = append(blob, gzipLevel(t, layer[i:min(i+step, len(layer))], int(level%10))...)
		}
		ix, err := Build(bytes.NewReader(blob), BuildOptions{SpanSize: 1 << 10})
		if err != nil {
			t.Fatal(err)
		}
		if xor != 0 {
			blob = bytes.Clone(blob)
			blob[int(at)%len(blob)] ^= xor
		}
		r, err := NewReader(bytes.NewReader(blob), ix, NewCache(64<<10))
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		for i, s := range r.spans {
			if in, ok := r.isalInput(i); ok {
				if got, err := r.decodeISAL(i, in); err == nil && !bytes.Equal(got, layer[s.start:s.end]) {
					t.Fatalf("ISA-L returned wrong bytes for span %d", i)
				}
			}
		}
		got := make([]byte, len(layer))
		_, err = r.ReadAt(got, 0)
		switch {
		case err == nil && !bytes.Equal(got, layer):
			t.Fatal("the Reader returned wrong bytes")
		case err != nil && xor == 0:
			t.Fatalf("intact layer: %v", err)
		}
	})
}
