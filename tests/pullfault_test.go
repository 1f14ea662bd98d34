package tests

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imgfs/imgfs/store"
	"github.com/opencontainers/go-digest"
)

// The fault tests pull test/fault:1, an image of two layers (layer 0, about 5 MB, and a
// big one of 16 MB that does not compress), through a faultProxy: an HTTP proxy on
// loopback in front of the test registry that, on cue, holds, cuts or refuses the big
// layer's download, so that what is finished when the fault strikes is known.

// bigLayerSize is the size of the big layer's one file, random bytes: the registry cannot
// have put the rest of it into the socket buffers when the proxy holds it after
// faultAt bytes (the proxy's receive buffer is small, the registry's send buffer at most a
// few MB).
const bigLayerSize = 16 << 20

// faultAt is how far into the big layer's body the proxy strikes.
const faultAt = 2 << 20

func bigLayer() []entry {
	b := make([]byte, bigLayerSize)
	r := rand.New(rand.NewChaCha8([32]byte{2}))
	for i := 0; i < len(b); i += 8 {
		v := r.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return []entry{
		dir("big/", 0o755),
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "big/16m", Mode: 0o644, Size: int64(len(b))}, body: b},
	}
}

// faultImage pushes test/fault:1 to r and returns it.
func faultImage(t *testing.T, r *testRegistry) image {
	t.Helper()
	orig := filepath.Join(t.TempDir(), "orig")
	s, err := store.Open(orig)
	if err != nil {
		t.Fatal(err)
	}
	img, err := writeImage(s, "test/fault:1", layer0(), bigLayer())
	if err != nil {
		t.Fatal(err)
	}
	r.skopeoPush(t, orig, "1", "test/fault:1")
	return img
}

// faultProxy is an HTTP proxy on 127.0.0.1 in front of a registry. It logs the requests
// it passes, answers with a status of its own when answer says so, and calls at once when
// the body of blob atBlob passes atBytes: at's true cuts the connection there.
type faultProxy struct {
	host string

	mu      sync.Mutex
	reqs    []string                  // "GET /v2/...", with " Range: ..." when asked
	answer  func(r *http.Request) int // a status to answer instead of passing (0: pass)
	atBlob  digest.Digest
	atBytes int64
	at      func() (cut bool) // called once
}

func startProxy(t *testing.T, upstream string) *faultProxy {
	t.Helper()
	p := &faultProxy{}
	target, _ := url.Parse("http://" + upstream)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ErrorLog = log.New(io.Discard, "", 0)
	rp.Transport = &http.Transport{
		DialContext: (&net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
			// A small receive buffer, so that a held body holds the registry back.
			var serr error
			c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 64<<10) })
			return serr
		}}).DialContext,
	}
	rp.ModifyResponse = func(resp *http.Response) error {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.at != nil && resp.Request.Method == http.MethodGet && strings.HasSuffix(resp.Request.URL.Path, "/blobs/"+p.atBlob.String()) {
			resp.Body = &tapBody{ReadCloser: resp.Body, p: p}
		}
		return nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.host = l.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		line := r.Method + " " + r.URL.Path
		if rg := r.Header.Get("Range"); rg != "" {
			line += " Range: " + rg
		}
		p.reqs = append(p.reqs, line)
		status := 0
		if p.answer != nil {
			status = p.answer(r)
		}
		p.mu.Unlock()
		if status != 0 {
			w.WriteHeader(status)
			return
		}
		rp.ServeHTTP(w, r)
	}), ErrorLog: log.New(io.Discard, "", 0)}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return p
}

// requests returns the requests the proxy saw that contain s.
func (p *faultProxy) requests(s string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, r := range p.reqs {
		if strings.Contains(r, s) {
			out = append(out, r)
		}
	}
	return out
}

// tapBody is the body of atBlob on its way through the proxy.
type tapBody struct {
	io.ReadCloser
	p *faultProxy
	n int64
}

var errCut = errors.New("cut by the test proxy")

func (b *tapBody) Read(buf []byte) (int, error) {
	n, err := b.ReadCloser.Read(buf)
	b.n += int64(n)
	if b.n >= b.p.atBytes {
		b.p.mu.Lock()
		at := b.p.at
		b.p.at = nil
		b.p.mu.Unlock()
		if at != nil && at() {
			return n, errCut
		}
	}
	return n, err
}

// faultPull is a store to pull test/fault:1 into through a proxy, and what is in it before.
type faultPull struct {
	dir, ref string
	index    []byte   // index.json before
	blobs    []string // blobs/sha256 before
}

func newFaultPull(t *testing.T, proxyHost string) *faultPull {
	t.Helper()
	f := &faultPull{dir: filepath.Join(t.TempDir(), "pulled"), ref: proxyHost + "/test/fault:1"}
	if _, err := store.Open(f.dir); err != nil {
		t.Fatal(err)
	}
	var err error
	if f.index, err = os.ReadFile(filepath.Join(f.dir, "index.json")); err != nil {
		t.Fatal(err)
	}
	f.blobs = dirNames(t, filepath.Join(f.dir, "blobs", "sha256"))
	return f
}

// unchanged checks that index.json is byte-identical and blobs/ holds what it held.
func (f *faultPull) unchanged(t *testing.T) {
	t.Helper()
	after, err := os.ReadFile(filepath.Join(f.dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	if string(after) != string(f.index) {
		t.Errorf("index.json changed by a failed pull:\n%s\nwas:\n%s", after, f.index)
	}
	if b := dirNames(t, filepath.Join(f.dir, "blobs", "sha256")); strings.Join(b, " ") != strings.Join(f.blobs, " ") {
		t.Errorf("blobs/sha256 after a failed pull: %v, before: %v", b, f.blobs)
	}
}

// oneLine checks that a failed imgfs -q run exited 1 with one line on stderr holding each
// of want, and returns it.
func oneLine(t *testing.T, what string, res result, want ...string) string {
	t.Helper()
	line := strings.TrimSpace(res.stderr)
	if res.code != 1 || strings.Contains(line, "\n") {
		t.Errorf("%s: exit %d, stderr:\n%s\nwant exit 1 and one line", what, res.code, res.stderr)
	}
	for _, w := range want {
		if !strings.Contains(line, w) {
			t.Errorf("%s: stderr %q lacks %q", what, line, w)
		}
	}
	return line
}

// keptFile is where a failed pull keeps blob d in the store at dir.
func keptFile(dir string, d digest.Digest) string {
	return filepath.Join(dir, ".imgfs", "tmp", "verified", string(d.Algorithm())+"-"+d.Encoded())
}

// TestPullRegistryKilled: the registry killed (SIGKILL) while the big layer downloads, after
// the config and layer 0 are in: imgfs exits 1 soon, well within its timeout, with one line
// naming the registry and the blob; index.json is byte-identical and blobs/ unchanged, the
// finished blobs kept verified in temp. imgfs gc (on a copy) removes them. With the
// registry back on the same storage and port, the same pull succeeds and GETs only the big
// layer.
func TestPullRegistryKilled(t *testing.T) {
	r := startRegistry(t)
	img := faultImage(t, r)
	big := img.layers[1].Digest
	p := startProxy(t, r.host)
	f := newFaultPull(t, p.host)

	var killed time.Time
	var atErr error
	struck := make(chan struct{}) // closed once killed and atErr are set
	p.mu.Lock()
	p.atBlob, p.atBytes = big, faultAt
	p.at = func() bool {
		// Layer 0 and the config finished first, then the registry dies.
		if !waitFor(30*time.Second, func() bool {
			_, err := os.Stat(keptFile(f.dir, img.layers[0].Digest))
			return err == nil
		}) {
			atErr = errors.New("layer 0 was not kept within 30s")
		}
		r.cmd.Process.Signal(syscall.SIGKILL)
		<-r.exited
		killed = time.Now()
		close(struck)
		return false // the proxy reads on: what the registry had sent, then the break
	}
	p.mu.Unlock()

	res := imgfsWithin(t, f.dir, "pull", "-q", f.ref)
	select {
	case <-struck:
	default:
		t.Fatalf("the registry was not killed mid-pull; imgfs exit %d:\n%s", res.code, res.stderr)
	}
	took := time.Since(killed)
	if atErr != nil {
		t.Fatal(atErr)
	}
	t.Logf("exit %d %s after the kill: %s", res.code, took.Round(time.Millisecond), oneLine(t, "pull with the registry killed", res, "registry "+p.host, "blob "+big.String()))
	if took > 15*time.Second {
		t.Errorf("imgfs exited %s after the registry was killed; want well within its 30s timeout", took)
	}
	f.unchanged(t)
	kept := checkKept(t, f.dir)
	for _, d := range []digest.Digest{img.id, img.layers[0].Digest} {
		if !containsDigest(kept, d) {
			t.Errorf("blob %s, finished before the kill, not kept (kept: %v)", d, kept)
		}
	}
	if containsDigest(kept, big) {
		t.Errorf("the big layer, unfinished, is kept")
	}

	// imgfs gc, on a copy, removes what the pull kept, and nothing else.
	gcDir := filepath.Join(t.TempDir(), "gc")
	ok(t, "", "cp", "-a", f.dir, gcDir)
	out := imgfsOK(t, gcDir, "gc")
	if left := dirNames(t, filepath.Join(gcDir, ".imgfs", "tmp", "verified")); len(left) > 0 {
		t.Errorf("imgfs gc left %v in .imgfs/tmp/verified (it said %q)", left, out)
	}
	if !strings.HasPrefix(out, "Removed ") || strings.HasPrefix(out, "Removed 0 ") {
		t.Errorf("imgfs gc said %q", out)
	}
	gcIndex, _ := os.ReadFile(filepath.Join(gcDir, "index.json"))
	if string(gcIndex) != string(f.index) {
		t.Errorf("imgfs gc changed index.json")
	}

	// Back on the same storage and port: the same pull fetches the big layer only.
	logged := len(r.blobGets(t))
	if !r.run(t, needRegistry(t)) {
		t.Fatalf("the registry did not come back on %s: %s", r.host, r.logTail())
	}
	repullGetsOnly(t, r, f, img, logged, "after the registry came back")
}

// TestPullKilled: imgfs itself killed (SIGKILL) while the big layer downloads, after the
// config and layer 0 are in: index.json is byte-identical and blobs/ unchanged; the same
// pull, run again, GETs only the big layer.
func TestPullKilled(t *testing.T) {
	r := startRegistry(t)
	img := faultImage(t, r)
	big := img.layers[1].Digest
	p := startProxy(t, r.host)
	f := newFaultPull(t, p.host)

	cmd := exec.Command(imgfsBin, "--store", f.dir, "pull", "-q", f.ref)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	var atErr error
	killed := make(chan struct{})
	p.mu.Lock()
	p.atBlob, p.atBytes = big, faultAt
	p.at = func() bool {
		if !waitFor(30*time.Second, func() bool {
			_, err := os.Stat(keptFile(f.dir, img.layers[0].Digest))
			return err == nil
		}) {
			atErr = errors.New("layer 0 was not kept within 30s")
		}
		close(killed)
		cmd.Process.Signal(syscall.SIGKILL)
		return true
	}
	p.mu.Unlock()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(faultLimit):
		cmd.Process.Kill()
		t.Fatalf("imgfs pull did not reach the big layer within %s:\n%s", faultLimit, errb.String())
	}
	select {
	case <-killed:
	default:
		t.Fatalf("imgfs pull exited (%v) before it was killed:\n%s", err, errb.String())
	}
	if atErr != nil {
		t.Fatal(atErr)
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("imgfs pull: %v, want killed by SIGKILL", err)
	}
	f.unchanged(t)

	// The registry logs a request once done with it: the killed one's GET of the big
	// layer, cut by the proxy, before the count.
	if !waitFor(10*time.Second, func() bool { return strings.Contains(strings.Join(r.blobGets(t), "\n"), big.String()) }) {
		t.Fatalf("the registry did not log the killed pull's GET of the big layer:\n%s", r.logTail())
	}
	logged := len(r.blobGets(t))
	repullGetsOnly(t, r, f, img, logged, "after the killed one")
}

// TestPullRegistryStopped: the registry stopped (SIGSTOP) mid-pull, while the big layer
// downloads, its connections open but silent: with --timeout 3s imgfs exits 1 about 3 s later, with one line naming the
// registry, the blob and the timeout, and leaves index.json and blobs/ as they were.
func TestPullRegistryStopped(t *testing.T) {
	r := startRegistry(t)
	img := faultImage(t, r)
	big := img.layers[1].Digest
	p := startProxy(t, r.host)
	f := newFaultPull(t, p.host)

	var stopped time.Time
	struck := make(chan struct{}) // closed once stopped is set
	p.mu.Lock()
	p.atBlob, p.atBytes = big, faultAt
	p.at = func() bool {
		// Layer 0 in first, so that the big layer is the one left waiting.
		waitFor(30*time.Second, func() bool {
			_, err := os.Stat(keptFile(f.dir, img.layers[0].Digest))
			return err == nil
		})
		r.cmd.Process.Signal(syscall.SIGSTOP)
		stopped = time.Now()
		close(struck)
		return false
	}
	p.mu.Unlock()
	defer r.cmd.Process.Signal(syscall.SIGCONT)

	res := imgfsWithin(t, f.dir, "pull", "-q", "--timeout", "3s", f.ref)
	select {
	case <-struck:
	default:
		t.Fatalf("the registry was not stopped mid-pull; imgfs exit %d:\n%s", res.code, res.stderr)
	}
	took := time.Since(stopped)
	t.Logf("exit %d %s after the stop: %s", res.code, took.Round(time.Millisecond),
		oneLine(t, "pull with the registry stopped", res, "registry "+p.host, "blob "+big.String(), "timed out", "3s"))
	if took < 2500*time.Millisecond || took > 8*time.Second {
		t.Errorf("imgfs exited %s after the registry stopped; want about 3s (--timeout 3s)", took)
	}
	f.unchanged(t)
}

// TestPullCutResumes: the big layer's connection cut once mid-body: imgfs asks for the rest
// with a Range request, the registry answers 206, and the pull succeeds with the image whole.
func TestPullCutResumes(t *testing.T) {
	r := startRegistry(t)
	img := faultImage(t, r)
	big := img.layers[1].Digest
	p := startProxy(t, r.host)
	f := newFaultPull(t, p.host)
	p.mu.Lock()
	p.atBlob, p.atBytes = big, faultAt
	p.at = func() bool { return true }
	p.mu.Unlock()

	res := imgfsWithin(t, f.dir, "pull", f.ref)
	if res.code != 0 {
		t.Fatalf("pull with a cut: exit %d\n%s", res.code, res.stderr)
	}
	ranges := p.requests("Range: bytes=")
	t.Logf("through the proxy: %v", p.requests("/blobs/"))
	if len(ranges) != 1 || !strings.Contains(ranges[0], big.String()) {
		t.Errorf("Range requests through the proxy: %v; want one, for %s", ranges, big)
	}
	var partial []string
	for _, l := range r.blobGets(t) {
		if strings.Contains(l, big.String()) && strings.Contains(l, `" 206 `) {
			partial = append(partial, l)
		}
	}
	if len(partial) != 1 {
		t.Errorf("registry access log: %d GETs of %s answered 206, want 1:\n%s", len(partial), big, strings.Join(r.blobGets(t), "\n"))
	}
	for _, want := range []string{"Downloading", "Verifying Checksum", "Download complete", "Pull complete"} {
		if !strings.Contains(res.stderr, short(big)+": "+want) {
			t.Errorf("pull stderr lacks %q for the big layer:\n%s", want, res.stderr)
		}
	}
	checkPulled(t, f.dir, f.ref, img)
}

// TestPull503: 503 answers are tried again: twice to the manifest and twice to the big layer,
// then passed, the pull succeeds; always, it fails with one line naming the status, the
// registry and the blob, and leaves the store as it was.
func TestPull503(t *testing.T) {
	r := startRegistry(t)
	img := faultImage(t, r)
	big := img.layers[1].Digest
	p := startProxy(t, r.host)

	seen := map[string]int{}
	const refuse = 2
	p.answer = func(req *http.Request) int {
		if req.Method != http.MethodGet || !(strings.Contains(req.URL.Path, "/manifests/") || strings.HasSuffix(req.URL.Path, big.String())) {
			return 0
		}
		seen[req.URL.Path]++
		if seen[req.URL.Path] <= refuse {
			return http.StatusServiceUnavailable
		}
		return 0
	}
	f := newFaultPull(t, p.host)
	res := imgfsWithin(t, f.dir, "pull", "-q", f.ref)
	if res.code != 0 {
		t.Fatalf("pull with two 503s per request: exit %d\n%s", res.code, res.stderr)
	}
	if n := len(p.requests("GET /v2/test/fault/blobs/" + big.String())); n != 3 {
		t.Errorf("%d GETs of the big layer, want 3 (two 503s, then the blob)", n)
	}
	checkPulled(t, f.dir, f.ref, img)

	f = newFaultPull(t, p.host)
	p.mu.Lock()
	p.answer = func(req *http.Request) int {
		if req.Method == http.MethodGet && strings.HasSuffix(req.URL.Path, big.String()) {
			return http.StatusServiceUnavailable
		}
		return 0
	}
	p.mu.Unlock()
	start := time.Now()
	res = imgfsWithin(t, f.dir, "pull", "-q", f.ref)
	t.Logf("exit %d: %s", res.code, oneLine(t, "pull with 503 always", res, "registry "+p.host, "blob "+big.String(), "503"))
	if took := time.Since(start); took > 15*time.Second {
		t.Errorf("pull with 503 always took %s", took)
	}
	if n := len(p.requests("GET /v2/test/fault/blobs/" + big.String())); n != 3+4 {
		t.Errorf("%d GETs of the big layer in all, want 3+4 (four tries when 503 stays)", n)
	}
	f.unchanged(t)
}

// faultLimit is how long a pull in the fault tests may run: a hang fails the test, not the
// whole run.
const faultLimit = time.Minute

// imgfsWithin runs imgfs --store store args..., killed (and the test failed) if it runs for
// faultLimit.
func imgfsWithin(t *testing.T, store string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), faultLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, imgfsBin, append([]string{"--store", store}, args...)...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("imgfs %s hung: killed after %s\nstderr:\n%s", strings.Join(args, " "), faultLimit, errb.String())
	}
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("imgfs %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// checkPulled checks that ref resolves in the store at dir to img, and that its layers in
// blobs/ hash to their digests.
func checkPulled(t *testing.T, dir, ref string, img image) {
	t.Helper()
	got := resolveIn(t, dir, ref)
	if got.Target.Digest != img.manifest.Digest || got.ID != img.id {
		t.Errorf("pulled manifest %s, image ID %s; want %s, %s", got.Target.Digest, got.ID, img.manifest.Digest, img.id)
	}
	for _, l := range img.layers {
		fh, err := os.Open(filepath.Join(dir, "blobs", "sha256", l.Digest.Encoded()))
		if err != nil {
			t.Fatal(err)
		}
		d, err := digest.FromReader(fh)
		fh.Close()
		if err != nil || d != l.Digest {
			t.Errorf("stored layer %s hashes to %s (%v)", l.Digest, d, err)
		}
	}
}

func containsDigest(ds []digest.Digest, d digest.Digest) bool {
	for _, x := range ds {
		if x == d {
			return true
		}
	}
	return false
}

// short is docker's short form of a layer digest, as pull prints it.
func short(d digest.Digest) string { return d.Encoded()[:12] }

// TestPullTwiceAtOnce: two imgfs pulls of one image into one store at once both succeed,
// the blobs they both staged intact, and nothing is left kept in temp.
func TestPullTwiceAtOnce(t *testing.T) {
	r := startRegistry(t)
	img := faultImage(t, r)
	f := newFaultPull(t, r.host)
	results := make(chan result, 2)
	for range 2 {
		go func() {
			cmd := exec.Command(imgfsBin, "--store", f.dir, "pull", "-q", f.ref)
			var errb bytes.Buffer
			cmd.Stderr = &errb
			err := cmd.Run()
			code := 0
			if err != nil {
				code = -1
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					code = ee.ExitCode()
				}
			}
			results <- result{stderr: errb.String(), code: code}
		}()
	}
	for range 2 {
		select {
		case res := <-results:
			if res.code != 0 {
				t.Errorf("one of two pulls at once: exit %d\n%s", res.code, res.stderr)
			}
		case <-time.After(faultLimit):
			t.Fatalf("two pulls at once did not end within %s", faultLimit)
		}
	}
	checkPulled(t, f.dir, f.ref, img)
	if left := dirNames(t, filepath.Join(f.dir, ".imgfs", "tmp", "verified")); len(left) > 0 {
		t.Errorf("two pulls at once left %v kept", left)
	}
}

// repullGetsOnly runs f's pull again (what says after what) and checks that it succeeds,
// GETting only the big layer, img.layers[1], of the blobs past the registry's logged first.
func repullGetsOnly(t *testing.T, r *testRegistry, f *faultPull, img image, logged int, what string) {
	t.Helper()
	big := img.layers[1].Digest
	res := imgfsWithin(t, f.dir, "pull", "-q", f.ref)
	if res.code != 0 {
		t.Fatalf("pull %s: exit %d\n%s", what, res.code, res.stderr)
	}
	gets := r.blobGets(t)[logged:]
	if len(gets) != 1 || !strings.Contains(gets[0], big.String()) {
		t.Errorf("the pull %s GOT these blobs, want only the big layer %s:\n%s", what, big, strings.Join(gets, "\n"))
	}
	checkPulled(t, f.dir, f.ref, img)
}
