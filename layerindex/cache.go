package layerindex

import (
	"container/list"
	"errors"
	"runtime"
	"sync"

	"github.com/opencontainers/go-digest"
)

// DefaultCacheSize bounds the decoded spans a Cache keeps.
const DefaultCacheSize = 64 << 20

// Cache keeps recently decoded spans of any number of layers, least recently used first
// out. Concurrent requests for one span decode it once. The zero value is not usable; call
// NewCache.
type Cache struct {
	mu    sync.Mutex
	max   int64
	used  int64
	lru   list.List // of *cached, most recently used in front
	items map[spanKey]*cached

	// decoders bounds the spans decoded ahead of readers, all layers together, so that
	// read-ahead uses the spare cores and no more.
	decoders chan struct{}
}

type spanKey struct {
	blob       digest.Digest
	start, end int64  // an index with another SpanSize cuts the stream elsewhere
	crc        uint32 // and a span is served only to an index that vouches for its bytes
}

type cached struct {
	key  spanKey
	data []byte
	elem *list.Element // nil while the span is being decoded
	done chan struct{} // closed once data or err is set
	err  error

	// passed is the span, decoded by another decoder on its way further while this one
	// was pending: the pending decoder takes it rather than decode the span again.
	passed []byte
}

// NewCache returns a cache holding up to maxBytes of decoded spans (at least the most
// recent span, however large). maxBytes <= 0 means DefaultCacheSize.
func NewCache(maxBytes int64) *Cache {
	if maxBytes <= 0 {
		maxBytes = DefaultCacheSize
	}
	return &Cache{
		max:      maxBytes,
		items:    make(map[spanKey]*cached),
		decoders: make(chan struct{}, runtime.GOMAXPROCS(0)),
	}
}

// get returns the span under key, calling fill to decode it if no one has or is.
func (c *Cache) get(key spanKey, fill func() ([]byte, error)) ([]byte, error) {
	c.mu.Lock()
	if e, ok := c.items[key]; ok {
		if e.elem != nil {
			c.lru.MoveToFront(e.elem)
			c.mu.Unlock()
			return e.data, nil
		}
		c.mu.Unlock()
		<-e.done
		return e.data, e.err
	}
	e := &cached{key: key, done: make(chan struct{})}
	c.items[key] = e
	c.mu.Unlock()

	// The entry is finished whatever fill does, panics included: a pending entry left
	// behind would hang every later reader of the span.
	data, err := []byte(nil), errFillPanicked
	defer func() {
		c.mu.Lock()
		e.data, e.err, e.passed = data, err, nil
		if err != nil {
			delete(c.items, key)
		} else {
			c.insertLocked(e)
		}
		c.mu.Unlock()
		close(e.done)
	}()
	data, err = fill()
	return data, err
}

var errFillPanicked = errors.New("layerindex: decoding the span panicked")

// put adds a span decoded on the way to another one, unless it is already there or on its way.
func (c *Cache) put(key spanKey, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[key]; ok {
		if e.elem == nil && e.passed == nil {
			e.passed = data
		}
		return
	}
	e := &cached{key: key, data: data, done: make(chan struct{})}
	close(e.done)
	c.items[key] = e
	c.insertLocked(e)
}

// passed returns a pending span's bytes that another decoder produced on its way.
func (c *Cache) passed(key spanKey) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[key]; ok {
		return e.passed
	}
	return nil
}

// has reports whether the span is cached or being decoded.
func (c *Cache) has(key spanKey) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.items[key]
	return ok
}

func (c *Cache) insertLocked(e *cached) {
	e.elem = c.lru.PushFront(e)
	c.used += int64(len(e.data))
	for c.used > c.max && c.lru.Len() > 1 {
		old := c.lru.Remove(c.lru.Back()).(*cached)
		delete(c.items, old.key)
		c.used -= int64(len(old.data))
	}
}

// Used reports the bytes of decoded spans held.
func (c *Cache) Used() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.used
}
