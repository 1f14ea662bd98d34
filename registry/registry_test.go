package registry

import (
	"context"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"
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

// fakeRegistry answers /v2/, one manifest (test/app:1) and HEADs of one blob, and
// remembers whether each request came over TLS.
type fakeRegistry struct {
	mu  sync.Mutex
	tls []bool
}

const fakeManifest = `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:` + hex64 + `","size":2},"layers":[]}`

func (f *fakeRegistry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.tls = append(f.tls, r.TLS != nil)
	f.mu.Unlock()
	switch r.URL.Path {
	case "/v2/":
	case "/v2/test/app/manifests/1":
		w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
		w.Header().Set("Docker-Content-Digest", digest.FromString(fakeManifest).String())
		io.WriteString(w, fakeManifest)
	case "/v2/test/app/blobs/sha256:" + hex64:
		w.Header().Set("Content-Length", "2")
	default:
		http.NotFound(w, r)
	}
}

// A loopback registry that speaks TLS gets every request over HTTPS (docker's rule for
// insecure registries: HTTPS first, then HTTP), though its references' Scheme() says
// http; its certificate is checked against the CAs of CertDir, and one not trusted is one
// line saying so, or of the registry's directory under certs.d without CertDir. A
// loopback registry that speaks plain HTTP still is reached.
func TestLoopbackTLS(t *testing.T) {
	ctx := context.Background()
	for _, useTLS := range []bool{true, false} {
		f := &fakeRegistry{}
		var srv *httptest.Server
		if useTLS {
			srv = httptest.NewTLSServer(f)
		} else {
			srv = httptest.NewServer(f)
		}
		defer srv.Close()
		certDir := t.TempDir()
		if useTLS {
			ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
			if err := os.WriteFile(filepath.Join(certDir, "ca.crt"), ca, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		host := strings.TrimPrefix(strings.TrimPrefix(srv.URL, "https://"), "http://")
		c, err := New(Options{CertDir: certDir})
		if err != nil {
			t.Fatal(err)
		}
		ref, err := c.ParseReference(host + "/test/app:1")
		if err != nil {
			t.Fatal(err)
		}
		if ref.Context().Scheme() != "http" {
			t.Fatalf("%s: scheme %s, want http (go-containerregistry's rule for loopback)", ref, ref.Context().Scheme())
		}
		raw, _, _, err := c.Manifest(ctx, ref)
		if err != nil || string(raw) != fakeManifest {
			t.Fatalf("TLS %v: Manifest(%s): %q, %v", useTLS, ref, raw, err)
		}
		rc, err := c.repoClient(ctx, ref.Context(), transport.PullScope)
		if err != nil {
			t.Fatal(err)
		}
		if has, err := rc.hasBlob(ctx, digest.Digest("sha256:"+hex64)); err != nil || !has {
			t.Fatalf("TLS %v: hasBlob: %v, %v", useTLS, has, err)
		}
		f.mu.Lock()
		for i, overTLS := range f.tls {
			// Only a ping goes over the scheme the registry does not speak, and fails.
			if overTLS != useTLS {
				t.Errorf("TLS %v: request %d came over TLS %v", useTLS, i, overTLS)
			}
		}
		if len(f.tls) < 4 {
			t.Errorf("TLS %v: %d requests, want at least 2 pings, a manifest GET and a blob HEAD", useTLS, len(f.tls))
		}
		f.mu.Unlock()

		if !useTLS {
			continue
		}
		// Without the CA: one line saying the certificate is not trusted, naming
		// --cert-dir and certs.d.
		c, err = New(Options{})
		if err != nil {
			t.Fatal(err)
		}
		_, _, _, err = c.Manifest(ctx, ref)
		want := "registry " + host + ": TLS certificate not trusted (x509: certificate signed by unknown authority): give its CA as a *.crt in --cert-dir DIR or in /etc/docker/certs.d/" + host + "/"
		if err == nil || err.Error() != want {
			t.Errorf("Manifest(%s) without its CA: %v\nwant: %s", ref, err, want)
		}

		// The CA in the registry's directory under a certs.d, without CertDir: trusted.
		certsD := t.TempDir()
		if err := os.Rename(certDir, filepath.Join(certsD, host)); err != nil {
			t.Fatal(err)
		}
		saved := certsDirs
		t.Cleanup(func() { certsDirs = saved })
		certsDirs = []string{filepath.Join(t.TempDir(), "none"), certsD}
		if c, err = New(Options{}); err != nil {
			t.Fatal(err)
		}
		if _, _, _, err = c.Manifest(ctx, ref); err != nil {
			t.Errorf("Manifest(%s) with its CA in %s: %v", ref, filepath.Join(certsD, host), err)
		}
	}
}

// tlsConfig reads a certificate directory as docker does: bad files are one error naming
// them.
func TestTLSConfigErrors(t *testing.T) {
	for _, c := range []struct{ file, content, want string }{
		{"ca.crt", "not PEM", "ca.crt: no PEM certificate in it"},
		{"client.cert", "x", "client certificate"},
		{"client.key", "x", "client key"},
	} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, c.file), []byte(c.content), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := New(Options{CertDir: dir}); err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), dir) {
			t.Errorf("%s: error %v, want one naming it with %q", c.file, err, c.want)
		}
	}
	if _, err := New(Options{CertDir: "/nonexistent"}); err == nil || !strings.Contains(err.Error(), "/nonexistent") {
		t.Errorf("a missing certificate directory: error %v", err)
	}
}
