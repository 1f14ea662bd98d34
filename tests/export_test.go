package tests

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// exportBase is the mtime base of the export test images.
var exportBase = time.Unix(1650000000, 0)

// exportLayers: a base layer two images share, and one layer of each image's own.
func exportLayers() (base, own1, own2 []lent) {
	base = []lent{
		ldir("etc/", 0o755), lfile("etc/os-release", 0o644, "ID=test\n"),
		ldir("bin/", 0o755), lfile("bin/tool", 0o755, strings.Repeat("tool\n", 5000)),
		lsym("bin/alias", "tool"), llink("bin/hard", "bin/tool"),
	}
	own1 = []lent{lfile("app/one", 0o644, "one\n"), lfile("etc/.wh.os-release", 0o644, "")}
	own2 = []lent{lfile("app/two", 0o600, strings.Repeat("two\n", 100000))}
	return
}

// exportStore imports test/app:v1 and test/app:v2 (one image, two tags) and test/app:b
// (sharing the base layer) into a new store, and returns it with the two layouts.
func exportStore(t *testing.T) (store, layout1, layout2 string) {
	t.Helper()
	tmp := t.TempDir()
	base, own1, own2 := exportLayers()
	layout1, layout2 = filepath.Join(tmp, "l1"), filepath.Join(tmp, "l2")
	if err := writeLayout(layout1, "v1", exportBase, base, own1); err != nil {
		t.Fatal(err)
	}
	if err := writeLayout(layout2, "b", exportBase, base, own2); err != nil {
		t.Fatal(err)
	}
	store = filepath.Join(tmp, "store")
	imgfsOK(t, store, "import", "-q", "--name", "test/app:v1", layout1)
	imgfsOK(t, store, "import", "-q", "--name", "test/app:v2", layout1)
	imgfsOK(t, store, "import", "-q", "--name", "test/app:b", layout2)
	return store, layout1, layout2
}

// archiveMembers reads a tar archive whole: member name -> content, and the names in order.
func archiveMembers(t *testing.T, data []byte) (map[string][]byte, []string) {
	t.Helper()
	m := map[string][]byte{}
	var order []string
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("reading the archive: %v", err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("reading %s: %v", h.Name, err)
		}
		m[h.Name] = b
		order = append(order, h.Name)
	}
	return m, order
}

type saveItem struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// TestExportImporters: each export.tar (an image's, a repository's, an untagged ID's) loads
// in skopeo, podman and docker with the image ID and diffIDs of the image imported.
func TestExportImporters(t *testing.T) {
	store, layout1, layout2 := exportStore(t)
	id1, diffs1 := readOCIImage(t, layout1)
	id2, diffs2 := readOCIImage(t, layout2)
	mnt, _ := mountStore(t, store)
	tmp := t.TempDir()

	cases := []struct {
		name, path, id string
		diffIDs        []string
	}{
		{"tag", "test/app/v1/export.tar", id1, diffs1},
		{"other", "test/app/b/export.tar", id2, diffs2},
		{"untagged", "sha256:" + strings.TrimPrefix(id1, "sha256:") + "/export.tar", id1, diffs1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// A copy, as a user would take it (and skopeo wants no ':' in the path).
			archive := filepath.Join(tmp, c.name+".tar")
			ok(t, "", "cp", filepath.Join(mnt, c.path), archive)
			for _, l := range []struct {
				name string
				load func(*testing.T, string) (string, []string)
			}{{"skopeo", skopeoLoad}, {"podman", podmanLoad}, {"docker", dockerLoad}} {
				id, diffIDs := l.load(t, archive)
				if id != c.id || !slices.Equal(diffIDs, c.diffIDs) {
					t.Errorf("%s load of %s: ID %s diffIDs %v, want %s %v", l.name, c.path, id, diffIDs, c.id, c.diffIDs)
				}
			}
		})
	}

	// The repository's export.tar: every tag, the shared layer once.
	data, err := os.ReadFile(filepath.Join(mnt, "test/app/export.tar"))
	if err != nil {
		t.Fatal(err)
	}
	members, _ := archiveMembers(t, data)
	var items []saveItem
	if err := json.Unmarshal(members["manifest.json"], &items); err != nil {
		t.Fatalf("manifest.json: %v", err)
	}
	tags := map[string][]string{}
	for _, it := range items {
		tags[it.Config] = it.RepoTags
	}
	want := map[string][]string{
		"blobs/sha256/" + strings.TrimPrefix(id1, "sha256:"): {"test/app:v1", "test/app:v2"},
		"blobs/sha256/" + strings.TrimPrefix(id2, "sha256:"): {"test/app:b"},
	}
	for cfg, tg := range tags {
		slices.Sort(tg)
		tags[cfg] = tg
	}
	if len(tags) != 2 || !slices.Equal(tags[keys(want)[0]], want[keys(want)[0]]) || !slices.Equal(tags[keys(want)[1]], want[keys(want)[1]]) {
		t.Errorf("repository export.tar manifest.json: %s, want items %v", members["manifest.json"], want)
	}
	if _, shared := members["blobs/sha256/"+strings.TrimPrefix(diffs1[0], "sha256:")]; !shared || diffs1[0] != diffs2[0] {
		t.Errorf("the shared base layer %s is not in the repository's archive", diffs1[0])
	}
	// imgfs reads it back with every name.
	store2 := filepath.Join(tmp, "store2")
	repoArchive := filepath.Join(tmp, "repo.tar")
	if err := os.WriteFile(repoArchive, data, 0o644); err != nil {
		t.Fatal(err)
	}
	imgfsOK(t, store2, "import", "-q", repoArchive)
	for ref, id := range map[string]string{"test/app:v1": id1, "test/app:v2": id1, "test/app:b": id2} {
		if got := imageID(t, store2, ref); got != id {
			t.Errorf("after importing the repository's export.tar, %s is %q, want %s", ref, got, id)
		}
	}
}

// imageID is the ID imgfs inspect gives ref in store.
func imageID(t *testing.T, store, ref string) string {
	t.Helper()
	var v struct{ ID string }
	if err := json.Unmarshal([]byte(imgfsOK(t, store, "inspect", ref)), &v); err != nil {
		t.Fatalf("imgfs inspect %s: %v", ref, err)
	}
	return v.ID
}

func keys(m map[string][]string) []string {
	k := make([]string, 0, len(m))
	for s := range m {
		k = append(k, s)
	}
	slices.Sort(k)
	return k
}

// TestExportRoundTrip: export.tar imported into a fresh store gives the same image: same
// config digest, and a rootfs/ equal entry by entry.
func TestExportRoundTrip(t *testing.T) {
	tmp := t.TempDir()
	layout := filepath.Join(tmp, "layout")
	if err := writeLayout(layout, "v1", unpackBase, unpackLayers()...); err != nil {
		t.Fatal(err)
	}
	id, _ := readOCIImage(t, layout)
	store1 := filepath.Join(tmp, "s1")
	imgfsOK(t, store1, "import", "-q", "--name", "test/round:v1", layout)
	mnt1, _ := mountStore(t, store1)
	archive := filepath.Join(tmp, "export.tar")
	ok(t, "", "cp", filepath.Join(mnt1, "test/round/v1/export.tar"), archive)

	store2 := filepath.Join(tmp, "s2")
	imgfsOK(t, store2, "import", "-q", archive)
	if got := imageID(t, store2, "test/round:v1"); got != id {
		t.Fatalf("re-imported image ID %q, want %s", got, id)
	}
	mnt2, _ := mountStore(t, store2)
	diffs, err := compareTrees(filepath.Join(mnt2, "test/round/v1/rootfs"), filepath.Join(mnt1, "test/round/v1/rootfs"),
		cmpOpts{dirMtime: true, rootMeta: true})
	if err != nil {
		t.Fatal(err)
	}
	reportDiffs(t, "rootfs/ after export.tar and import vs the original", diffs)
}

// TestExportDockerBytes: the export of the image imported from Docker 25's own save of
// hello-world reproduces Docker's manifest.json, config, layer, oci-layout and legacy v1
// layer ID, byte for byte.
func TestExportDockerBytes(t *testing.T) {
	fixture := filepath.Join("..", "..", "shared", "fixtures", "hello-world-v25.tar")
	want, err := os.ReadFile(fixture)
	if err != nil {
		t.Fatalf("the fixture of this test: %v", err)
	}
	store := filepath.Join(t.TempDir(), "store")
	imgfsOK(t, store, "import", "-q", fixture)
	mnt, _ := mountStore(t, store)
	const id = "ee301c921b8aadc002973b2e0c3da17d701dcd994b606769a7e6eaa100b81d44"
	got, err := os.ReadFile(filepath.Join(mnt, "sha256:"+id, "export.tar"))
	if err != nil {
		t.Fatal(err)
	}
	gm, _ := archiveMembers(t, got)
	wm, _ := archiveMembers(t, want)
	for _, name := range []string{"manifest.json", "oci-layout", "blobs/sha256/" + id,
		"blobs/sha256/12660636fe55438cc3ae7424da7ac56e845cdb52493ff9cf949c47a7f57f8b43"} {
		if !bytes.Equal(gm[name], wm[name]) {
			t.Errorf("%s: imgfs wrote %q, docker %q", name, trunc(gm[name]), trunc(wm[name]))
		}
	}
	v1 := false
	for name, b := range gm {
		if strings.HasPrefix(name, "blobs/sha256/") && bytes.Contains(b, []byte(`"id":"78d0dd34c5b3cf2b40239eb3836a9bccfdbc80d313591426617ee4a221e205bd"`)) {
			v1 = true
			if !bytes.Equal(b, wm[name]) {
				t.Errorf("legacy v1 layer JSON %s: imgfs wrote %s, docker %s", name, b, wm[name])
			}
		}
	}
	if !v1 {
		t.Error("no legacy v1 layer JSON with docker's layer ID 78d0dd34…")
	}
}

func trunc(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "…"
	}
	return string(b)
}

// TestExportReads: export.tar's stat size is the number of bytes it reads; random preads
// (lengths across member boundaries) and two readers at once get the stream's bytes.
func TestExportReads(t *testing.T) {
	store, _, _ := exportStore(t)
	mnt, _ := mountStore(t, store)
	p := filepath.Join(mnt, "test/app/export.tar")
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != int64(len(stream)) || len(stream) < 10<<10 {
		t.Fatalf("stat size %d, read %d bytes", fi.Size(), len(stream))
	}
	if out := ok(t, "", "tar", "-tf", p); !strings.Contains(out, "manifest.json") {
		t.Errorf("tar -tf: %q", out)
	}
	// A fresh mount: the preads below are what decodes the layers, not a page cache.
	mnt2, _ := mountStore(t, store)
	f, err := os.Open(filepath.Join(mnt2, "test/app/export.tar"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := rand.New(rand.NewPCG(5, 5))
	for i := range 1000 {
		off := r.Int64N(int64(len(stream)) + 100)
		n := r.IntN(1 << 12)
		if i%4 == 0 {
			n = r.IntN(600 << 10) // across members
		}
		buf := make([]byte, n)
		k, err := f.ReadAt(buf, off)
		wantN := max(0, min(n, len(stream)-int(min(off, int64(len(stream))))))
		if k != wantN || (err != nil && err != io.EOF) || (k < n && err != io.EOF) {
			t.Fatalf("pread %d at %d: %d, %v; want %d bytes", n, off, k, err, wantN)
		}
		if k > 0 && !bytes.Equal(buf[:k], stream[off:off+int64(k)]) {
			t.Fatalf("pread %d at %d: bytes differ from the stream", n, off)
		}
	}
	// Two readers at different offsets at once.
	var wg sync.WaitGroup
	errs := make(chan string, 2)
	for _, start := range []int64{0, int64(len(stream)) / 2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g, err := os.Open(filepath.Join(mnt2, "test/app/export.tar"))
			if err != nil {
				errs <- err.Error()
				return
			}
			defer g.Close()
			buf := make([]byte, 64<<10)
			for off := start; off < int64(len(stream)); off += int64(len(buf)) {
				k, err := g.ReadAt(buf, off)
				if (err != nil && err != io.EOF) || !bytes.Equal(buf[:k], stream[off:off+int64(k)]) {
					errs <- "concurrent read differs at " + filepath.Base(g.Name())
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// TestSave: imgfs save writes the bytes of the mounted export.tar files: a tag, a
// repository name without a tag (every tag), an image ID (untagged), to -o FILE or to
// stdout; an unknown name fails with one line and leaves no file.
func TestSave(t *testing.T) {
	store, layout1, _ := exportStore(t)
	id1, _ := readOCIImage(t, layout1)
	mnt, _ := mountStore(t, store)
	tmp := t.TempDir()
	for _, c := range []struct{ ref, path string }{
		{"test/app:v1", "test/app/v1/export.tar"},
		{"test/app", "test/app/export.tar"},
		{id1, "sha256:" + strings.TrimPrefix(id1, "sha256:") + "/export.tar"},
	} {
		want, err := os.ReadFile(filepath.Join(mnt, c.path))
		if err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(tmp, "out.tar")
		imgfsOK(t, store, "save", "-o", out, c.ref)
		if got, err := os.ReadFile(out); err != nil || !bytes.Equal(got, want) {
			t.Errorf("imgfs save -o FILE %s: %d bytes (%v), not the %d of %s", c.ref, len(got), err, len(want), c.path)
		}
		if got := imgfsOK(t, store, "save", c.ref); got != string(want) {
			t.Errorf("imgfs save %s >stdout: %d bytes, not the %d of %s", c.ref, len(got), len(want), c.path)
		}
	}
	// As docker save: never to a terminal (script(1) gives it one).
	term := runIn(t, "", "script", "-qec", imgfsBin+" --store "+store+" save test/app:v1", "/dev/null")
	if term.code != 1 || !strings.Contains(term.stdout, "refusing to save to a terminal") || len(term.stdout) > 1000 {
		t.Errorf("imgfs save to a terminal: exit %d, %q", term.code, trunc([]byte(term.stdout)))
	}
	out := filepath.Join(tmp, "none.tar")
	r := imgfs(t, store, "save", "-o", out, "test/nothing:here")
	if r.code != 1 || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 || !strings.Contains(r.stderr, "test/nothing:here") {
		t.Errorf("imgfs save of an unknown name: %+v", r)
	}
	if entries, _ := os.ReadDir(tmp); len(entries) != 1 {
		t.Errorf("left behind in the output directory: %v", entries)
	}
}

// TestExportReadsOnAfterGC: an export.tar open when its image is removed and the store
// collected reads on to its end, with the bytes imgfs save wrote before, though the read
// so far had not reached the later layers.
func TestExportReadsOnAfterGC(t *testing.T) {
	tmp := t.TempDir()
	r := rand.NewChaCha8([32]byte{4})
	var layers [][]lent
	for i := range 3 {
		body := make([]byte, 3<<20) // each layer well past the kernel's read-ahead
		r.Read(body)
		layers = append(layers, []lent{lfile(fmt.Sprintf("data%d", i), 0o644, string(body))})
	}
	layout := filepath.Join(tmp, "layout")
	if err := writeLayout(layout, "v1", exportBase, layers...); err != nil {
		t.Fatal(err)
	}
	store := filepath.Join(tmp, "store")
	imgfsOK(t, store, "import", "-q", "--name", "test/gone:v1", layout)
	want := filepath.Join(tmp, "want.tar")
	imgfsOK(t, store, "save", "-o", want, "test/gone:v1")
	wantData, err := os.ReadFile(want)
	if err != nil {
		t.Fatal(err)
	}

	mnt, _ := mountStore(t, store)
	f, err := os.Open(filepath.Join(mnt, "test/gone/v1/export.tar"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	head := make([]byte, 64<<10)
	if _, err := io.ReadFull(f, head); err != nil {
		t.Fatal(err)
	}
	imgfsOK(t, store, "rm", "test/gone:v1")
	if out := imgfsOK(t, store, "gc"); !strings.Contains(out, "Removed") || strings.Contains(out, "Removed 0 ") {
		t.Fatalf("imgfs gc removed nothing: %q", out)
	}
	rest, err := io.ReadAll(f)
	if err != nil {
		t.Fatalf("reading on after rm and gc, at byte %d of %d: %v", len(head)+len(rest), len(wantData), err)
	}
	if got := append(head, rest...); !bytes.Equal(got, wantData) {
		t.Errorf("read %d bytes after rm and gc, not the %d imgfs save wrote before", len(got), len(wantData))
	}
}
