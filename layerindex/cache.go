package layerindex

import (
	"container/list"
	"errors"
	"runtime"
	"sync"

	"github.com/opencontainers/go-digest"
)

// DefaultCacheSize bounds the decoded spans a Cache keeps: four spans of the default size.
// A sequential reader needs the span it reads and those decoded ahead of it, and the
// kernel's page cache keeps what a mount's readers read; more room only lets the decoders
// run further ahead, pushing out spans before the reader gets to them.
const DefaultCacheSize = 16 << 20

// Cache keeps recently decoded spans of any number of layers, least recently used first
// out, except that a span decoded ahead of readers stays until one has had it (a reader
// going forward reads it next, and the span it just left much later, if ever), unless
// it has waited while four times as many spans as the cache holds came in (its reader
// went elsewhere). Concurrent requests for one span decode it once. The buffers of spans
// that leave the cache are used again for the next spans decoded: a sequential read of a
// whole image would otherwise allocate (and have the kernel zero) a fresh buffer for every
// span. The zero value is not usable; call NewCache.
type Cache struct {
	mu    sync.Mutex
	max   int64
	used  int64
	lru   list.List // of *cached, most recently used in front
	items map[spanKey]*cached
	free  bufferList // buffers no entry holds, for alloc
	ins   uint64     // spans inserted

	// decoders bounds the spans decoded ahead of readers, all layers together, so that
	// read-ahead uses the spare cores and no more.
	decoders chan struct{}
}

// maxFree bounds the buffers kept for reuse: one freed by each eviction is taken by the
// next decode, so a few cover decoders running at once.
const maxFree = 2

type spanKey struct {
	blob       digest.Digest
	start, end int64  // an index with another SpanSize cuts the stream elsewhere
	crc        uint32 // and a span is served only to an index that vouches for its bytes
}

// cached is a span in the cache or on its way there. Its buffer goes back to the free list
// once nobody holds it: refs counts the callers of get that have not released it yet, plus
// one while the entry is in the LRU list.
type cached struct {
	key  spanKey
	data []byte
	elem *list.Element // nil while the span is being decoded, and after eviction
	done chan struct{} // closed once data or err is set
	err  error
	refs int
	// ahead: decoded ahead of readers, no reader had it yet.
	ahead bool
	ins   uint64 // the Cache's ins when it came in

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
		free:     bufferList{max: maxFree},
		decoders: make(chan struct{}, runtime.GOMAXPROCS(0)),
	}
}

// get returns the span under key, calling fill to decode it if no one has or is. The
// caller holds the entry, whose data stays valid, until it calls release. ahead says the
// caller decodes ahead of readers.
func (c *Cache) get(key spanKey, ahead bool, fill func() ([]byte, error)) (*cached, error) {
again:
	c.mu.Lock()
	if e, ok := c.items[key]; ok {
		e.refs++
		if !ahead {
			e.ahead = false
		}
		if e.elem != nil {
			c.lru.MoveToFront(e.elem)
			c.mu.Unlock()
			return e, nil
		}
		c.mu.Unlock()
		<-e.done
		if e.err != nil {
			c.release(e)
			if e.err == errAbandoned {
				goto again // the decoder ahead gave up: this caller still wants the span
			}
			return nil, e.err
		}
		return e, nil
	}
	e := &cached{key: key, done: make(chan struct{}), refs: 1, ahead: ahead}
	c.items[key] = e
	c.mu.Unlock()

	// The entry is finished whatever fill does, panics included: a pending entry left
	// behind would hang every later reader of the span.
	data, err := []byte(nil), errFillPanicked
	defer func() {
		c.mu.Lock()
		if e.passed != nil {
			c.recycleLocked(e.passed) // fill decoded the span itself
			e.passed = nil
		}
		if err != nil {
			delete(c.items, key)
			e.err = err
			e.refs--
		} else {
			e.data = data
			e.refs++ // the LRU list's
			c.insertLocked(e)
		}
		c.mu.Unlock()
		close(e.done)
	}()
	data, err = fill()
	if err != nil {
		return nil, err
	}
	return e, nil
}

var errFillPanicked = errors.New("layerindex: decoding the span panicked")

// errAbandoned is what a fill returns when it decodes ahead of readers and the reader has
// gone past the span meanwhile: other callers waiting for the span decode it themselves.
var errAbandoned = errors.New("layerindex: decoding ahead abandoned")

// release gives back an entry that get returned.
func (c *Cache) release(e *cached) {
	c.mu.Lock()
	c.unrefLocked(e)
	c.mu.Unlock()
}

func (c *Cache) unrefLocked(e *cached) {
	e.refs--
	if e.refs == 0 && e.data != nil {
		c.recycleLocked(e.data)
		e.data = nil
	}
}

// alloc returns a buffer of n bytes, whose contents are undefined.
func (c *Cache) alloc(n int64) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.free.get(n)
}

// recycle gives back a buffer from alloc that no entry holds.
func (c *Cache) recycle(b []byte) {
	c.mu.Lock()
	c.recycleLocked(b)
	c.mu.Unlock()
}

func (c *Cache) recycleLocked(b []byte) { c.free.put(b) }

// put adds a span decoded on the way to another one, unless it is already there or on its
// way. The cache owns data from then on.
func (c *Cache) put(key spanKey, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[key]; ok {
		if e.elem == nil && e.passed == nil {
			e.passed = data
		} else {
			c.recycleLocked(data)
		}
		return
	}
	e := &cached{key: key, data: data, done: make(chan struct{}), refs: 1, ahead: true}
	close(e.done)
	c.items[key] = e
	c.insertLocked(e)
}

// passed hands over a pending span's bytes that another decoder produced on its way.
func (c *Cache) passed(key spanKey) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[key]; ok {
		b := e.passed
		e.passed = nil
		return b
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
	c.ins++
	e.ins = c.ins
	e.elem = c.lru.PushFront(e)
	c.used += bufCap(int64(len(e.data)))
	for c.used > c.max && c.lru.Len() > 1 {
		victim := c.lru.Back()
		for el := victim; el != nil; el = el.Prev() {
			if o := el.Value.(*cached); !o.ahead || c.ins-o.ins > 4*uint64(c.lru.Len()) {
				victim = el
				break
			}
		}
		old := c.lru.Remove(victim).(*cached)
		old.elem = nil
		delete(c.items, old.key)
		c.used -= bufCap(int64(len(old.data)))
		c.unrefLocked(old)
	}
}

// Used reports the bytes of decoded spans held.
func (c *Cache) Used() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.used
}
