package registry

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/opencontainers/go-digest"
)

// TestIdleTimeout: a request with no answer, and a body that stops, fail after the idle
// time with a timeoutError that is not retried; a body that keeps moving for several times
// the idle time does not.
func TestIdleTimeout(t *testing.T) {
	const idle = 300 * time.Millisecond
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/slow": // 12 bytes over 1.2 s, never 300 ms without one
			for range 12 {
				w.Write([]byte("x"))
				w.(http.Flusher).Flush()
				time.Sleep(idle / 3)
			}
		case "/stall": // a byte, then nothing
			w.Write([]byte("x"))
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		case "/silent": // no answer at all
			<-r.Context().Done()
		}
	}))
	defer srv.Close()
	hc := &http.Client{Transport: idleTimeout{next: http.DefaultTransport, idle: idle}}

	resp, err := hc.Get(srv.URL + "/slow")
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || len(data) != 12 {
		t.Errorf("a body that keeps moving: %d bytes, %v; want 12, no error", len(data), err)
	}

	start := time.Now()
	resp, err = hc.Get(srv.URL + "/stall")
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	var te *timeoutError
	if !errors.As(err, &te) || te.what != "no data" || retryable(err) {
		t.Errorf("a body that stops: %v; want a timeoutError (no data), not retryable", err)
	}
	if took := time.Since(start); took < idle || took > 5*idle {
		t.Errorf("a body that stops failed after %s, want about %s", took, idle)
	}

	start = time.Now()
	_, err = hc.Get(srv.URL + "/silent")
	if !errors.As(err, &te) || te.what != "no answer" || retryable(err) {
		t.Errorf("no answer: %v; want a timeoutError (no answer), not retryable", err)
	}
	if took := time.Since(start); took < idle || took > 5*idle {
		t.Errorf("no answer failed after %s, want about %s", took, idle)
	}
}

// TestBlobResumes: a blob whose body breaks is read on from where it broke with a Range
// request; a server that answers it with the whole blob again fails the read, in one line.
func TestBlobResumes(t *testing.T) {
	blob := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	d := digest.FromBytes(blob)
	var gets, ranges atomic.Int32
	var ignoreRange atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := gets.Add(1)
		rg := r.Header.Get("Range")
		if rg != "" {
			ranges.Add(1)
		}
		if rg == "" || ignoreRange.Load() {
			// The whole blob announced, a third of it sent, then the connection cut.
			w.Header().Set("Content-Length", strconv.Itoa(len(blob)))
			w.WriteHeader(http.StatusOK)
			if n > 1 && ignoreRange.Load() {
				w.Write(blob)
				return
			}
			w.Write(blob[:len(blob)/3])
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(blob))
	}))
	defer srv.Close()
	repo, err := name.NewRepository(strings.TrimPrefix(srv.URL, "http://")+"/test/app", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	rc := &repoClient{repo: repo, hc: srv.Client()}

	body := rc.blob(context.Background(), d, int64(len(blob)))
	got, err := io.ReadAll(body)
	body.Close()
	if err != nil || digest.FromBytes(got) != d {
		t.Fatalf("resumed read: %d bytes, %v; want the blob whole", len(got), err)
	}
	if gets.Load() != 2 || ranges.Load() != 1 {
		t.Errorf("%d GETs, %d with Range; want 2, 1", gets.Load(), ranges.Load())
	}
	gets.Store(0)

	// A body longer than the descriptor says is refused as it comes.
	body = rc.blob(context.Background(), d, int64(len(blob)/4))
	_, err = io.ReadAll(body)
	body.Close()
	if err == nil || !strings.Contains(err.Error(), "more than the") {
		t.Errorf("a body longer than its size: %v; want an error saying so", err)
	}

	ignoreRange.Store(true)
	gets.Store(0)
	body = rc.blob(context.Background(), d, int64(len(blob)))
	_, err = io.ReadAll(body)
	body.Close()
	if err == nil || !strings.Contains(err.Error(), "cannot resume") || !strings.Contains(err.Error(), d.String()) ||
		strings.Contains(err.Error(), "\n") {
		t.Errorf("a server that ignores Range: %v; want one line saying it cannot resume %s", err, d)
	}
}
