package tests

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/distribution/reference"
	"github.com/imgfs/imgfs/store"
)

// TestPull: an image pushed to a registry with skopeo, pulled with imgfs pull into an
// empty store, is the same image: manifest digest, rootfs/ entry by entry, export.tar byte
// for byte. A second pull is up to date and fetches no blob; a missing tag is one line.
func TestPull(t *testing.T) {
	r := startRegistry(t)
	tmp := t.TempDir()
	ref := r.host + "/test/app:1"

	// The original, named as it will be pulled so that both export.tar name it alike.
	orig := filepath.Join(tmp, "orig")
	s, err := store.Open(orig)
	if err != nil {
		t.Fatal(err)
	}
	img, err := writeImage(s, "", layer0(), layer1())
	if err != nil {
		t.Fatal(err)
	}
	n, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Tag(n, img.manifest); err != nil {
		t.Fatal(err)
	}
	// The store's org.opencontainers.image.ref.name is the tag: skopeo's oci:DIR:1.
	r.skopeoPush(t, orig, "1", "test/app:1")

	pulled := filepath.Join(tmp, "pulled")
	res := imgfs(t, pulled, "pull", ref)
	if res.code != 0 {
		t.Fatalf("imgfs pull %s: exit %d\nstdout:\n%s\nstderr:\n%s\nregistry log:\n%s", ref, res.code, res.stdout, res.stderr, r.logTail())
	}
	for _, want := range []string{"Pulling fs layer", "Download complete", "Pull complete"} {
		if !strings.Contains(res.stderr, want) {
			t.Errorf("imgfs pull stderr lacks %q:\n%s", want, res.stderr)
		}
	}
	if want := "Digest: " + img.manifest.Digest.String() + "\nStatus: Downloaded newer image for " + ref + "\n"; res.stdout != want {
		t.Errorf("imgfs pull stdout:\n%s\nwant:\n%s", res.stdout, want)
	}
	ps, err := store.Open(pulled)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ps.Resolve(ref)
	if err != nil {
		t.Fatal(err)
	}
	if got.Target.Digest != img.manifest.Digest || got.ID != img.id {
		t.Fatalf("pulled manifest %s, image ID %s; want %s, %s", got.Target.Digest, got.ID, img.manifest.Digest, img.id)
	}
	gets := len(r.blobGets(t))
	if gets != 3 {
		t.Errorf("first pull: %d blob GETs, want 3 (config, 2 layers):\n%s", gets, strings.Join(r.blobGets(t), "\n"))
	}

	mntOrig, _ := mountStore(t, orig)
	mntPulled, _ := mountStore(t, pulled)
	dir := filepath.Join(r.host, "test", "app", "1")
	diffs, err := compareTrees(filepath.Join(mntPulled, dir, "rootfs"), filepath.Join(mntOrig, dir, "rootfs"),
		cmpOpts{dirMtime: true, rootMeta: true})
	if err != nil {
		t.Fatal(err)
	}
	reportDiffs(t, "rootfs/ of the pulled image vs the original", diffs)
	ok(t, "", "cmp", filepath.Join(mntPulled, dir, "export.tar"), filepath.Join(mntOrig, dir, "export.tar"))

	// Again: up to date, no blob fetched.
	before, err := os.ReadFile(filepath.Join(pulled, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	res = imgfs(t, pulled, "pull", ref)
	if res.code != 0 {
		t.Fatalf("second imgfs pull: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if !strings.Contains(res.stdout, "Status: Image is up to date for "+ref) {
		t.Errorf("second pull stdout:\n%s\nwant \"Image is up to date\"", res.stdout)
	}
	if g := r.blobGets(t); len(g) != gets {
		t.Errorf("second pull fetched blobs again:\n%s", strings.Join(g[gets:], "\n"))
	}
	after, err := os.ReadFile(filepath.Join(pulled, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	if string(before) != string(after) {
		t.Errorf("index.json changed on an up-to-date pull:\n%s\nwas:\n%s", after, before)
	}

	// -q: nothing.
	if res := imgfs(t, pulled, "pull", "-q", ref); res.code != 0 || res.stdout != "" || res.stderr != "" {
		t.Errorf("imgfs pull -q: exit %d, stdout %q, stderr %q", res.code, res.stdout, res.stderr)
	}

	// A missing tag, a missing repository: exit 1, one line naming it.
	for _, c := range []struct{ ref, want string }{
		{r.host + "/test/app:2", "tag 2 not found in repository test/app on registry " + r.host},
		{r.host + "/test/nothing:1", "repository test/nothing not found on registry " + r.host},
	} {
		res := imgfs(t, pulled, "pull", c.ref)
		lines := strings.Split(strings.TrimSpace(res.stderr), "\n")
		if res.code != 1 || len(lines) != 1 || !strings.Contains(lines[0], c.want) {
			t.Errorf("imgfs pull %s: exit %d, stderr:\n%s\nwant exit 1 and one line with %q", c.ref, res.code, res.stderr, c.want)
		}
	}
}
