package registry

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// certsDirs hold docker's and podman's per-registry certificate directories, HOST[:PORT]
// under each, read when no certificate directory is given.
var certsDirs = []string{"/etc/docker/certs.d", "/etc/containers/certs.d"}

// newTLSTransport returns the transport that trusts, besides the system's CAs, those of
// certDir for every host, or without certDir those of each host's directories under
// certsDirs; and presents their client certificate.
func newTLSTransport(base *http.Transport, certDir string) (http.RoundTripper, error) {
	if certDir == "" {
		return &certsDTransport{base: base, byHost: map[string]http.RoundTripper{}}, nil
	}
	cfg, err := tlsConfig(base.TLSClientConfig, []string{certDir})
	if err != nil {
		return nil, err
	}
	t := base.Clone()
	t.TLSClientConfig = cfg
	return t, nil
}

// certsDTransport sends each host's requests with the TLS settings of its directories
// under certsDirs, read at its first request: base when it has none.
type certsDTransport struct {
	base   *http.Transport
	mu     sync.Mutex
	byHost map[string]http.RoundTripper
}

func (t *certsDTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	rt, err := t.forHost(req.URL.Host)
	if err != nil {
		return nil, err
	}
	return rt.RoundTrip(req)
}

func (t *certsDTransport) forHost(host string) (http.RoundTripper, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if rt, ok := t.byHost[host]; ok {
		return rt, nil
	}
	var dirs []string
	for _, d := range certsDirs {
		if fi, err := os.Stat(filepath.Join(d, host)); err == nil && fi.IsDir() {
			dirs = append(dirs, filepath.Join(d, host))
		}
	}
	var rt http.RoundTripper = t.base
	if len(dirs) > 0 {
		cfg, err := tlsConfig(t.base.TLSClientConfig, dirs)
		if err != nil {
			return nil, err
		}
		tr := t.base.Clone()
		tr.TLSClientConfig = cfg
		rt = tr
	}
	t.byHost[host] = rt
	return rt, nil
}

// tlsConfig returns base with the certificate directories dirs read as docker and podman
// do: every *.crt holds CAs, trusted with the system's; a *.cert and the *.key of the same
// name are a client certificate.
func tlsConfig(base *tls.Config, dirs []string) (*tls.Config, error) {
	cfg := &tls.Config{}
	if base != nil {
		cfg = base.Clone()
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	for _, dir := range dirs {
		ents, err := os.ReadDir(dir)
		if err != nil {
			return nil, fmt.Errorf("certificate directory: %v", err)
		}
		for _, e := range ents {
			p := filepath.Join(dir, e.Name())
			stem := strings.TrimSuffix(p, filepath.Ext(p))
			switch filepath.Ext(p) {
			case ".crt":
				pem, err := os.ReadFile(p)
				if err != nil {
					return nil, err
				}
				if !pool.AppendCertsFromPEM(pem) {
					return nil, fmt.Errorf("CA file %s: no PEM certificate in it", p)
				}
			case ".cert":
				cert, err := tls.LoadX509KeyPair(p, stem+".key")
				if err != nil {
					return nil, fmt.Errorf("client certificate %s: %v", p, err)
				}
				cfg.Certificates = append(cfg.Certificates, cert)
			case ".key":
				if _, err := os.Stat(stem + ".cert"); err != nil {
					return nil, fmt.Errorf("client key %s: no client certificate %s.cert with it", p, filepath.Base(stem))
				}
			}
		}
	}
	cfg.RootCAs = pool
	return cfg, nil
}
