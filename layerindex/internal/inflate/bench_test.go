package inflate

import (
	"bytes"
	"compress/gzip"
	"io"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	kgzip "github.com/klauspost/compress/gzip"
)

// The benchmark input is a ~64 MiB tar like a container layer: Go source, Go binaries,
// Perl modules, locale data and (already gzipped) man pages; gzipped at level 6 by
// compress/gzip, once per process.
var (
	benchOnce sync.Once
	benchRaw  []byte
	benchGz   []byte
)

func benchData(b *testing.B) ([]byte, []byte) {
	benchOnce.Do(func() {
		goroot := runtime.GOROOT()
		benchRaw = buildTar(b,
			tarRoot{filepath.Join(goroot, "src"), 28 << 20},
			tarRoot{filepath.Join(goroot, "pkg"), 16 << 20},
			tarRoot{"/usr/share/perl", 10 << 20},
			tarRoot{"/usr/share/i18n", 6 << 20},
			tarRoot{"/usr/share/man", 4 << 20})
		benchGz = gzipBytes(b, benchRaw, 6)
	})
	return benchRaw, benchGz
}

func BenchmarkGunzip(b *testing.B) {
	raw, gz := benchData(b)
	b.Logf("tar %d bytes, gzip %d bytes", len(raw), len(gz))
	run := func(b *testing.B, open func(io.Reader) (io.Reader, error)) {
		b.SetBytes(int64(len(raw)))
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			zr, err := open(bytes.NewReader(gz))
			if err != nil {
				b.Fatal(err)
			}
			n, err := io.Copy(io.Discard, zr)
			if err != nil || n != int64(len(raw)) {
				b.Fatal(n, err)
			}
		}
	}
	b.Run("ours", func(b *testing.B) {
		run(b, func(r io.Reader) (io.Reader, error) { return NewGzipReader(r, 0, nil) })
	})
	b.Run("klauspost", func(b *testing.B) {
		run(b, func(r io.Reader) (io.Reader, error) { return kgzip.NewReader(r) })
	})
	b.Run("stdlib", func(b *testing.B) {
		run(b, func(r io.Reader) (io.Reader, error) { return gzip.NewReader(r) })
	})
}

func BenchmarkGunzipCheckpoints(b *testing.B) {
	raw, gz := benchData(b)
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var cps int
		zr, err := NewGzipReader(bytes.NewReader(gz), 4<<20, func(Checkpoint) { cps++ })
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, zr)
		if err != nil || n != int64(len(raw)) {
			b.Fatal(n, err)
		}
		b.ReportMetric(float64(cps), "checkpoints")
	}
}
