// Package chunks is the on-disk cache of blob bytes fetched from registries: fixed-size
// chunks per blob digest, under the store's .imgfs/cache/ALG/HEX/N, each written whole to
// a temp file and renamed into place, so that two mounts of one store share the cache (a
// reader sees a whole chunk or none), and a daemon's restart finds what it fetched. It is
// bounded by a byte count, least recently used first out, recency being the file's mtime
// (moved by a hit, at most every touchResolution), which every process sharing the
// directory sees.
package chunks

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
)

// DefaultChunkSize is the size of a chunk: a Range request fetches whole chunks, so it is
// the least a read fetches, and small against a layer's checkpoint span (4 MiB
// uncompressed) so that a read fetches little more than its span.
const DefaultChunkSize = 256 << 10

// verifiedName marks a blob whose chunks were all in and hashed to its digest.
const verifiedName = "verified"

// Cache is the chunk cache in one directory.
type Cache struct {
	dir   string
	chunk int64
	max   int64

	mu   sync.Mutex
	used int64 // bytes in the directory as this process last counted and added to
	// counted counts used from the directory on first use, and trims it to the bound: a
	// restarted daemon finds the chunks of the last, maybe under a smaller bound.
	counted sync.Once
}

// New returns the cache in dir (made on first write), of chunks chunkSize bytes long (<= 0:
// DefaultChunkSize), keeping at most maxBytes (<= 0: no bound).
func New(dir string, chunkSize, maxBytes int64) *Cache {
	if chunkSize <= 0 {
		chunkSize = DefaultChunkSize
	}
	return &Cache{dir: dir, chunk: chunkSize, max: maxBytes}
}

// ChunkSize is the size of every chunk but a blob's last.
func (c *Cache) ChunkSize() int64 { return c.chunk }

// blobDir is where blob d's chunks are; "" for a malformed digest.
func (c *Cache) blobDir(d digest.Digest) string {
	if d.Validate() != nil {
		return ""
	}
	return filepath.Join(c.dir, string(d.Algorithm()), d.Encoded())
}

func (c *Cache) chunkPath(d digest.Digest, i int64) string {
	dir := c.blobDir(d)
	if dir == "" {
		return ""
	}
	return filepath.Join(dir, strconv.FormatInt(i, 10))
}

// Get reads chunk i of blob d into p, which must be the chunk's length, and reports whether
// the cache had it whole. A hit counts as a use for the LRU bound.
func (c *Cache) Get(d digest.Digest, i int64, p []byte) bool {
	return c.ReadAt(d, i, int64(len(p)), p, 0)
}

// ReadAt reads len(p) bytes from offset off of chunk i of blob d, which must be size bytes
// long, straight into p, and reports whether the cache had the chunk whole. A hit counts as
// a use for the LRU bound.
func (c *Cache) ReadAt(d digest.Digest, i, size int64, p []byte, off int64) bool {
	c.count()
	path := c.chunkPath(d, i)
	if path == "" || off < 0 || off+int64(len(p)) > size {
		return false
	}
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.Size() != size {
		return false
	}
	if _, err := f.ReadAt(p, off); err != nil {
		return false
	}
	// Recency only, to a touchResolution: a sequential reader reads each chunk a few times
	// in a row, and a touch is a write to the inode. A failure costs an early eviction.
	if now := time.Now(); now.Sub(fi.ModTime()) > touchResolution {
		os.Chtimes(path, now, now)
	}
	return true
}

// touchResolution is how fine the LRU's recency is: a chunk's mtime is moved on a hit
// only once it is older than this.
const touchResolution = 10 * time.Second

// Has reports whether chunk i of blob d is in the cache, n bytes long.
func (c *Cache) Has(d digest.Digest, i, n int64) bool {
	fi, err := os.Stat(c.chunkPath(d, i))
	return err == nil && fi.Size() == n
}

// Put stores chunk i of blob d. Its bytes are the registry's: they are checked by the
// span CRCs of the layer index when read, and the whole blob against its digest once
// every chunk is in (see Verified).
func (c *Cache) Put(d digest.Digest, i int64, data []byte) error {
	dir := c.blobDir(d)
	if dir == "" {
		return fmt.Errorf("chunk cache: malformed digest %q", d)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("chunk cache: %w", err)
	}
	f, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return fmt.Errorf("chunk cache: %w", err)
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), filepath.Join(dir, strconv.FormatInt(i, 10)))
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("chunk cache: %w", err)
	}
	c.count()
	c.mu.Lock()
	c.used += int64(len(data))
	over := c.max > 0 && c.used > c.max
	c.mu.Unlock()
	if over {
		c.evict()
	}
	return nil
}

// Verified reports whether blob d was found whole and hashing to its digest.
func (c *Cache) Verified(d digest.Digest) bool {
	dir := c.blobDir(d)
	if dir == "" {
		return false
	}
	_, err := os.Stat(filepath.Join(dir, verifiedName))
	return err == nil
}

// SetVerified records that blob d's chunks hash to its digest. An eviction of any of its
// chunks removes the mark, so that the blob is verified again once it is whole again.
func (c *Cache) SetVerified(d digest.Digest) error {
	dir := c.blobDir(d)
	if dir == "" {
		return fmt.Errorf("chunk cache: malformed digest %q", d)
	}
	return os.WriteFile(filepath.Join(dir, verifiedName), nil, 0o644)
}

// Remove drops every chunk of blob d.
func (c *Cache) Remove(d digest.Digest) error {
	dir := c.blobDir(d)
	if dir == "" {
		return nil
	}
	return os.RemoveAll(dir)
}

// Holds reports whether the cache holds any chunk of blob d.
func (c *Cache) Holds(d digest.Digest) bool {
	dir := c.blobDir(d)
	if dir == "" {
		return false
	}
	fi, err := os.Stat(dir)
	return err == nil && fi.IsDir()
}

// Bytes returns how many bytes of blob d the cache holds.
func (c *Cache) Bytes(d digest.Digest) int64 {
	dir := c.blobDir(d)
	if dir == "" {
		return 0
	}
	files, _ := os.ReadDir(dir)
	var n int64
	for _, f := range files {
		if f.Name() == verifiedName || strings.HasPrefix(f.Name(), ".tmp-") {
			continue
		}
		if fi, err := f.Info(); err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
	}
	return n
}

// chunkFile is a chunk found by a count of the directory.
type chunkFile struct {
	path  string
	size  int64
	mtime time.Time
}

// scan lists every chunk in the cache.
func (c *Cache) scan() []chunkFile {
	var files []chunkFile
	filepath.WalkDir(c.dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() || e.Name() == verifiedName {
			return nil
		}
		if fi, err := e.Info(); err == nil {
			files = append(files, chunkFile{p, fi.Size(), fi.ModTime()})
		}
		return nil
	})
	return files
}

// Used returns the bytes of chunks in the cache, counted from the directory.
func (c *Cache) Used() int64 {
	var n int64
	for _, f := range c.scan() {
		n += f.size
	}
	return n
}

// evict removes the least recently used chunks until the cache is at most 90% of its bound
// (some room, so that not every Put counts the directory again).
func (c *Cache) evict() {
	c.mu.Lock()
	defer c.mu.Unlock()
	files := c.scan()
	var used int64
	for _, f := range files {
		used += f.size
	}
	if used > c.max {
		slices.SortFunc(files, func(a, b chunkFile) int { return a.mtime.Compare(b.mtime) })
		goal := c.max / 10 * 9
		for _, f := range files {
			if used <= goal {
				break
			}
			if err := os.Remove(f.path); err == nil || errors.Is(err, fs.ErrNotExist) {
				used -= f.size
				os.Remove(filepath.Join(filepath.Dir(f.path), verifiedName))
				os.Remove(filepath.Dir(f.path)) // when it was the blob's last
			}
		}
	}
	c.used = used
}

// count counts the cache's bytes on first use, evicting down to the bound.
func (c *Cache) count() {
	c.counted.Do(func() {
		if c.max > 0 {
			c.evict()
		}
	})
}
