package layerindex

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
)

// An index is checksummed, not authenticated: NewReader must refuse numbers that would size
// a slice or a loop beyond reason, quickly.
func TestHostileIndex(t *testing.T) {
	idx := func(size, span int64, crcs int, out int64) *Index {
		return &Index{BlobDigest: digest.FromString("x"), Compression: Gzip, BlobSize: 100, Size: size, SpanSize: span,
			Checkpoints: []Checkpoint{{Out: out, Member: true, CRCs: make([]uint32, crcs)}}}
	}
	for name, ix := range map[string]*Index{
		"negative size":           idx(-5, DefaultSpanSize, 1, 0),
		"span size 0":             idx(1<<20, 0, 1, 0),
		"span size huge":          idx(1<<50, 1<<50, 1, 0),
		"too few checksums":       idx(1<<40, 1, 0, 0),
		"checkpoint past the end": idx(1<<20, DefaultSpanSize, 1, 1<<30),
		"negative checkpoint":     idx(1<<20, DefaultSpanSize, 1, -1),
	} {
		start := time.Now()
		if _, err := NewReader(bytes.NewReader(nil), ix, NewCache(0)); err == nil {
			t.Errorf("%s: accepted", name)
		}
		if d := time.Since(start); d > 100*time.Millisecond {
			t.Errorf("%s: refusing took %v", name, d)
		}
	}
	// pieces never overflows, however near the top of int64, and agrees with pieceCount.
	for _, c := range [][3]int64{{math.MaxInt64 - 100, math.MaxInt64, 7}, {0, math.MaxInt64, 1 << 62}, {5, 5 + 2*MaxSpanSize + 1, MaxSpanSize}} {
		last, n := c[0], int64(0)
		pieces(c[0], c[1], c[2], func(s, e int64) {
			if e <= s || s != last {
				t.Fatalf("pieces%v: [%d, %d) after %d", c, s, e, last)
			}
			last, n = e, n+1
		})
		if last != c[1] || n != pieceCount(c[1]-c[0], c[2]) {
			t.Errorf("pieces%v: %d pieces ending at %d, pieceCount says %d", c, n, last, pieceCount(c[1]-c[0], c[2]))
		}
	}
}

// A fill that panics must not leave a pending entry behind for later readers to wait on.
func TestCachePanickingFill(t *testing.T) {
	c := NewCache(0)
	key := spanKey{blob: digest.FromString("x")}
	func() {
		defer func() { recover() }()
		c.get(key, false, func() ([]byte, error) { panic("boom") })
	}()
	done := make(chan []byte)
	go func() {
		e, err := c.get(key, false, func() ([]byte, error) { return []byte("ok"), nil })
		if err != nil {
			t.Error(err)
			done <- nil
			return
		}
		done <- bytes.Clone(e.data)
		c.release(e)
	}()
	select {
	case b := <-done:
		if string(b) != "ok" {
			t.Errorf("got %q", b)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a reader hangs on the entry of a fill that panicked")
	}
}

type countingAt struct {
	r      io.ReaderAt
	starts atomic.Int64 // reads at offset 0: decoders opened at the start of the stream
}

func (c *countingAt) ReadAt(p []byte, off int64) (int, error) {
	if off == 0 {
		c.starts.Add(1)
	}
	return c.r.ReadAt(p, off)
}

// Pairs of concurrent reads over a single-frame zstd layer, as the kernel's read-ahead sends
// them through FUSE: one decoder goes through the stream once; no span is decoded twice.
func TestSequentialLayerDecodedOnce(t *testing.T) {
	data := goTar(t)
	enc, _ := zstd.NewWriter(nil)
	blob := enc.EncodeAll(data, nil)
	enc.Close()
	ix := build(t, blob, 64<<10)
	if !ix.Sequential {
		t.Fatal("a single-frame zstd layer is not marked sequential")
	}
	ca := &countingAt{r: bytes.NewReader(blob)}
	r, err := NewReader(ca, ix, NewCache(0))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	const chunk = 128 << 10
	for off := int64(0); off < int64(len(data)); off += 2 * chunk {
		var wg sync.WaitGroup
		for _, o := range []int64{off + chunk, off} {
			wg.Add(1)
			go func(o int64) {
				defer wg.Done()
				p := make([]byte, chunk)
				n, err := r.ReadAt(p, o)
				if err != nil && err != io.EOF || !bytes.Equal(p[:n], data[o:o+int64(n)]) {
					t.Errorf("read at %d: %d bytes, %v", o, n, err)
				}
			}(o)
		}
		wg.Wait()
	}
	if n := ca.starts.Load(); n != 1 {
		t.Errorf("%d decoders started at the beginning of the stream, want 1", n)
	}
}

// A single-frame zstd layer damaged in its middle: the first read past the damage decodes
// from the start of the stream and fails; later reads past it fail at once, with the same
// error, decoding nothing.
func TestBadSpanFailsAtOnce(t *testing.T) {
	data := goTar(t)
	enc, _ := zstd.NewWriter(nil)
	blob := enc.EncodeAll(data, nil)
	enc.Close()
	ix := build(t, blob, 64<<10)
	damaged := bytes.Clone(blob)
	damaged[len(damaged)*2/3] ^= 0x01
	ca := &countingAt{r: bytes.NewReader(damaged)}
	r, err := NewReader(ca, ix, NewCache(1<<20))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	counts := countDecodes(t, r)
	p := make([]byte, 64<<10)
	bad, first := int64(-1), error(nil)
	for off := int64(0); off < r.Size(); off += int64(len(p)) {
		if _, err := r.ReadAt(p, off); err != nil && err != io.EOF {
			bad, first = off, err
			break
		}
	}
	if bad < 0 {
		t.Fatal("no read failed on a damaged layer")
	}
	r.ahead.Wait()
	starts, decoded := ca.starts.Load(), counts.decoded.Load()
	for _, off := range []int64{bad, bad + 1000, r.Size() - 100} {
		if _, err := r.ReadAt(p[:100], off); err == nil || err.Error() != first.Error() {
			t.Errorf("read at %d past the damage: %v, want %v", off, err, first)
		}
	}
	r.ahead.Wait()
	if s, d := ca.starts.Load()-starts, counts.decoded.Load()-decoded; s != 0 || d != 0 {
		t.Errorf("reads past known damage started %d decoders and decoded %d spans, want none", s, d)
	}
	// What comes before the damage still reads.
	if n, err := r.ReadAt(p, 0); err != nil || !bytes.Equal(p[:n], data[:n]) {
		t.Errorf("read at 0: %d bytes, %v", n, err)
	}
}

// After Close no read-ahead runs and no decoder stays parked.
func TestCloseStopsReadAhead(t *testing.T) {
	data := goTar(t)
	blob := gzipLevel(t, data, 6)
	ix := build(t, blob, 64<<10)
	c := NewCache(0)
	r, err := NewReader(bytes.NewReader(blob), ix, c)
	if err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 10)
	r.ReadAt(p, 0)
	r.ReadAt(p, r.spans[1].start) // sequential: starts read-ahead
	r.Close()
	if len(c.decoders) != 0 {
		t.Error("read-ahead still running after Close")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.parked != nil {
		t.Errorf("a decoder is parked after Close (at span %d)", r.parked.next)
	}
}

// A zstd stream cut inside a frame header is truncated, not complete.
func TestTruncatedZstdFrameHeader(t *testing.T) {
	blob := zstdCLI(t, goTar(t))
	for _, tail := range [][]byte{{0x28, 0xb5, 0x2f, 0xfd}, {0x28, 0xb5, 0x2f, 0xfd, 0x00}, {0x50, 0x2a, 0x4d, 0x18}} {
		b := append(bytes.Clone(blob), tail...)
		_, err := Build(bytes.NewReader(b), BuildOptions{})
		if !errors.Is(err, io.ErrUnexpectedEOF) || !strings.Contains(err.Error(), "truncated") {
			t.Errorf("tail % x: %v, want a truncation error", tail, err)
		}
	}
}

// A whole layer read in order, twice, through a cache of a few spans decodes into a few
// buffers used again and again, not one buffer per span. Readers at random offsets at the
// same time, which hold spans while they copy and make buffers of their own, still get the
// right bytes.
func TestCacheReusesBuffers(t *testing.T) {
	data := goTar(t)
	blob := gzipLevel(t, data, 6)
	span := int64(len(data) / 32) // spans long beside DEFLATE blocks, as in real layers
	ix := build(t, blob, span)
	c := NewCache(4 * bufCap(span+1))
	r, err := NewReader(bytes.NewReader(blob), ix, c)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	made := func() int {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.free.made
	}
	sequential := func() {
		t.Helper()
		var got bytes.Buffer
		if _, err := io.Copy(&got, io.NewSectionReader(r, 0, r.Size())); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Bytes(), data) {
			t.Fatal("sequential read differs")
		}
	}

	sequential()
	sequential()
	// Without reuse, a buffer per span decoded. With it, the buffers of the cache, of the
	// decoders ahead, of the reader and the free ones, and a few made when no free one was
	// long enough.
	if n := made(); n > len(r.spans)/2 {
		t.Errorf("%d buffers made for %d spans read twice", n, len(r.spans))
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := 0; g < 3; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 3))
			p := make([]byte, 100<<10)
			for {
				select {
				case <-stop:
					return
				default:
				}
				off := rng.Int64N(int64(len(data)))
				n, err := r.ReadAt(p, off)
				if err != nil && err != io.EOF || !bytes.Equal(p[:n], data[off:off+int64(n)]) {
					t.Errorf("random read at %d: %d bytes, %v: wrong", off, n, err)
					return
				}
			}
		}(g)
	}
	sequential()
	sequential()
	close(stop)
	wg.Wait()
}

// A reader going forward in FUSE-sized reads, with the decoders working far ahead of it
// in a cache with little room to spare, gets every span decoded once: the spans decoded
// ahead are not pushed out by the ones it has left behind.
func TestReadAheadDecodesOnce(t *testing.T) {
	data := goTar(t)
	blob := gzipLevel(t, data, 6)
	ix := build(t, blob, 256<<10)
	r, err := NewReader(bytes.NewReader(blob), ix, NewCache(6*bufCap(256<<10+1)))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	counts := countDecodes(t, r)
	p := make([]byte, 16<<10)
	for off := int64(0); off < r.Size(); off += int64(len(p)) {
		n, err := r.ReadAt(p, off)
		if err != nil && err != io.EOF || !bytes.Equal(p[:n], data[off:off+int64(n)]) {
			t.Fatalf("read at %d: %d bytes, %v", off, n, err)
		}
	}
	// One span decoded twice is the scheduler's doing on a loaded machine (a decoder ahead
	// that runs late); spans pushed out by those left behind would be many.
	if got := counts.decoded.Load(); got < int64(len(r.spans)) || got > int64(len(r.spans))+1 {
		t.Errorf("%d spans decoded for %d spans read once in order", got, len(r.spans))
	}
}

// Spans decoded ahead stay while spans already read go: a reader going forward wants the
// former next.
func TestCacheKeepsSpansAhead(t *testing.T) {
	const size = 100 << 10
	c := NewCache(3 * bufCap(size))
	key := func(i int64) spanKey {
		return spanKey{blob: digest.FromString("x"), start: i * size, end: (i + 1) * size}
	}
	c.put(key(1), make([]byte, size)) // decoded ahead
	c.put(key(2), make([]byte, size))
	for _, i := range []int64{0, 3} { // read, and the reader moves on
		e, err := c.get(key(i), false, func() ([]byte, error) { return c.alloc(size), nil })
		if err != nil {
			t.Fatal(err)
		}
		c.release(e)
	}
	if !c.has(key(1)) || !c.has(key(2)) || c.has(key(0)) || !c.has(key(3)) {
		t.Errorf("cache holds spans 0-3: %v %v %v %v, want false true true true", c.has(key(0)), c.has(key(1)), c.has(key(2)), c.has(key(3)))
	}
}

// A span decoded ahead that no reader comes for (the reader stopped) does not stay for
// good: it goes once many spans came in after it.
func TestCacheForgetsStaleSpansAhead(t *testing.T) {
	const size = 100 << 10
	c := NewCache(3 * bufCap(size))
	key := func(i int64) spanKey {
		return spanKey{blob: digest.FromString("x"), start: i * size, end: (i + 1) * size}
	}
	c.put(key(0), make([]byte, size)) // decoded ahead, never read
	for i := int64(1); i < 20; i++ {  // random reads elsewhere
		e, err := c.get(key(i), false, func() ([]byte, error) { return c.alloc(size), nil })
		if err != nil {
			t.Fatal(err)
		}
		c.release(e)
	}
	if c.has(key(0)) {
		t.Error("a span decoded ahead and never read is still cached after 19 others came in")
	}
	if !c.has(key(19)) || !c.has(key(18)) {
		t.Error("the spans read last are not cached")
	}
}

// A decoder ahead that gives up on a span (its reader went past it) does not fail a
// caller waiting for the same span: that caller decodes it itself.
func TestCacheAbandonedFill(t *testing.T) {
	c := NewCache(0)
	key := spanKey{blob: digest.FromString("x")}
	started, giveUp := make(chan struct{}), make(chan struct{})
	go c.get(key, true, func() ([]byte, error) {
		close(started)
		<-giveUp
		return nil, errAbandoned
	})
	<-started
	done := make(chan error)
	go func() {
		e, err := c.get(key, false, func() ([]byte, error) { return []byte("mine"), nil })
		if err == nil {
			if string(e.data) != "mine" {
				err = fmt.Errorf("got %q", e.data)
			}
			c.release(e)
		}
		done <- err
	}()
	time.Sleep(20 * time.Millisecond) // the second caller waits on the pending span
	close(giveUp)
	if err := <-done; err != nil {
		t.Fatalf("waiting caller: %v", err)
	}
}

// decodeCounts are what countDecodes counts of one Reader: spans decoded, of which by
// ISA-L, and spans ISA-L failed on.
type decodeCounts struct{ decoded, isal, isalFailed atomic.Int64 }

// countDecodes counts what r decodes until the test ends.
func countDecodes(t testing.TB, r *Reader) *decodeCounts {
	c := new(decodeCounts)
	testHookDecoded = func(rr *Reader, isal bool) {
		if rr == r {
			c.decoded.Add(1)
			if isal {
				c.isal.Add(1)
			}
		}
	}
	testHookISALFailed = func(rr *Reader) {
		if rr == r {
			c.isalFailed.Add(1)
		}
	}
	t.Cleanup(func() { r.Close(); testHookDecoded, testHookISALFailed = nil, nil })
	return c
}
