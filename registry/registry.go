// Package registry talks to OCI registries (CNCF distribution, Harbor, Zot, GHCR, Docker
// Hub...) through go-containerregistry, which does the auth (bearer tokens, basic auth,
// docker's config.json and credential helpers through the default keychain), retries and
// redirects. It resolves names by docker's rules and pulls images into a store.
package registry

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"
)

// Options configure a Client.
type Options struct {
	// Insecure lists the registries (host or host:port) that may be reached over plain
	// HTTP, as docker's --insecure-registry: HTTPS is tried first. Loopback ones always may.
	Insecure []string
	// CertDir holds the TLS files for every registry, as podman's --cert-dir: each *.crt
	// CAs trusted besides the system's, a *.cert and its *.key a client certificate. ""
	// means each registry's directory under /etc/docker/certs.d and
	// /etc/containers/certs.d (HOST[:PORT]), those that exist, as docker and podman read.
	CertDir string
	// Keychain finds credentials; nil means authn.DefaultKeychain (docker's config.json
	// and its credential helpers).
	Keychain authn.Keychain
	// UserAgent is sent with every request ("" for go-containerregistry's).
	UserAgent string
	// Timeout fails a request that gets no answer, or a body that delivers no byte, for
	// that long; a transfer that keeps moving never times out. 0 means DefaultTimeout.
	Timeout time.Duration
}

// DefaultTimeout is Options.Timeout's default.
const DefaultTimeout = 30 * time.Second

// Client reaches registries.
type Client struct {
	puller   *remote.Puller
	pusher   *remote.Pusher
	ropts    []remote.Option // New's options: the keychain, the httpsOnly transport, the user agent
	keychain authn.Keychain
	rt       http.RoundTripper // the httpsOnly transport
	ua       string
	insecure map[string]bool
}

// New returns a Client.
func New(opts Options) (*Client, error) {
	kc := opts.Keychain
	if kc == nil {
		kc = authn.DefaultKeychain
	}
	c := &Client{insecure: map[string]bool{}, keychain: kc, ua: opts.UserAgent}
	for _, h := range opts.Insecure {
		c.insecure[strings.ToLower(h)] = true
	}
	tlsRT, err := newTLSTransport(remote.DefaultTransport.(*http.Transport), opts.CertDir)
	if err != nil {
		return nil, err
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	c.rt = httpsOnly{next: idleTimeout{next: tlsRT, idle: timeout}, plain: c.plainHTTP}
	ropts := []remote.Option{
		remote.WithAuthFromKeychain(kc),
		remote.WithTransport(c.rt),
		remote.WithRetryBackoff(retryBackoff),
		remote.WithRetryPredicate(retryable),
		remote.WithRetryStatusCodes(retryCodes...),
	}
	if opts.UserAgent != "" {
		ropts = append(ropts, remote.WithUserAgent(opts.UserAgent))
	}
	p, err := remote.NewPuller(ropts...)
	if err != nil {
		return nil, err
	}
	c.puller = p
	if c.pusher, err = remote.NewPusher(ropts...); err != nil {
		return nil, err
	}
	c.ropts = ropts
	return c, nil
}

// ParseReference reads a reference by docker's rules: "alpine" is
// docker.io/library/alpine:latest, NAME@sha256:... names a digest. Loopback registries
// (localhost, 127.0.0.0/8, ::1) and those given as insecure may be reached over plain
// HTTP, as docker does: go-containerregistry pings them over HTTPS first, then HTTP, and
// sends every request to the registry with the scheme that answered (its
// schemeTransport), whatever the reference's Scheme() says.
func (c *Client) ParseReference(s string) (name.Reference, error) {
	ref, err := name.ParseReference(s)
	if err != nil {
		return nil, fmt.Errorf("invalid reference %q: %v", s, err)
	}
	host := ref.Context().RegistryStr()
	if c.plainHTTP(host) {
		ref, err = name.ParseReference(s, name.Insecure)
		if err != nil {
			return nil, fmt.Errorf("invalid reference %q: %v", s, err)
		}
	}
	return ref, nil
}

// httpsOnly sends over HTTPS the requests that go-containerregistry would send over plain
// HTTP to a host that may not have it: ggcr picks HTTP by itself for private (RFC 1918)
// addresses, where imgfs, as docker, uses plain HTTP only for loopback registries and
// those given as insecure. A registry that only speaks HTTP there then fails, instead of
// being talked to in the clear.
type httpsOnly struct {
	next  http.RoundTripper
	plain func(host string) bool
}

func (t httpsOnly) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" && !t.plain(req.URL.Host) {
		req = req.Clone(req.Context())
		req.URL.Scheme = "https"
	}
	return t.next.RoundTrip(req)
}

// plainHTTP says whether the registry host (maybe with a port) is reached over HTTP.
func (c *Client) plainHTTP(host string) bool {
	host = strings.ToLower(host)
	if c.insecure[host] {
		return true
	}
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	if c.insecure[h] {
		return true
	}
	h = strings.Trim(h, "[]")
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// Manifest fetches the manifest or image index ref names, verified against its digest:
// its bytes as the registry holds them, their digest and media type.
func (c *Client) Manifest(ctx context.Context, ref name.Reference) ([]byte, digest.Digest, string, error) {
	d, err := c.puller.Get(ctx, ref)
	if err != nil {
		if hasCode(err, transport.ManifestUnknownErrorCode) {
			// Some registries (distribution 2.8) answer so for a missing repository too:
			// its tag list tells which.
			if _, lerr := c.puller.List(ctx, ref.Context()); hasCode(lerr, transport.NameUnknownErrorCode) {
				err = lerr
			}
		}
		return nil, "", "", describe(err, ref, "")
	}
	got := digest.FromBytes(d.Manifest)
	if dr, ok := ref.(name.Digest); ok && digest.Digest(dr.DigestStr()) != got {
		return nil, "", "", fmt.Errorf("%s: manifest from registry %s hashes to %s", ref, ref.Context().RegistryStr(), got)
	}
	return d.Manifest, got, string(d.MediaType), nil
}

// repoClient sends requests to one repository of a registry over go-containerregistry's
// transport, which gets and renews the tokens for its scopes with the Client's keychain,
// through the Client's httpsOnly transport. Push and pull use it for what remote does not
// offer as imgfs needs it (a HEAD whose answer is kept, blob uploads that mount from the
// repositories the store remembers and tell their progress, a blob's bytes unverified by
// remote because the store verifies them, resumed with a Range request when the body
// breaks). Its requests are retried as remote's are.
type repoClient struct {
	repo name.Repository
	hc   *http.Client
}

// repoClient returns a repoClient for repo with the given scope (transport.PullScope or
// transport.PushScope), and the further scopes also asks for (a push that mounts blobs
// needs to pull from the repositories it mounts them from).
func (c *Client) repoClient(ctx context.Context, repo name.Repository, scope string, also ...string) (*repoClient, error) {
	auth, err := authn.Resolve(ctx, c.keychain, repo)
	if err != nil {
		return nil, describe(err, repo.Tag(""), "")
	}
	// As remote stacks its transports: retries under the user agent, the token transport
	// on top.
	rt := transport.NewRetry(c.rt, transport.WithRetryBackoff(retryBackoff),
		transport.WithRetryPredicate(retryable), transport.WithRetryStatusCodes(retryCodes...))
	if c.ua != "" {
		rt = transport.NewUserAgent(rt, c.ua)
	}
	rt, err = transport.NewWithContext(ctx, repo.Registry, auth, rt, append([]string{repo.Scope(scope)}, also...))
	if err != nil {
		return nil, describe(err, repo.Tag(""), "")
	}
	return &repoClient{repo: repo, hc: &http.Client{Transport: rt}}, nil
}

// url returns the URL of path (as "blobs/sha256:...") in the repository.
func (r *repoClient) url(path string) string {
	return fmt.Sprintf("%s://%s/v2/%s/%s", r.repo.Registry.Scheme(), r.repo.RegistryStr(), r.repo.RepositoryStr(), path)
}

// hasBlob says whether the repository has blob d, with a HEAD.
func (r *repoClient) hasBlob(ctx context.Context, d digest.Digest) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, r.url("blobs/"+d.String()), nil)
	if err != nil {
		return false, err
	}
	resp, err := r.hc.Do(req)
	if err != nil {
		return false, r.blobError(err, d)
	}
	resp.Body.Close()
	if err := transport.CheckError(resp, http.StatusOK, http.StatusNotFound); err != nil {
		return false, r.blobError(err, d)
	}
	return resp.StatusCode == http.StatusOK, nil
}

// hasCode says whether err is a registry's answer with the given error code.
func hasCode(err error, code transport.ErrorCode) bool {
	var te *transport.Error
	if !errors.As(err, &te) {
		return false
	}
	for _, d := range te.Errors {
		if d.Code == code {
			return true
		}
	}
	return false
}

// describe turns a registry's error answer into one line naming the registry, the
// repository and the tag or blob.
func describe(err error, ref name.Reference, blob digest.Digest) error {
	repo := ref.Context().RepositoryStr()
	reg := ref.Context().RegistryStr()
	what := "manifest " + ref.Identifier()
	if _, ok := ref.(name.Tag); ok {
		what = "tag " + ref.Identifier()
	}
	if blob != "" {
		what = "blob " + blob.String()
	} else if ref.Identifier() == "" {
		what = "token" // a repoClient's, before any request
	}
	var ce *tls.CertificateVerificationError
	if errors.As(err, &ce) {
		return fmt.Errorf("registry %s: TLS certificate not trusted (%v): give its CA as a *.crt in --cert-dir DIR or in /etc/docker/certs.d/%s/", reg, ce.Err, reg)
	}
	var te *transport.Error
	if errors.As(err, &te) {
		codes := map[transport.ErrorCode]bool{}
		for _, d := range te.Errors {
			codes[d.Code] = true
		}
		switch {
		case codes[transport.NameUnknownErrorCode]:
			return fmt.Errorf("repository %s not found on registry %s", repo, reg)
		case codes[transport.ManifestUnknownErrorCode] || (blob == "" && te.StatusCode == 404):
			return fmt.Errorf("%s not found in repository %s on registry %s", what, repo, reg)
		case codes[transport.BlobUnknownErrorCode] || te.StatusCode == 404:
			return fmt.Errorf("%s not found in repository %s on registry %s", what, repo, reg)
		case codes[transport.UnauthorizedErrorCode] || te.StatusCode == 401:
			return fmt.Errorf("registry %s refused access to repository %s (%s): wrong or missing credentials", reg, repo, what)
		case codes[transport.DeniedErrorCode] || te.StatusCode == 403:
			return fmt.Errorf("registry %s denied access to repository %s (%s)", reg, repo, what)
		}
		// Its text without the request, which the line names already, and without the
		// status said twice.
		bare := *te
		bare.Request = nil
		status := fmt.Sprintf("%d %s", te.StatusCode, http.StatusText(te.StatusCode))
		msg := strings.TrimPrefix(strings.TrimPrefix(bare.Error(), "unexpected status code "+status), ": ")
		if msg != "" {
			msg = ": " + oneLine(msg)
		}
		return fmt.Errorf("registry %s, repository %s, %s: status %s%s", reg, repo, what, status, msg)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // its URL says again what the line says
	}
	return fmt.Errorf("registry %s, repository %s, %s: %v", reg, repo, what, oneLine(err.Error()))
}

func oneLine(s string) string {
	return strings.ReplaceAll(strings.TrimSpace(s), "\n", "; ")
}
