package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"
)

// The blob upload protocol of the OCI distribution spec, on a repoClient (whose transport
// does the auth): POST .../blobs/uploads/ opens an upload session or, with
// ?mount=DIGEST&from=REPO, mounts a blob the registry has in another repository; the
// bytes go in one PATCH to the session, and PUT ?digest= closes it. Docker uploads so.

// startUpload opens an upload session for blob d in the repository. With from set it
// asks the registry to mount d from repository from instead: mounted says it did (201).
// Otherwise loc is the session to send the bytes to: a registry that cannot mount the
// blob opens a session (202), and one that refuses the mount request is asked again
// without it.
func (r *repoClient) startUpload(ctx context.Context, d digest.Digest, from string) (loc string, mounted bool, err error) {
	u, err := url.Parse(r.url("blobs/uploads/"))
	if err != nil {
		return "", false, err
	}
	if from != "" {
		u.RawQuery = url.Values{"mount": {d.String()}, "from": {from}}.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), http.NoBody)
	if err != nil {
		return "", false, err
	}
	resp, err := r.hc.Do(req)
	if err != nil {
		return "", false, r.blobError(err, d)
	}
	defer resp.Body.Close()
	if err := transport.CheckError(resp, http.StatusCreated, http.StatusAccepted); err != nil {
		if from != "" && ctx.Err() == nil {
			// Some registries answer a mount they will not do with an error, not a
			// session: upload instead.
			return r.startUpload(ctx, d, "")
		}
		return "", false, r.blobError(err, d)
	}
	if resp.StatusCode == http.StatusCreated && from != "" {
		return "", true, nil
	}
	loc, err = nextLocation(resp)
	if err != nil {
		return "", false, r.blobError(err, d)
	}
	return loc, false, nil
}

// upload sends blob d, size bytes that open reads, to the upload session at loc and
// closes the session with the digest: the registry checks the bytes against it.
func (r *repoClient) upload(ctx context.Context, loc string, d digest.Digest, size int64, open func() (io.ReadCloser, error)) error {
	body, err := open()
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPatch, loc, body)
	if err != nil {
		body.Close()
		return err
	}
	// The transport may send the request again on a fresh connection: from the start.
	req.GetBody = open
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := r.hc.Do(req)
	if err != nil {
		return r.blobError(err, d)
	}
	resp.Body.Close()
	if err := transport.CheckError(resp, http.StatusAccepted, http.StatusNoContent, http.StatusCreated); err != nil {
		return r.blobError(err, d)
	}
	if loc, err = nextLocation(resp); err != nil {
		return r.blobError(err, d)
	}

	u, err := url.Parse(loc)
	if err != nil {
		return r.blobError(err, d)
	}
	q := u.Query()
	q.Set("digest", d.String())
	u.RawQuery = q.Encode()
	req, err = http.NewRequestWithContext(ctx, http.MethodPut, u.String(), http.NoBody)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	if resp, err = r.hc.Do(req); err != nil {
		return r.blobError(err, d)
	}
	resp.Body.Close()
	if err := transport.CheckError(resp, http.StatusCreated); err != nil {
		return r.blobError(err, d)
	}
	return nil
}

// blobError is err, one line naming the registry, the repository and blob d, that still
// unwraps to err (temporary tells by it whether to try again).
func (r *repoClient) blobError(err error, d digest.Digest) error {
	if errors.Is(err, context.Canceled) {
		return err
	}
	return &blobFailure{describe(err, r.repo.Digest(d.String()), d), err}
}

type blobFailure struct {
	msg   error
	cause error
}

func (e *blobFailure) Error() string { return e.msg.Error() }
func (e *blobFailure) Unwrap() error { return e.cause }

// uploadTries is how many times a blob's push is tried, uploadBackoff the wait before the
// second try, tripled before each next: go-containerregistry's own uploads go so.
const (
	uploadTries   = 3
	uploadBackoff = time.Second
)

// temporary says whether a failure may pass on another try: the connection broke, or the
// registry answered that it cannot now (408, 429, 5xx, or its error codes saying so).
func temporary(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var te *transport.Error
	if errors.As(err, &te) {
		return te.Temporary()
	}
	var ne net.Error
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, net.ErrClosed) ||
		(errors.As(err, &ne) && ne.Timeout())
}

// nextLocation is the URL an upload answer's Location header names for the next request,
// made absolute. A registry may hand uploads to another host (a storage service), but not
// to a private or loopback address that it is not itself: the bytes would go to a service
// inside the network that the registry names.
func nextLocation(resp *http.Response) (string, error) {
	loc := resp.Header.Get("Location")
	if loc == "" {
		return "", errors.New("upload answer without a Location header")
	}
	u, err := resp.Request.URL.Parse(loc)
	if err != nil {
		return "", fmt.Errorf("upload Location %q: %v", loc, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("upload Location %q: not HTTP", loc)
	}
	if h := u.Hostname(); h != resp.Request.URL.Hostname() && privateHost(h) {
		return "", fmt.Errorf("upload Location %q: another host, on a private address", loc)
	}
	return u.String(), nil
}

// privateHost says whether h is localhost or an IP address that is not on the internet.
func privateHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && (ip.IsPrivate() || ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsUnspecified())
}
