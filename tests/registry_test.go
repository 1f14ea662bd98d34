package tests

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// testRegistry is a CNCF distribution registry (Debian's docker-registry) serving on
// 127.0.0.1 at a free port, its storage and access log in the test's temp directory.
type testRegistry struct {
	host    string // 127.0.0.1:PORT
	dir     string // storage root
	logPath string // its stderr and stdout: the access log among them
	cfgPath string
	cmd     *exec.Cmd
	opts    registryOpts
	exited  chan struct{} // closed when cmd has exited
	certDir string        // with opts.tls: the test CA as ca.crt, what --cert-dir takes
	client  *http.Client  // trusts the test CA
}

// registryOpts choose what a test registry asks of its clients; the zero value is plain
// HTTP without auth.
type registryOpts struct {
	// tls serves HTTPS only, with a certificate for IP 127.0.0.1 from a CA the test makes
	// with openssl.
	tls bool
	// user and password, user set, are the only credentials accepted (htpasswd basic auth).
	user, password string
}

// registryBin is where Debian's docker-registry package puts the registry.
const registryBin = "/usr/bin/docker-registry"

// needRegistry returns the registry binary. Missing, it fails the test under CI (CI=true)
// and on any machine, naming the package, as for the importers: the pull and push tests
// are the only ones that reach a registry.
func needRegistry(t *testing.T) string {
	t.Helper()
	if isExecutable(registryBin) {
		return registryBin
	}
	if p, err := exec.LookPath("docker-registry"); err == nil {
		return p
	}
	t.Fatalf("docker-registry not found (%s), the registry the pull and push tests run: apt-get install docker-registry (or scripts/install-deps.sh)", registryBin)
	return ""
}

// freePort returns a TCP port free on 127.0.0.1 a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startRegistry starts a plain HTTP registry without auth for the test, stopped (by its
// PID) at the end of it.
func startRegistry(t *testing.T) *testRegistry {
	t.Helper()
	return startRegistryWith(t, registryOpts{})
}

// startRegistryWith starts a registry as opts say for the test, stopped (by its PID) at
// the end of it.
func startRegistryWith(t *testing.T, opts registryOpts) *testRegistry {
	t.Helper()
	bin := needRegistry(t)
	tmp := t.TempDir()
	r := &testRegistry{dir: filepath.Join(tmp, "storage"), logPath: filepath.Join(tmp, "registry.log"),
		opts: opts, client: &http.Client{}}
	var extra string
	if opts.tls {
		r.certDir = filepath.Join(tmp, "certs")
		pki := filepath.Join(tmp, "pki")
		makeServerCert(t, pki, r.certDir)
		pool := x509.NewCertPool()
		ca, err := os.ReadFile(filepath.Join(r.certDir, "ca.crt"))
		if err != nil || !pool.AppendCertsFromPEM(ca) {
			t.Fatalf("reading the test CA: %v", err)
		}
		r.client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
		extra += fmt.Sprintf("  tls:\n    certificate: %s\n    key: %s\n",
			filepath.Join(pki, "server.crt"), filepath.Join(pki, "server.key"))
	}
	if opts.user != "" {
		htpasswd := needProgram(t, "htpasswd", "apache2-utils")
		out := ok(t, "", htpasswd, "-Bbn", opts.user, opts.password)
		path := filepath.Join(tmp, "htpasswd")
		if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
		extra += fmt.Sprintf("auth:\n  htpasswd:\n    realm: imgfs-test\n    path: %s\n", path)
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		r.host = fmt.Sprintf("127.0.0.1:%d", freePort(t))
		// In distribution 2.8 the access log is on unless log.accesslog.disabled is true.
		config := fmt.Sprintf(`version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
`, r.dir, r.host) + extra
		r.cfgPath = filepath.Join(tmp, "config.yml")
		if err := os.WriteFile(r.cfgPath, []byte(config), 0o644); err != nil {
			t.Fatal(err)
		}
		up := r.run(t, bin)
		select {
		case <-r.exited:
			lastErr = fmt.Errorf("registry exited at start: %s", r.logTail())
			continue // maybe the port was taken meanwhile
		default:
		}
		if !up {
			r.stop()
			t.Fatalf("registry on %s did not answer within 10s: %s", r.host, r.logTail())
		}
		t.Cleanup(func() {
			r.stop()
			<-r.exited // the last one run
		})
		return r
	}
	t.Fatal(lastErr)
	return nil
}

// run starts the registry binary bin with r's config, its output appended to r's log, and
// reports whether it answers within 10 s (or exited, which r.exited then says).
func (r *testRegistry) run(t *testing.T, bin string) bool {
	t.Helper()
	logf, err := os.OpenFile(r.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", r.cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err = cmd.Start()
	logf.Close()
	if err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	r.cmd, r.exited = cmd, exited
	return waitFor(10*time.Second, func() bool {
		select {
		case <-exited:
			return true
		default:
		}
		resp, err := r.client.Get(r.url("/v2/"))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK || (r.opts.user != "" && resp.StatusCode == http.StatusUnauthorized)
	})
}

// stop kills the registry by its PID.
func (r *testRegistry) stop() {
	if r.cmd != nil && r.cmd.Process != nil {
		r.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() {
			if !waitFor(5*time.Second, func() bool { return !alive(r.cmd.Process.Pid) }) {
				r.cmd.Process.Kill()
			}
			close(done)
		}()
		<-done
	}
}

// log returns what the registry logged so far.
func (r *testRegistry) log(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(r.logPath)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func (r *testRegistry) logTail() string {
	b, _ := os.ReadFile(r.logPath)
	s := strings.TrimSpace(string(b))
	if len(s) > 2000 {
		s = s[len(s)-2000:]
	}
	return s
}

// accessLog returns the access log lines of requests, in the combined log format the
// registry writes ("GET /v2/test/app/blobs/sha256:... HTTP/1.1" 200 ...).
func (r *testRegistry) accessLog(t *testing.T) []string {
	t.Helper()
	var lines []string
	for _, l := range strings.Split(r.log(t), "\n") {
		if strings.Contains(l, `"GET /v2/`) || strings.Contains(l, `"HEAD /v2/`) || strings.Contains(l, `"PUT /v2/`) ||
			strings.Contains(l, `"POST /v2/`) || strings.Contains(l, `"PATCH /v2/`) || strings.Contains(l, `"DELETE /v2/`) {
			lines = append(lines, l)
		}
	}
	return lines
}

// blobGets returns the access log lines of GETs of blobs.
func (r *testRegistry) blobGets(t *testing.T) []string {
	t.Helper()
	var gets []string
	for _, l := range r.accessLog(t) {
		if strings.Contains(l, `"GET /v2/`) && strings.Contains(l, "/blobs/") {
			gets = append(gets, l)
		}
	}
	return gets
}

// skopeoPush copies the image named ref in the OCI layout (an imgfs store) at dir to the
// registry as repoTag ("test/app:1").
func (r *testRegistry) skopeoPush(t *testing.T, dir, ref, repoTag string) {
	t.Helper()
	skopeo := needProgram(t, "skopeo", "skopeo")
	args := append([]string{"copy", "--quiet"}, r.skopeoFlags("dest-")...)
	ok(t, "", skopeo, append(args, "oci:"+dir+":"+ref, "docker://"+r.host+"/"+repoTag)...)
}

// skopeoFlags are the flags skopeo needs for the registry, named with prefix ("dest-" for
// skopeo copy's destination, "" for skopeo inspect): its CA or no TLS, its credentials.
func (r *testRegistry) skopeoFlags(prefix string) []string {
	flags := []string{"--" + prefix + "tls-verify=false"}
	if r.opts.tls {
		flags = []string{"--" + prefix + "cert-dir=" + r.certDir}
	}
	if r.opts.user != "" {
		flags = append(flags, "--"+prefix+"creds="+r.opts.user+":"+r.opts.password)
	}
	return flags
}

// url returns the URL of path on the registry.
func (r *testRegistry) url(path string) string {
	if r.opts.tls {
		return "https://" + r.host + path
	}
	return "http://" + r.host + path
}

// makeServerCert makes with openssl, in pki, a CA and a certificate for IP 127.0.0.1 that
// it signs (server.crt, server.key), and puts the CA alone in certDir as ca.crt.
func makeServerCert(t *testing.T, pki, certDir string) {
	t.Helper()
	openssl := needProgram(t, "openssl", "openssl")
	for _, d := range []string{pki, certDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ext := filepath.Join(pki, "server.ext")
	if err := os.WriteFile(ext, []byte("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ec := []string{"-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"}
	ok(t, pki, openssl, append([]string{"req", "-x509", "-new", "-days", "2", "-subj", "/CN=imgfs test CA",
		"-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
		"-keyout", "ca.key", "-out", filepath.Join(certDir, "ca.crt")}, ec...)...)
	ok(t, pki, openssl, append([]string{"req", "-new", "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr"}, ec...)...)
	ok(t, pki, openssl, "x509", "-req", "-in", "server.csr", "-CA", filepath.Join(certDir, "ca.crt"), "-CAkey", "ca.key",
		"-set_serial", "2", "-days", "2", "-extfile", ext, "-out", "server.crt")
}

// TestRegistryHarness checks the test registry itself: it answers, logs accesses, and
// takes an image skopeo pushes from a store.
func TestRegistryHarness(t *testing.T) {
	r := startRegistry(t)
	resp, err := http.Get("http://" + r.host + "/v2/_catalog")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if !waitFor(5*time.Second, func() bool { return len(r.accessLog(t)) > 0 }) {
		t.Fatalf("no access log line after GET /v2/_catalog; log:\n%s", r.logTail())
	}
}
