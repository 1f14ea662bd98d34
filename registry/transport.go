package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// retryBackoff is how requests are tried again, by remote's transport and the repoClient's
// alike, and a broken blob body resumed: 4 tries, about 0.5 s, 1 s and 2 s apart. A
// registry back within a few seconds (a restart behind a load balancer, a rate limit's
// window) is waited for; one that is gone fails the command soon.
var retryBackoff = transport.Backoff{Duration: 500 * time.Millisecond, Factor: 2, Jitter: 0.1, Steps: 4}

// retryCodes are the answers tried again: the registry or something in front of it is
// overloaded or restarting (429 is the distribution spec's rate limit).
var retryCodes = []int{
	http.StatusRequestTimeout, http.StatusTooManyRequests, http.StatusInternalServerError,
	http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout,
}

// retryable says whether a request or a body that failed with err is worth trying again: a
// connection reset or cut short, or an error that says it is temporary, as remote's own
// default judges. A timeout is not: the registry stopped answering for the whole Timeout,
// and trying again would make the command wait several times as long as it was told.
func retryable(err error) bool {
	var te *timeoutError
	if err == nil || errors.As(err, &te) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	if t, ok := err.(interface{ Temporary() bool }); ok && t.Temporary() {
		return true
	}
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed)
}

// timeoutError is a request that got no answer, or a body that delivered no byte, for the
// Client's Timeout.
type timeoutError struct {
	what string // "no answer", "no data"
	idle time.Duration
}

func (e *timeoutError) Error() string { return fmt.Sprintf("timed out: %s for %s", e.what, e.idle) }
func (e *timeoutError) Timeout() bool { return true }

// idleTimeout fails a request that gets no answer, or whose body (sent or received) moves
// no byte, for idle: a registry that stops answering (a stopped process, a dead link that
// sends no reset) fails the command instead of hanging it, while a long transfer that keeps
// moving never times out, which no deadline on the whole request could promise. It covers
// the dial, the TLS handshake, the token requests and every body, as the bottom transport.
type idleTimeout struct {
	next http.RoundTripper
	idle time.Duration
}

func (t idleTimeout) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancel(req.Context())
	w := &watch{idle: t.idle, cancel: cancel, start: time.Now()}
	w.mu.Lock()
	w.timer = time.AfterFunc(t.idle, w.check)
	w.mu.Unlock()
	req = req.WithContext(ctx)
	if req.Body != nil && req.Body != http.NoBody {
		req.Body = &watchedBody{ReadCloser: req.Body, w: w, what: "no data taken"}
	}
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		w.stop()
		w.cancel()
		if w.fired.Load() {
			return nil, &timeoutError{"no answer", t.idle}
		}
		return nil, err
	}
	w.kick()
	resp.Body = &watchedBody{ReadCloser: resp.Body, w: w, what: "no data", answer: true}
	return resp, nil
}

// watch cancels a request when it has shown no sign of life for idle.
type watch struct {
	idle   time.Duration
	cancel context.CancelFunc
	start  time.Time    // monotonic: last counts from it, immune to clock changes
	last   atomic.Int64 // the last sign of life, in nanoseconds since start
	fired  atomic.Bool

	mu      sync.Mutex
	timer   *time.Timer
	stopped bool
}

func (w *watch) kick() { w.last.Store(int64(time.Since(w.start))) }

// check runs when the timer goes off: it cancels the request if it has been quiet for idle,
// else sets the timer for when it will have been.
func (w *watch) check() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	quiet := time.Since(w.start) - time.Duration(w.last.Load())
	if quiet < w.idle {
		w.timer.Reset(w.idle - quiet)
		return
	}
	w.fired.Store(true)
	w.stopped = true
	w.cancel()
}

// stop ends the watch: the request is over, or its answer read to the end.
func (w *watch) stop() {
	w.mu.Lock()
	w.stopped = true
	w.timer.Stop()
	w.mu.Unlock()
}

// watchedBody is a body whose bytes keep its request's watch quiet: the request's, which
// the transport reads as it sends, or the answer's.
type watchedBody struct {
	io.ReadCloser
	w      *watch
	what   string
	answer bool // the answer's body: its end ends the watch, its Close the request
}

func (b *watchedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.w.kick()
	}
	switch {
	case err == io.EOF && b.answer:
		b.w.stop()
	case err != nil && err != io.EOF && b.w.fired.Load():
		err = &timeoutError{b.what, b.w.idle}
	}
	return n, err
}

func (b *watchedBody) Close() error {
	err := b.ReadCloser.Close()
	if b.answer {
		b.w.stop()
		b.w.cancel()
	}
	return err
}
