package layerindex

import (
	"bytes"
	"fmt"
	"io"
	"testing"

	"github.com/klauspost/compress/gzip"
)

// BenchmarkBuild indexes a gzip layer; the baseline is a plain gunzip of the same blob by
// klauspost/compress in the same run.
func BenchmarkBuild(b *testing.B) {
	data := goTar(b)
	blob := gzipLevel(b, data, 6)
	b.Run("build", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for i := 0; i < b.N; i++ {
			if _, err := Build(bytes.NewReader(blob), BuildOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("gunzip-klauspost", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for i := 0; i < b.N; i++ {
			zr, _ := gzip.NewReader(bytes.NewReader(blob))
			io.Copy(io.Discard, zr)
		}
	})
}

// BenchmarkPlainRead reads a plain layer through a Reader, which checks the CRC of every
// piece a read touches, in reads of the sizes FUSE sends at offsets that are not piece
// aligned (as a file's data in a tar is not); the baseline is the same reads of the blob
// itself in the same run. The blob is in memory: the worst case for the checks' share.
func BenchmarkPlainRead(b *testing.B) {
	data := goTar(b)
	ix := build(b, data, DefaultSpanSize)
	for _, size := range []int{4 << 10, 128 << 10, 1 << 20} {
		p := make([]byte, size)
		run := func(b *testing.B, r io.ReaderAt) {
			b.SetBytes(int64(size))
			off := int64(512)
			for i := 0; i < b.N; i++ {
				if off+int64(size) > int64(len(data)) {
					off = 512
				}
				if _, err := r.ReadAt(p, off); err != nil {
					b.Fatal(err)
				}
				off += int64(size) + 512
			}
		}
		b.Run(fmt.Sprintf("reader-%dk", size>>10), func(b *testing.B) {
			r, err := NewReader(bytes.NewReader(data), ix, NewCache(0))
			if err != nil {
				b.Fatal(err)
			}
			run(b, r)
		})
		b.Run(fmt.Sprintf("blob-%dk", size>>10), func(b *testing.B) { run(b, bytes.NewReader(data)) })
	}
}

// BenchmarkCheckHeader checks every entry of a layer once per iteration, as a full walk of
// a mount does, through a Reader over the plain and the gzip layer (spans cached: the
// walk's data reads decode them anyway); the baseline is the walk's first read of each
// file (up to 128 KiB, FUSE's read size) through the same Reader in the same run.
func BenchmarkCheckHeader(b *testing.B) {
	data := goTar(b)
	for _, layer := range []struct {
		name string
		blob []byte
	}{{"plain", data}, {"gzip", gzipLevel(b, data, 6)}} {
		ix := build(b, layer.blob, DefaultSpanSize)
		r, err := NewReader(bytes.NewReader(layer.blob), ix, NewCache(64<<20))
		if err != nil {
			b.Fatal(err)
		}
		entries := ix.TOC.Entries()
		p := make([]byte, 128<<10)
		b.Run(layer.name+"/check", func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				for j := range entries {
					if entries[j].Size > 0 {
						if err := CheckHeader(r, entries[j]); err != nil {
							b.Fatal(err)
						}
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(entries)), "ns/entry")
		})
		b.Run(layer.name+"/first-read", func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				for j := range entries {
					if e := &entries[j]; e.Size > 0 {
						if _, err := r.ReadAt(p[:min(e.Size, int64(len(p)))], e.Offset); err != nil {
							b.Fatal(err)
						}
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(entries)), "ns/entry")
		})
		r.Close()
	}
}
