package registry

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"syscall"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"
)

// An upload's next request goes where the registry's Location says, made absolute, but
// never to a private address of another host than the registry's.
func TestNextLocation(t *testing.T) {
	for _, tc := range []struct{ reg, loc, want string }{
		{"http://127.0.0.1:5000/v2/a/blobs/uploads/", "/v2/a/blobs/uploads/u?_state=x", "http://127.0.0.1:5000/v2/a/blobs/uploads/u?_state=x"},
		{"https://reg.example/v2/a/blobs/uploads/", "https://storage.example/up/1", "https://storage.example/up/1"},
		{"https://10.0.0.5/v2/a/blobs/uploads/", "https://10.0.0.5/v2/a/blobs/uploads/u", "https://10.0.0.5/v2/a/blobs/uploads/u"},
		{"https://reg.example/v2/a/blobs/uploads/", "http://169.254.169.254/latest", ""},
		{"https://reg.example/v2/a/blobs/uploads/", "http://10.1.2.3/x", ""},
		{"https://reg.example/v2/a/blobs/uploads/", "http://localhost:8080/x", ""},
		{"https://reg.example/v2/a/blobs/uploads/", "file:///etc/passwd", ""},
		{"https://reg.example/v2/a/blobs/uploads/", "", ""},
	} {
		u, _ := url.Parse(tc.reg)
		resp := &http.Response{Header: http.Header{}, Request: &http.Request{URL: u}}
		if tc.loc != "" {
			resp.Header.Set("Location", tc.loc)
		}
		got, err := nextLocation(resp)
		if tc.want == "" {
			if err == nil {
				t.Errorf("Location %q from %s: %s, want an error", tc.loc, tc.reg, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Location %q from %s: %q, %v; want %q", tc.loc, tc.reg, got, err, tc.want)
		}
	}
}

// A blob's push is tried again on what may pass (a broken connection, 5xx, 429), not on
// what will not (404, denied, an interrupt), also once blobError has described it.
func TestTemporary(t *testing.T) {
	r := &repoClient{repo: mustRepo(t, "127.0.0.1:5000/test/a")}
	d := digest.FromString("x")
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&transport.Error{StatusCode: http.StatusServiceUnavailable}, true},
		{&transport.Error{StatusCode: http.StatusTooManyRequests}, true},
		{&transport.Error{StatusCode: http.StatusNotFound}, false},
		{&transport.Error{StatusCode: http.StatusForbidden, Errors: []transport.Diagnostic{{Code: transport.DeniedErrorCode}}}, false},
		{&url.Error{Op: "Patch", URL: "http://127.0.0.1:5000/", Err: syscall.ECONNRESET}, true},
		{io.ErrUnexpectedEOF, true},
		{&url.Error{Op: "Put", URL: "http://127.0.0.1:5000/", Err: context.Canceled}, false},
		{errors.New("upload answer without a Location header"), false},
	} {
		if got := temporary(tc.err); got != tc.want {
			t.Errorf("temporary(%v) = %v, want %v", tc.err, got, tc.want)
		}
		if got := temporary(r.blobError(tc.err, d)); got != tc.want {
			t.Errorf("temporary(blobError(%v)) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func mustRepo(t *testing.T, s string) name.Repository {
	t.Helper()
	r, err := name.NewRepository(s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
