package chunks

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

func chunkOf(d digest.Digest, i int64, n int) []byte {
	p := []byte(fmt.Sprintf("%s/%d;", d.Encoded()[:8], i))
	return bytes.Repeat(p, n/len(p)+1)[:n]
}

// TestSharedDir: two caches over one directory (two mounts of a store), putting and
// getting the same chunks at once, never see a part of a chunk, and each finds what the
// other put.
func TestSharedDir(t *testing.T) {
	dir := t.TempDir()
	a, b := New(dir, 4096, 0), New(dir, 4096, 0)
	d := digest.FromString("blob")
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w, c := range []*Cache{a, b, a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 4096)
			for i := range int64(200) {
				want := chunkOf(d, i%20, 4096)
				if w%2 == 0 {
					if err := c.Put(d, i%20, want); err != nil {
						errs <- err
						return
					}
				}
				if c.Get(d, i%20, buf) && !bytes.Equal(buf, want) {
					errs <- fmt.Errorf("chunk %d: a part or another's bytes", i%20)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	for i := range int64(20) {
		if !b.Get(d, i, buf) || !bytes.Equal(buf, chunkOf(d, i, 4096)) {
			t.Fatalf("chunk %d missing or wrong", i)
		}
	}
	if tmps, _ := filepath.Glob(filepath.Join(dir, "*", "*", ".tmp-*")); len(tmps) > 0 {
		t.Fatalf("temp files left: %v", tmps)
	}
}

// TestBound: past its bound the cache drops the chunks least recently used (put or got),
// a new cache over the directory (a restarted daemon) finds the rest, and one with a
// smaller bound trims the directory on first use.
func TestBound(t *testing.T) {
	dir := t.TempDir()
	c := New(dir, 1000, 10_000)
	d := digest.FromString("blob")
	old := time.Now().Add(-time.Hour)
	for i := range int64(10) {
		if err := c.Put(d, i, chunkOf(d, i, 1000)); err != nil {
			t.Fatal(err)
		}
		// Ages apart, as mtimes may be equal within a test's speed.
		os.Chtimes(filepath.Join(dir, "sha256", d.Encoded(), fmt.Sprint(i)), old, old.Add(time.Duration(i)*time.Second))
	}
	buf := make([]byte, 1000)
	if !c.Get(d, 0, buf) { // now the most recent
		t.Fatal("chunk 0 missing")
	}
	if err := c.Put(d, 10, chunkOf(d, 10, 1000)); err != nil { // over the bound
		t.Fatal(err)
	}
	if used := c.Used(); used > 10_000 {
		t.Fatalf("%d bytes cached, bound 10000", used)
	}
	if !c.Has(d, 0, 1000) || !c.Has(d, 10, 1000) {
		t.Fatal("the most recently used chunks were dropped")
	}
	if c.Has(d, 1, 1000) {
		t.Fatal("the least recently used chunk was kept")
	}
	if got := New(dir, 1000, 0); !got.Get(d, 10, buf) || !bytes.Equal(buf, chunkOf(d, 10, 1000)) {
		t.Fatal("a new cache over the directory does not find chunk 10")
	}
	small := New(dir, 1000, 3000)
	small.Get(d, 10, buf)
	if used := small.Used(); used > 3000 {
		t.Fatalf("a cache bound to 3000 bytes left %d in its directory", used)
	}
}

// TestReadAt: a part of a chunk is read straight from its file; a chunk of another length
// than asked for, or a part past its end, is a miss; a hit moves the chunk's mtime (its
// LRU recency) only once it is touchResolution old.
func TestReadAt(t *testing.T) {
	dir := t.TempDir()
	c := New(dir, 1000, 0)
	d := digest.FromString("blob")
	want := chunkOf(d, 3, 1000)
	if err := c.Put(d, 3, want); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 100)
	if !c.ReadAt(d, 3, 1000, p, 900) || !bytes.Equal(p, want[900:]) {
		t.Fatalf("the last 100 bytes: %q, want %q", p, want[900:])
	}
	for name, ok := range map[string]bool{
		"another length": c.ReadAt(d, 3, 999, p[:10], 0),
		"past the end":   c.ReadAt(d, 3, 1000, p, 901),
		"negative":       c.ReadAt(d, 3, 1000, p, -1),
		"another chunk":  c.ReadAt(d, 4, 1000, p, 0),
	} {
		if ok {
			t.Errorf("%s: a hit", name)
		}
	}
	path := filepath.Join(dir, "sha256", d.Encoded(), "3")
	recent := time.Now().Add(-touchResolution / 2).Truncate(time.Second)
	os.Chtimes(path, recent, recent)
	c.ReadAt(d, 3, 1000, p, 0)
	if fi, err := os.Stat(path); err != nil || !fi.ModTime().Equal(recent) {
		t.Fatalf("a hit on a chunk used %v ago moved its mtime", touchResolution/2)
	}
	old := time.Now().Add(-2 * touchResolution)
	os.Chtimes(path, old, old)
	c.ReadAt(d, 3, 1000, p, 0)
	if fi, err := os.Stat(path); err != nil || time.Since(fi.ModTime()) > touchResolution {
		t.Fatal("a hit on a chunk used long ago left its mtime")
	}
}
