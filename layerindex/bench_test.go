package layerindex

import (
	"bytes"
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
