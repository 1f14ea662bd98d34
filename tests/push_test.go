package tests

import (
	"encoding/json"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/distribution/reference"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// uploads returns the access log lines of upload requests on blob URLs.
func (r *testRegistry) uploads(t *testing.T) []string {
	t.Helper()
	var ups []string
	for _, l := range r.accessLog(t) {
		if (strings.Contains(l, `"PUT /v2/`) || strings.Contains(l, `"POST /v2/`) || strings.Contains(l, `"PATCH /v2/`)) &&
			strings.Contains(l, "/blobs/uploads/") {
			ups = append(ups, l)
		}
	}
	return ups
}

// TestPush: an image in a store, pushed with imgfs push, is in the registry with the
// stored manifest digest (skopeo inspect), and pulls back into an empty store with it. A
// second push uploads nothing; an unknown name is one line, exit 1.
func TestPush(t *testing.T) {
	r := startRegistry(t)
	tmp := t.TempDir()
	ref := r.host + "/test/app:1"
	orig := filepath.Join(tmp, "orig")
	_, img := origImage(t, orig, ref)

	res := imgfs(t, orig, "push", ref)
	if res.code != 0 {
		t.Fatalf("imgfs push %s: exit %d\nstdout:\n%s\nstderr:\n%s\nregistry log:\n%s", ref, res.code, res.stdout, res.stderr, r.logTail())
	}
	if want := "The push refers to repository [" + r.host + "/test/app]"; !strings.Contains(res.stderr, want) {
		t.Errorf("imgfs push stderr lacks %q:\n%s", want, res.stderr)
	}
	if c := strings.Count(res.stderr, ": Pushed"); c != 2 {
		t.Errorf("imgfs push stderr: %d layers Pushed, want 2:\n%s", c, res.stderr)
	}
	if want := "1: digest: " + img.manifest.Digest.String() + " size: " + strconv.FormatInt(img.manifest.Size, 10) + "\n"; res.stdout != want {
		t.Errorf("imgfs push stdout:\n%s\nwant:\n%s", res.stdout, want)
	}
	first := len(r.uploads(t))
	if first == 0 {
		t.Errorf("first push: no upload request in the access log")
	}

	skopeo := needProgram(t, "skopeo", "skopeo")
	out := ok(t, "", skopeo, "inspect", "--tls-verify=false", "docker://"+ref)
	var info struct{ Digest string }
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("skopeo inspect: %v\n%s", err, out)
	}
	if info.Digest != img.manifest.Digest.String() {
		t.Errorf("skopeo inspect: digest %s, want the stored %s", info.Digest, img.manifest.Digest)
	}

	pulled := filepath.Join(tmp, "pulled")
	if res := imgfs(t, pulled, "pull", "-q", ref); res.code != 0 {
		t.Fatalf("imgfs pull %s: exit %d\n%s%s", ref, res.code, res.stdout, res.stderr)
	}
	got := resolveIn(t, pulled, ref)
	if got.Target.Digest != img.manifest.Digest || got.ID != img.id {
		t.Errorf("pulled back manifest %s, ID %s; want %s, %s", got.Target.Digest, got.ID, img.manifest.Digest, img.id)
	}

	// Again, by the repository's name (every tag): nothing uploaded.
	res = imgfs(t, orig, "push", r.host+"/test/app")
	if res.code != 0 {
		t.Fatalf("second imgfs push: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if c := strings.Count(res.stderr, ": Layer already exists"); c != 2 {
		t.Errorf("second push stderr: %d layers already there, want 2:\n%s", c, res.stderr)
	}
	if ups := r.uploads(t); len(ups) != first {
		t.Errorf("second push made upload requests:\n%s", strings.Join(ups[first:], "\n"))
	}

	// -q: nothing.
	if res := imgfs(t, orig, "push", "-q", ref); res.code != 0 || res.stdout != "" || res.stderr != "" {
		t.Errorf("imgfs push -q: exit %d, stdout %q, stderr %q", res.code, res.stdout, res.stderr)
	}

	// An unknown name: one line naming it, exit 1.
	bad := r.host + "/test/nothing:1"
	res = imgfs(t, orig, "push", bad)
	lines := strings.Split(strings.TrimSpace(res.stderr), "\n")
	if res.code != 1 || len(lines) != 1 || !strings.Contains(lines[0], bad) {
		t.Errorf("imgfs push %s: exit %d, stderr:\n%s\nwant exit 1 and one line naming it", bad, res.code, res.stderr)
	}
}

// TestPushIndexRefused: a multi-platform image (an image index) is refused, for now, in
// one line naming it, exit 1, and nothing is sent.
func TestPushIndexRefused(t *testing.T) {
	r := startRegistry(t)
	orig := filepath.Join(t.TempDir(), "orig")
	s, img := origImage(t, orig, "")
	desc := img.manifest
	desc.Platform = &ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH}
	ix := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{desc}}
	ix.SchemaVersion = 2
	index, err := putJSON(s, ocispec.MediaTypeImageIndex, ix)
	if err != nil {
		t.Fatal(err)
	}
	ref := r.host + "/test/multi:1"
	n, _ := reference.ParseNormalizedNamed(ref)
	if err := s.Tag(n, index); err != nil {
		t.Fatal(err)
	}
	res := imgfs(t, orig, "push", ref)
	lines := strings.Split(strings.TrimSpace(res.stderr), "\n")
	if res.code != 1 || len(lines) != 1 || !strings.Contains(lines[0], "multi-platform") || !strings.Contains(lines[0], ref) {
		t.Errorf("imgfs push %s: exit %d, stderr:\n%s\nwant exit 1 and one line refusing the multi-platform image", ref, res.code, res.stderr)
	}
	if ups := r.uploads(t); len(ups) != 0 {
		t.Errorf("a refused push uploaded:\n%s", strings.Join(ups, "\n"))
	}
}
