package registry

import (
	"net/http"
	"testing"
)

func TestParseReference(t *testing.T) {
	c, err := New(Options{Insecure: []string{"reg.example:5000", "plain.example"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ in, name, scheme string }{
		{"alpine", "index.docker.io/library/alpine:latest", "https"},
		{"docker.io/library/alpine:3.20", "index.docker.io/library/alpine:3.20", "https"},
		{"user/app", "index.docker.io/user/app:latest", "https"},
		{"ghcr.io/acme/app:v2", "ghcr.io/acme/app:v2", "https"},
		{"alpine@sha256:" + hex64, "index.docker.io/library/alpine@sha256:" + hex64, "https"},
		{"localhost:5000/app", "localhost:5000/app:latest", "http"},
		{"localhost/app:1", "localhost/app:1", "http"},
		{"127.0.0.1:5000/test/app:1", "127.0.0.1:5000/test/app:1", "http"},
		{"127.1.2.3:5000/test/app:1", "127.1.2.3:5000/test/app:1", "http"},
		{"[::1]:5000/app:1", "[::1]:5000/app:1", "http"},
		{"reg.example:5000/app:1", "reg.example:5000/app:1", "http"},
		{"plain.example/app:1", "plain.example/app:1", "http"},
		{"reg.example:6000/app:1", "reg.example:6000/app:1", "https"},
	} {
		ref, err := c.ParseReference(tc.in)
		if err != nil {
			t.Errorf("%s: %v", tc.in, err)
			continue
		}
		if got := ref.Name(); got != tc.name {
			t.Errorf("%s: name %s, want %s", tc.in, got, tc.name)
		}
		if got := ref.Context().Scheme(); got != tc.scheme {
			t.Errorf("%s: scheme %s, want %s", tc.in, got, tc.scheme)
		}
	}
	for _, bad := range []string{"UPPER/app", "app:", "app@sha256:12"} {
		if _, err := c.ParseReference(bad); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

const hex64 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// urlRecorder answers every request with 204 and remembers its URL.
type urlRecorder struct{ urls []string }

func (r *urlRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	r.urls = append(r.urls, req.URL.String())
	return &http.Response{StatusCode: http.StatusNoContent, Body: http.NoBody, Request: req}, nil
}

// A request go-containerregistry would send over plain HTTP goes over HTTPS unless its
// registry is loopback or insecure: ggcr itself picks HTTP for private addresses.
func TestHTTPSOnly(t *testing.T) {
	c, err := New(Options{Insecure: []string{"10.9.9.9:5000"}})
	if err != nil {
		t.Fatal(err)
	}
	rec := &urlRecorder{}
	rt := httpsOnly{next: rec, plain: c.plainHTTP}
	for _, u := range []string{
		"http://10.1.2.3:5000/v2/", "http://192.168.1.1/v2/", "https://ghcr.io/v2/",
		"http://127.0.0.1:5000/v2/", "http://localhost/v2/", "http://10.9.9.9:5000/v2/",
	} {
		req, err := http.NewRequest(http.MethodGet, u, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := rt.RoundTrip(req); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{
		"https://10.1.2.3:5000/v2/", "https://192.168.1.1/v2/", "https://ghcr.io/v2/",
		"http://127.0.0.1:5000/v2/", "http://localhost/v2/", "http://10.9.9.9:5000/v2/",
	}
	for i := range want {
		if rec.urls[i] != want[i] {
			t.Errorf("request %d went to %s, want %s", i, rec.urls[i], want[i])
		}
	}
}
