package registry

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"
)

// blob opens blob d of the repository for reading, size bytes long (0: unknown), with a GET
// whose body is not verified here: the store hashes every byte as it stages them, and a
// second hash on the way (remote's Layer does one) would only cost CPU time. When the body
// breaks (a reset, a connection closed before size bytes), a GET with Range: bytes=N-
// carries on from where it broke, as long as the registry answers 206; a break after which
// no byte came retries up to retryBackoff's tries, with its delays.
func (r *repoClient) blob(ctx context.Context, d digest.Digest, size int64) io.ReadCloser {
	return &blobReader{ctx: ctx, rc: r, d: d, size: size, tries: retryBackoff}
}

// blobReader is the body of blob d, resumed where it breaks.
type blobReader struct {
	ctx   context.Context
	rc    *repoClient
	d     digest.Digest
	size  int64
	body  io.ReadCloser
	off   int64             // bytes read so far
	tries transport.Backoff // what is left of the tries since the last byte came
	err   error             // once failed, failed for good
}

func (b *blobReader) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.body == nil {
		if err := b.open(); err != nil {
			b.err = err
			return 0, err
		}
	}
	n, err := b.body.Read(p)
	b.off += int64(n)
	if n > 0 {
		b.tries = retryBackoff
	}
	if b.size > 0 && b.off > b.size {
		// Said now, not once the store has written whatever a registry gone wrong sends.
		b.err = fmt.Errorf("registry %s, repository %s, blob %s: more than the %d bytes its descriptor says",
			b.rc.repo.RegistryStr(), b.rc.repo.RepositoryStr(), b.d, b.size)
		return n, b.err
	}
	if err == nil || (err == io.EOF && (b.size <= 0 || b.off == b.size)) {
		return n, err
	}
	b.body.Close()
	b.body = nil
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if !retryable(err) || b.tries.Steps <= 1 {
		b.err = describe(err, b.rc.repo.Digest(b.d.String()), b.d)
		return n, b.err
	}
	t := time.NewTimer(b.tries.Step())
	defer t.Stop()
	select {
	case <-t.C:
	case <-b.ctx.Done():
		b.err = b.ctx.Err()
		return n, b.err
	}
	return n, nil // the next Read resumes
}

// open sends the GET, from b.off on.
func (b *blobReader) open() error {
	ref := b.rc.repo.Digest(b.d.String())
	req, err := http.NewRequestWithContext(b.ctx, http.MethodGet, b.rc.url("blobs/"+b.d.String()), nil)
	if err != nil {
		return describe(err, ref, b.d)
	}
	want := http.StatusOK
	if b.off > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", b.off))
		want = http.StatusPartialContent
	}
	resp, err := b.rc.hc.Do(req)
	if err != nil {
		return describe(err, ref, b.d)
	}
	if b.off > 0 && resp.StatusCode == http.StatusOK {
		resp.Body.Close()
		return fmt.Errorf("registry %s, repository %s, blob %s: the download broke at byte %d and the registry cannot resume it (it answered a Range request with the whole blob)",
			b.rc.repo.RegistryStr(), b.rc.repo.RepositoryStr(), b.d, b.off)
	}
	if err := transport.CheckError(resp, want); err != nil {
		resp.Body.Close()
		return describe(err, ref, b.d)
	}
	if b.off > 0 {
		// The part must start where the break was: "bytes START-END/TOTAL".
		if cr := resp.Header.Get("Content-Range"); !strings.HasPrefix(cr, fmt.Sprintf("bytes %d-", b.off)) {
			resp.Body.Close()
			return fmt.Errorf("registry %s, repository %s, blob %s: asked for the bytes from %d on, the registry sent Content-Range %q",
				b.rc.repo.RegistryStr(), b.rc.repo.RepositoryStr(), b.d, b.off, cr)
		}
	}
	b.body = resp.Body
	return nil
}

func (b *blobReader) Close() error {
	if b.body != nil {
		b.body.Close()
		b.body = nil
	}
	if b.err == nil {
		b.err = fmt.Errorf("blob %s: read after Close", b.d)
	}
	return nil
}
