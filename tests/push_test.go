package tests

import (
	"context"
	"encoding/json"
	"net/url"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/distribution/reference"
	"github.com/imgfs/imgfs/registry"
	"github.com/imgfs/imgfs/store"
	"github.com/opencontainers/go-digest"
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

// since is the access log lines from the nth on, and those of them that name repository
// repo (as "/v2/REPO/").
func (r *testRegistry) since(t *testing.T, n int, repo string) []string {
	t.Helper()
	var lines []string
	for _, l := range r.accessLog(t)[n:] {
		if strings.Contains(l, "/v2/"+repo+"/") {
			lines = append(lines, l)
		}
	}
	return lines
}

// countLines counts the lines that contain every one of parts.
func countLines(lines []string, parts ...string) int {
	n := 0
	for _, l := range lines {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(l, p)
		}
		if all {
			n++
		}
	}
	return n
}

// blobUploads are the markers, in the access log, of an upload of blob d: the PUT that
// closes its upload session names its digest.
func blobPut(d digest.Digest) []string {
	return []string{`"PUT /v2/`, "/blobs/uploads/", "digest=" + url.QueryEscape(d.String())}
}

// TestPushSharedLayers: `imgfs push HOST/REPO` pushes every tag of the repository; two
// tags whose images share their layers (another config) ask the registry for each blob
// once (one HEAD) and upload each once.
func TestPushSharedLayers(t *testing.T) {
	r := startRegistry(t)
	orig := filepath.Join(t.TempDir(), "orig")
	repo := r.host + "/test/app"
	s, img := origImage(t, orig, repo+":1")
	created := mtime
	cd, err := putJSON(s, ocispec.MediaTypeImageConfig, ocispec.Image{
		Created:  &created,
		Platform: ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH},
		Config:   ocispec.ImageConfig{Env: []string{"TAG=2"}},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: img.diffIDs},
	})
	if err != nil {
		t.Fatal(err)
	}
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: cd, Layers: img.layers}
	m.SchemaVersion = 2
	md, err := putJSON(s, ocispec.MediaTypeImageManifest, m)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := reference.ParseNormalizedNamed(repo + ":2")
	if err := s.Tag(n, md); err != nil {
		t.Fatal(err)
	}

	res := imgfs(t, orig, "push", repo)
	if res.code != 0 {
		t.Fatalf("imgfs push %s: exit %d\nstdout:\n%s\nstderr:\n%s\nregistry log:\n%s", repo, res.code, res.stdout, res.stderr, r.logTail())
	}
	for _, want := range []string{
		"1: digest: " + img.manifest.Digest.String() + " size: " + strconv.FormatInt(img.manifest.Size, 10) + "\n",
		"2: digest: " + md.Digest.String() + " size: " + strconv.FormatInt(md.Size, 10) + "\n",
	} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("imgfs push stdout lacks %q:\n%s", want, res.stdout)
		}
	}
	if c := strings.Count(res.stderr, ": Pushed"); c != 2 {
		t.Errorf("imgfs push stderr: %d layers Pushed, want 2 (one per layer, not per tag):\n%s", c, res.stderr)
	}
	log := r.since(t, 0, "test/app")
	for _, d := range []digest.Digest{img.layers[0].Digest, img.layers[1].Digest, img.id, cd.Digest} {
		if c := countLines(log, `"HEAD /v2/test/app/blobs/`+d.String()); c != 1 {
			t.Errorf("blob %s: %d HEAD requests, want 1:\n%s", d, c, strings.Join(log, "\n"))
		}
		if c := countLines(log, blobPut(d)...); c != 1 {
			t.Errorf("blob %s: uploaded %d times, want once:\n%s", d, c, strings.Join(log, "\n"))
		}
	}
	for _, tag := range []string{"1", "2"} {
		if c := countLines(log, `"PUT /v2/test/app/manifests/`+tag+` `); c != 1 {
			t.Errorf("tag %s: %d manifest PUTs, want 1:\n%s", tag, c, strings.Join(log, "\n"))
		}
	}
}

// TestPushMount: an image pushed to test/a, then pushed to test/b of the same registry, is
// mounted from test/a blob by blob (POST ...?mount=DIGEST&from=test/a), not uploaded again;
// the digests stay.
func TestPushMount(t *testing.T) {
	r := startRegistry(t)
	orig := filepath.Join(t.TempDir(), "orig")
	a, b := r.host+"/test/a:1", r.host+"/test/b:1"
	_, img := origImage(t, orig, a)
	if res := imgfs(t, orig, "push", a); res.code != 0 {
		t.Fatalf("imgfs push %s: exit %d\n%s%s", a, res.code, res.stdout, res.stderr)
	}
	imgfsOK(t, orig, "tag", a, b)
	before := len(r.accessLog(t))
	res := imgfs(t, orig, "push", b)
	if res.code != 0 {
		t.Fatalf("imgfs push %s: exit %d\nstdout:\n%s\nstderr:\n%s\nregistry log:\n%s", b, res.code, res.stdout, res.stderr, r.logTail())
	}
	if c := strings.Count(res.stderr, ": Mounted from test/a"); c != 2 {
		t.Errorf("imgfs push %s stderr: %d layers \"Mounted from test/a\", want 2:\n%s", b, c, res.stderr)
	}
	log := r.since(t, before, "test/b")
	for _, d := range []digest.Digest{img.layers[0].Digest, img.layers[1].Digest, img.id} {
		if c := countLines(log, `"POST /v2/test/b/blobs/uploads/?`, "mount="+url.QueryEscape(d.String()), "from=test%2Fa", `" 201 `); c != 1 {
			t.Errorf("blob %s: %d mounts from test/a answered 201, want 1:\n%s", d, c, strings.Join(log, "\n"))
		}
	}
	if c := countLines(log, `"PATCH /v2/`) + countLines(log, `"PUT /v2/test/b/blobs/`); c != 0 {
		t.Errorf("the push to test/b sent blob bytes (%d PATCH or PUT requests):\n%s", c, strings.Join(log, "\n"))
	}
	skopeo := needProgram(t, "skopeo", "skopeo")
	raw := ok(t, "", skopeo, "inspect", "--raw", "--tls-verify=false", "docker://"+b)
	if d := digest.FromString(raw); d != img.manifest.Digest {
		t.Errorf("skopeo inspect --raw %s: manifest %s, want the stored %s", b, d, img.manifest.Digest)
	}
}

// TestPushMultiPlatform: a multi-platform image pulled with --all-platforms pushes to
// another repository whole: its image index byte for byte (same digest), every manifest
// under it, the blobs mounted from where the pull saw them. Pulled for one platform, the
// push fails before sending anything, in one line naming the platform missing and how to
// bring it.
func TestPushMultiPlatform(t *testing.T) {
	r := startRegistry(t)
	tmp := t.TempDir()
	orig := filepath.Join(tmp, "orig")
	mp := multiPlatformImage(t, r, orig, "test/multi:1")
	src := r.host + "/test/multi:1"

	all := filepath.Join(tmp, "all")
	gets := len(r.blobGets(t))
	if res := imgfs(t, all, "pull", "--all-platforms", src); res.code != 0 {
		t.Fatalf("imgfs pull --all-platforms %s: exit %d\n%s%s", src, res.code, res.stdout, res.stderr)
	}
	// Each blob once: the layer both manifests share too.
	got := r.blobGets(t)[gets:]
	for _, d := range []digest.Digest{mp.host.id, mp.otherConfig.Digest, mp.host.layers[0].Digest, mp.host.layers[1].Digest} {
		if c := countLines(got, "/blobs/"+d.String()); c != 1 {
			t.Errorf("imgfs pull --all-platforms: blob %s fetched %d times, want once:\n%s", d, c, strings.Join(got, "\n"))
		}
	}
	if len(got) != 4 {
		t.Errorf("imgfs pull --all-platforms: %d blob GETs, want 4 (2 configs, 2 layers):\n%s", len(got), strings.Join(got, "\n"))
	}
	as, err := store.Open(all)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []digest.Digest{mp.index.Digest, mp.host.manifest.Digest, mp.host.id, mp.other.Digest, mp.otherConfig.Digest,
		mp.host.layers[0].Digest, mp.host.layers[1].Digest} {
		if !as.HasBlob(d) {
			t.Errorf("imgfs pull --all-platforms: blob %s not in the store", d)
		}
	}

	dst := r.host + "/test/copy:1"
	imgfsOK(t, all, "tag", src, dst)
	res := imgfs(t, all, "push", dst)
	if res.code != 0 {
		t.Fatalf("imgfs push %s: exit %d\nstdout:\n%s\nstderr:\n%s\nregistry log:\n%s", dst, res.code, res.stdout, res.stderr, r.logTail())
	}
	if want := "1: digest: " + mp.index.Digest.String() + " size: " + strconv.FormatInt(mp.index.Size, 10) + "\n"; res.stdout != want {
		t.Errorf("imgfs push stdout:\n%s\nwant:\n%s", res.stdout, want)
	}
	if c := strings.Count(res.stderr, ": Mounted from test/multi"); c != 2 {
		t.Errorf("imgfs push stderr: %d layers mounted from test/multi (where the pull saw them), want 2:\n%s", c, res.stderr)
	}
	// Each platform's manifest has its layer indexes listed under it (#18).
	for _, d := range []digest.Digest{mp.host.manifest.Digest, mp.other.Digest} {
		if refs := r.fallbackReferrers(t, "test/copy", d); len(refs.Manifests) != 1 {
			t.Errorf("manifest %s: %d artifacts listed under its fallback tag, want 1", d, len(refs.Manifests))
		}
	}
	skopeo := needProgram(t, "skopeo", "skopeo")
	for _, c := range []struct {
		ref  string
		want digest.Digest
	}{
		{dst, mp.index.Digest},
		{r.host + "/test/copy@" + mp.host.manifest.Digest.String(), mp.host.manifest.Digest},
		{r.host + "/test/copy@" + mp.other.Digest.String(), mp.other.Digest},
	} {
		raw := ok(t, "", skopeo, "inspect", "--raw", "--tls-verify=false", "docker://"+c.ref)
		stored, err := as.ReadBlob(c.want, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if raw != string(stored) {
			t.Errorf("skopeo inspect --raw %s:\n%s\nwant the stored bytes of %s:\n%s", c.ref, raw, c.want, stored)
		}
	}

	// Pulled for this machine only: refused, nothing sent.
	one := filepath.Join(tmp, "one")
	if res := imgfs(t, one, "pull", "-q", src); res.code != 0 {
		t.Fatalf("imgfs pull %s: exit %d\n%s%s", src, res.code, res.stdout, res.stderr)
	}
	dst2 := r.host + "/test/copy2:1"
	imgfsOK(t, one, "tag", src, dst2)
	before := len(r.accessLog(t))
	res = imgfs(t, one, "push", dst2)
	lines := strings.Split(strings.TrimSpace(res.stderr), "\n")
	if res.code != 1 || len(lines) != 1 || !strings.Contains(lines[0], "linux/"+mp.otherArch) ||
		!strings.Contains(lines[0], "imgfs pull --all-platforms") || strings.Contains(lines[0], "linux/"+runtime.GOARCH) {
		t.Errorf("imgfs push %s of a store with one platform: exit %d, stderr:\n%s\nwant exit 1 and one line naming linux/%s (only) and imgfs pull --all-platforms",
			dst2, res.code, res.stderr, mp.otherArch)
	}
	if sent := r.since(t, before, "test/copy2"); len(sent) != 0 {
		t.Errorf("a refused push sent requests:\n%s", strings.Join(sent, "\n"))
	}
}

// TestPushProgress: Push, called as cmd/imgfs does, tells each layer's way in docker's
// words, in order ("Waiting" for those beyond the concurrency), and its bytes as they go
// up, to the layer's size.
func TestPushProgress(t *testing.T) {
	r := startRegistry(t)
	dir := filepath.Join(t.TempDir(), "orig")
	ref := r.host + "/test/app:1"
	s, img := origImage(t, dir, ref)
	c, err := registry.New(registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	said := map[string][]string{}
	sent := map[string][]int64{}
	opts := registry.PushOptions{
		Concurrency: 1,
		Status: func(id, msg string) {
			mu.Lock()
			defer mu.Unlock()
			said[id] = append(said[id], msg)
		},
		Progress: func(id string, current, total int64) {
			mu.Lock()
			defer mu.Unlock()
			sent[id] = append(sent[id], current, total)
		},
	}
	if _, err := c.Push(context.Background(), s, ref, opts); err != nil {
		t.Fatal(err)
	}
	for i, l := range img.layers {
		id := l.Digest.Encoded()[:12]
		want := []string{"Preparing", "Pushing", "Pushed"}
		if i > 0 {
			want = []string{"Preparing", "Waiting", "Pushing", "Pushed"}
		}
		if !slices.Equal(said[id], want) {
			t.Errorf("layer %d (%s): statuses %q, want %q", i, id, said[id], want)
		}
		p := sent[id]
		if len(p) == 0 || p[len(p)-2] != l.Size || p[len(p)-1] != l.Size {
			t.Errorf("layer %d (%s): progress %v, want it to end at %d of %d", i, id, p, l.Size, l.Size)
			continue
		}
		for j := 2; j < len(p); j += 2 {
			if p[j] < p[j-2] || p[j+1] != l.Size {
				t.Errorf("layer %d (%s): progress %v goes back or changes its total", i, id, p)
				break
			}
		}
	}
	if got := said[""]; len(got) != 1 || got[0] != "The push refers to repository ["+r.host+"/test/app]" {
		t.Errorf("repository statuses %q", got)
	}
}
