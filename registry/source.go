package registry

import (
	"context"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/imgfs/imgfs/store"
	"github.com/imgfs/imgfs/store/chunks"
	"github.com/opencontainers/go-digest"
)

// Source is a store.BlobSource over one registry host: a blob is read where it is, with
// HTTP Range requests (one per run of adjacent chunks the cache lacks), through the chunk
// cache. It knows the blobs the manifests it was told of name (Saw), each with a
// repository to ask for it. Opening a blob sends nothing: a read that the cache answers
// never waits on the registry.
type Source struct {
	c     *Client
	host  string // as given: docker.io stays docker.io
	reg   name.Registry
	cache *chunks.Cache
	log   *slog.Logger

	mu       sync.Mutex
	seen     map[digest.Digest]seenBlob
	clients  map[string]*clientCall // by repository
	bad      map[digest.Digest]error
	inflight map[chunkKey]*fetchCall // the chunks being fetched
	checkMu  sync.Mutex              // one whole-blob check at a time, and upTo
	// upTo is, for each blob checked, the first chunk the cache lacked at the last check:
	// the next check looks on from there, not from chunk 0 (a reader going through a
	// blob would make that a look at every chunk before it per fetch). A chunk before it
	// evicted since is found when the blob's chunks are read to be hashed.
	upTo map[digest.Digest]int64

	prefetchers chan struct{} // a slot per Prefetch request in flight
}

// chunkKey is chunk i of blob d.
type chunkKey struct {
	d digest.Digest
	i int64
}

// fetchCall is one Range request in flight, for a run of chunks; err is set before done
// is closed.
type fetchCall struct {
	done chan struct{}
	err  error
}

// seenBlob is a blob a manifest of the registry named.
type seenBlob struct {
	repo string
	size int64
}

// NewSource returns the Source of registry host (HOST[:PORT]), caching in cache and
// logging to log (nil: slog.Default()).
func (c *Client) NewSource(host string, cache *chunks.Cache, log *slog.Logger) (*Source, error) {
	var opts []name.Option
	if c.plainHTTP(host) {
		opts = append(opts, name.Insecure)
	}
	reg, err := name.NewRegistry(host, opts...)
	if err != nil {
		return nil, fmt.Errorf("invalid registry %q: %v", host, err)
	}
	if log == nil {
		log = slog.Default()
	}
	return &Source{c: c, host: host, reg: reg, cache: cache, log: log, seen: map[digest.Digest]seenBlob{},
		clients: map[string]*clientCall{}, bad: map[digest.Digest]error{}, inflight: map[chunkKey]*fetchCall{},
		upTo:        map[digest.Digest]int64{},
		prefetchers: make(chan struct{}, prefetchers)}, nil
}

// Host is the registry's HOST[:PORT].
func (s *Source) Host() string { return s.host }

// Saw records that repository repo (its path on the registry) has blob d of size bytes.
func (s *Source) Saw(repo string, d digest.Digest, size int64) {
	s.mu.Lock()
	s.seen[d] = seenBlob{repo, size}
	s.mu.Unlock()
}

func (s *Source) lookup(d digest.Digest) (seenBlob, error) {
	s.mu.Lock()
	b, ok := s.seen[d]
	s.mu.Unlock()
	if !ok {
		return b, fmt.Errorf("registry %s: blob %s: named by no manifest read: %w", s.Host(), d, fs.ErrNotExist)
	}
	return b, nil
}

// Open returns blob d, which a manifest the Source was told of (Saw) names.
func (s *Source) Open(d digest.Digest) (store.Blob, error) {
	b, err := s.lookup(d)
	if err != nil {
		return nil, err
	}
	return &remoteBlob{s: s, d: d, repo: b.repo, size: b.size}, nil
}

// Stream opens blob d whole, from its start: one GET, resumed where it breaks, for the
// index build of a layer (which verifies the digest). Its bytes fill the chunk cache as
// they pass, so that the reads after the build fetch nothing again.
func (s *Source) Stream(d digest.Digest) (io.ReadCloser, error) {
	b, err := s.lookup(d)
	if err != nil {
		return nil, err
	}
	rc, err := s.client(b.repo)
	if err != nil {
		return nil, err
	}
	return &cacheTee{s: s, d: d, size: b.size, r: rc.blob(context.Background(), d, b.size), h: d.Algorithm().Hash()}, nil
}

// cacheTee puts a streamed blob's chunks in the chunk cache as they pass, and, at its
// end, marks the blob verified when its bytes hash to its digest, or drops them when not.
type cacheTee struct {
	s     *Source
	d     digest.Digest
	size  int64
	r     io.ReadCloser
	h     hash.Hash
	n     int64  // bytes read
	buf   []byte // the chunk being filled
	chunk int64  // its number
}

func (t *cacheTee) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	t.h.Write(p[:n])
	t.n += int64(n)
	for b := p[:n]; len(b) > 0; {
		k := min(int(t.s.cache.ChunkSize())-len(t.buf), len(b))
		t.buf = append(t.buf, b[:k]...)
		b = b[k:]
		if int64(len(t.buf)) == t.s.cache.ChunkSize() {
			t.put()
		}
	}
	if err == io.EOF {
		t.put()
		if t.n == t.size && digest.NewDigest(t.d.Algorithm(), t.h) == t.d {
			// Marked only if every chunk is still in (a small cache evicts as it fills):
			// a chunk fetched again later is checked with the whole blob.
			if t.whole() {
				if err := t.s.cache.SetVerified(t.d); err != nil {
					t.s.log.Warn("chunk cache", "err", err)
				}
				if !t.whole() { // evicted in between: the mark must not outlive a chunk
					t.s.cache.Remove(t.d)
				}
			}
		} else {
			t.s.cache.Remove(t.d) // the index build fails on it too, and says why
		}
		return n, io.EOF
	}
	return n, err
}

func (t *cacheTee) put() {
	if len(t.buf) > 0 {
		if err := t.s.cache.Put(t.d, t.chunk, t.buf); err != nil {
			t.s.log.Warn("chunk cache", "err", err) // the stream goes on all the same
		}
	}
	t.chunk++
	t.buf = t.buf[:0]
}

func (t *cacheTee) Close() error { return t.r.Close() }

// whole reports whether the cache holds every chunk of the blob.
func (t *cacheTee) whole() bool {
	cs := t.s.cache.ChunkSize()
	for i := int64(0); i*cs < t.size; i++ {
		if !t.s.cache.Has(t.d, i, min(cs, t.size-i*cs)) {
			return false
		}
	}
	return true
}

// Fetched returns how many bytes of blob d the chunk cache holds.
func (s *Source) Fetched(d digest.Digest) int64 { return s.cache.Bytes(d) }

// client returns the repoClient of repository repo, made on first use: making one asks
// the registry (a ping, maybe a token), once for the callers that ask at the same time
// (a lazy mount's first look at an image asks for its config and its layer indexes at
// once), and a failure is not kept.
func (s *Source) client(repo string) (*repoClient, error) {
	s.mu.Lock()
	c, ok := s.clients[repo]
	if !ok {
		c = &clientCall{done: make(chan struct{})}
		s.clients[repo] = c
	}
	s.mu.Unlock()
	if ok {
		<-c.done
		return c.rc, c.err
	}
	c.rc, c.err = s.c.repoClient(context.Background(), s.reg.Repo(repo), transport.PullScope)
	if c.err != nil {
		s.mu.Lock()
		delete(s.clients, repo)
		s.mu.Unlock()
	}
	close(c.done)
	return c.rc, c.err
}

// clientCall is the making of a repository's repoClient: rc or err is set before done
// is closed.
type clientCall struct {
	done chan struct{}
	rc   *repoClient
	err  error
}

// remoteBlob is a blob of the registry, read through the chunk cache.
type remoteBlob struct {
	s    *Source
	d    digest.Digest
	repo string
	size int64
}

func (b *remoteBlob) Size() int64  { return b.size }
func (b *remoteBlob) Close() error { return nil }

// chunkLen is the length of chunk i.
func (b *remoteBlob) chunkLen(i int64) int64 {
	cs := b.s.cache.ChunkSize()
	return min(cs, b.size-i*cs)
}

func (b *remoteBlob) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("registry %s, blob %s: negative offset %d", b.s.Host(), b.d, off)
	}
	if off >= b.size {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	end := min(off+int64(len(p)), b.size)
	if err := b.read(off, end, p[:end-off]); err != nil {
		return 0, err
	}
	if end-off < int64(len(p)) {
		return int(end - off), io.EOF
	}
	return len(p), nil
}

// read gets the chunks of [off, end) into the cache, those missing fetched, and with p
// (end-off bytes) not nil, copies [off, end) into p: from the cache's files straight
// into p, from a fetch's buffer for the chunks it brought.
func (b *remoteBlob) read(off, end int64, p []byte) error {
	s := b.s
	s.mu.Lock()
	bad := s.bad[b.d]
	s.mu.Unlock()
	if bad != nil {
		return bad
	}
	cs := s.cache.ChunkSize()
	first, last := off/cs, (end-1)/cs
	// part returns chunk i's part of [off, end): where it starts in the chunk, and where
	// in p.
	part := func(i int64) (in int64, dst []byte) {
		lo, hi := max(off, i*cs), min(end, i*cs+b.chunkLen(i))
		if p != nil {
			dst = p[lo-off : hi-off]
		}
		return lo - i*cs, dst
	}
	// have reads chunk i's part from the cache, or, with no p, says the cache has it.
	have := func(i int64) bool {
		if p == nil {
			return s.cache.Has(b.d, i, b.chunkLen(i))
		}
		in, dst := part(i)
		return s.cache.ReadAt(b.d, i, b.chunkLen(i), dst, in)
	}
	// took copies chunk i's part out of buf, which holds the chunks from chunk from on.
	took := func(buf []byte, from, i int64) {
		if p != nil {
			in, dst := part(i)
			at := (i-from)*cs + in
			copy(dst, buf[at:at+int64(len(dst))])
		}
	}
	got := make([]bool, last-first+1)
	for i := first; i <= last; i++ {
		got[i-first] = have(i)
	}
	// The chunks missing are fetched by this read, a run of adjacent ones with one
	// request, but those another read is fetching already are waited for: the decoders
	// ahead of a sequential reader read adjacent spans at once, which share their
	// boundary chunks.
	mine := make([]*fetchCall, last-first+1)
	waits := make([]*fetchCall, last-first+1)
	s.mu.Lock()
	var run *fetchCall
	for i := first; i <= last; i++ {
		k := i - first
		if got[k] {
			run = nil
			continue
		}
		if c, ok := s.inflight[chunkKey{b.d, i}]; ok {
			waits[k], run = c, nil
			continue
		}
		// Another read may have fetched it, and left inflight, since the look above.
		if have(i) {
			got[k], run = true, nil
			continue
		}
		if run == nil {
			run = &fetchCall{done: make(chan struct{})}
		}
		mine[k] = run
		s.inflight[chunkKey{b.d, i}] = run
	}
	s.mu.Unlock()
	fetched := false
	var err error
	for i := first; i <= last; {
		c := mine[i-first]
		if c == nil {
			i++
			continue
		}
		j := i
		for j+1 <= last && mine[j+1-first] == c {
			j++
		}
		if err == nil { // after a failure, the other runs fail alike without asking again
			buf := make([]byte, (j-i)*cs+b.chunkLen(j))
			if err = b.fetch(i*cs, buf); err == nil {
				b.put(buf, i, i, j)
				for k := i; k <= j; k++ {
					took(buf, i, k)
				}
				fetched = true
			}
		}
		c.err = err
		s.mu.Lock()
		for k := i; k <= j; k++ {
			delete(s.inflight, chunkKey{b.d, k})
		}
		s.mu.Unlock()
		close(c.done)
		i = j + 1
	}
	if err != nil {
		return err
	}
	for k, c := range waits {
		if c == nil {
			continue
		}
		<-c.done
		i := first + int64(k)
		if c.err == nil && have(i) {
			continue
		}
		// Its fetch failed (this read tries again, as any read after it would), or the
		// chunk was evicted since.
		buf := make([]byte, b.chunkLen(i))
		if err := b.fetch(i*cs, buf); err != nil {
			return err
		}
		b.put(buf, i, i, i)
		took(buf, i, i)
		fetched = true
	}
	if fetched {
		return b.checkWhole()
	}
	return nil
}

// Prefetch fetches [off, off+n) of the blob into the cache in the background (it is a
// layerindex.Fetcher): as Fetch does, in pieces of up to prefetchRequest bytes, in order,
// at most prefetchers of them at a time for the source.
func (b *remoteBlob) Prefetch(off, n int64) {
	end := min(off+n, b.size)
	if off < 0 || off >= end {
		return
	}
	go func() {
		for at := off; at < end; at += prefetchRequest {
			b.s.prefetchers <- struct{}{}
			go func(at, n int64) {
				defer func() { <-b.s.prefetchers }()
				b.Fetch(at, n)
			}(at, min(prefetchRequest, end-at))
		}
	}()
}

// Prefetch's requests: one sequential reader keeps a few large ones going, a few MiB
// ahead of its decoders.
const (
	prefetchRequest = 4 << 20
	prefetchers     = 4
)

// Fetch gets [off, off+n) of the blob into the cache now, the chunks missing with one
// request (waiting for those being fetched, as a read does), unless the cache has them
// all: a span's decoder then reads its input in pieces from the cache.
func (b *remoteBlob) Fetch(off, n int64) error {
	n = min(n, b.size-off)
	if off < 0 || n <= 0 {
		return nil
	}
	return b.read(off, off+n, nil)
}

// put stores chunks i to j of the blob, which buf holds from chunk first on.
func (b *remoteBlob) put(buf []byte, first, i, j int64) {
	cs := b.s.cache.ChunkSize()
	for k := i; k <= j; k++ {
		at := (k - first) * cs
		if err := b.s.cache.Put(b.d, k, buf[at:at+b.chunkLen(k)]); err != nil {
			b.s.log.Warn("chunk cache", "err", err) // the bytes are served all the same
		}
	}
}

// fetch fills p with the blob's bytes from off, with one Range request. A body that
// breaks is asked for again from where it broke, as pulls resume, within retryBackoff's
// tries; a registry that sends nothing for the Client's Timeout fails it (idleTimeout).
func (b *remoteBlob) fetch(off int64, p []byte) error {
	rc, err := b.s.client(b.repo)
	if err != nil {
		return err
	}
	tries := retryBackoff
	for {
		n, err := b.get(rc, off, p)
		off, p = off+int64(n), p[n:]
		if err == nil {
			return nil
		}
		if n > 0 {
			tries = retryBackoff
		}
		if !retryable(err) || tries.Steps <= 1 {
			return describe(err, rc.repo.Digest(b.d.String()), b.d)
		}
		time.Sleep(tries.Step())
	}
}

// get reads len(p) bytes from off with a Range GET, and returns how many came.
func (b *remoteBlob) get(rc *repoClient, off int64, p []byte) (int, error) {
	req, err := http.NewRequest(http.MethodGet, rc.url("blobs/"+b.d.String()), nil)
	if err != nil {
		return 0, err
	}
	last := off + int64(len(p)) - 1
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, last))
	resp, err := rc.hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if err := transport.CheckError(resp, http.StatusPartialContent); err != nil {
		return 0, err
	}
	if cr := resp.Header.Get("Content-Range"); !strings.HasPrefix(cr, fmt.Sprintf("bytes %d-%d/", off, last)) {
		return 0, fmt.Errorf("asked for bytes %d-%d, the registry sent Content-Range %q", off, last, cr)
	}
	return io.ReadFull(resp.Body, p)
}

// checkWhole verifies the blob against its digest once the cache has every chunk of it:
// the chunks were served as they came (their spans' CRCs checked by the layer index), and
// this is the check that the registry served the blob the manifest names. A mismatch
// fails the blob's reads from then on, and drops its chunks.
func (b *remoteBlob) checkWhole() error {
	s := b.s
	s.checkMu.Lock()
	defer s.checkMu.Unlock()
	if s.cache.Verified(b.d) {
		return nil
	}
	cs := s.cache.ChunkSize()
	n := (b.size + cs - 1) / cs
	for i := s.upTo[b.d]; i < n; i++ {
		if !s.cache.Has(b.d, i, b.chunkLen(i)) {
			s.upTo[b.d] = i
			return nil
		}
	}
	delete(s.upTo, b.d)
	h := b.d.Algorithm().Hash()
	buf := make([]byte, cs)
	for i := range n {
		c := buf[:b.chunkLen(i)]
		if !s.cache.Get(b.d, i, c) {
			return nil // evicted meanwhile: checked when whole again
		}
		h.Write(c)
	}
	got := digest.NewDigest(b.d.Algorithm(), h)
	if got != b.d {
		err := fmt.Errorf("registry %s, repository %s, blob %s: %w: the bytes fetched hash to %s",
			s.Host(), b.repo, b.d, store.ErrDigestMismatch, got)
		s.mu.Lock()
		s.bad[b.d] = err
		s.mu.Unlock()
		s.cache.Remove(b.d)
		s.log.Error("registry blob does not match its digest: its reads fail", "registry", s.Host(), "blob", b.d, "err", err)
		return err
	}
	if err := s.cache.SetVerified(b.d); err != nil {
		s.log.Warn("chunk cache", "err", err)
	}
	return nil
}
