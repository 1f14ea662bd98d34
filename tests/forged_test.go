package tests

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgfs/imgfs/layerindex"
	"github.com/imgfs/imgfs/store"
)

// TestForgedIndexOffsets: a layer index whose entries point at other files' data (a.txt at
// b.txt's, and one long-named twin at the other's, whose ustar headers are alike: their
// names are cut to the same 100 bytes) makes those files EIO on the mount, through
// rootfs/ and layers/0/, and never serves the other file's bytes; the mount log names the
// layer once; the files whose entries are untouched read as they are. imgfs diff, which
// reads files through the same indexes, fails naming the file rather than compare the
// wrong bytes.
func TestForgedIndexOffsets(t *testing.T) {
	st := filepath.Join(t.TempDir(), "store")
	s, err := store.Open(st)
	if err != nil {
		t.Fatal(err)
	}
	const (
		a = "A: the secret of file a, 40 bytes long.\n"
		b = "B: what file b holds, 40 bytes as well.\n"
	)
	long := "long/" + strings.Repeat("x", 200) + "/"
	img, err := writeImage(s, "test/forged:v1", []entry{
		file("a.txt", 0o644, a), file("b.txt", 0o644, b), file("c.txt", 0o644, "c\n"),
		file(long+"twin-A", 0o644, "twin A\n"), file(long+"twin-B", 0o644, "twin B\n"),
	})
	if err != nil {
		t.Fatal(err)
	}
	// Another image whose a.txt holds b.txt's bytes: a diff that read b.txt's data as the
	// forged image's a.txt would find a.txt unchanged.
	if _, err := writeImage(s, "test/other:v1", []entry{file("a.txt", 0o644, b)}); err != nil {
		t.Fatal(err)
	}

	// Forge the stored index through the store's own API, as an index from elsewhere would
	// come in.
	ix, err := s.LayerIndex(img.layers[0])
	if err != nil {
		t.Fatal(err)
	}
	forged := pointAt(ix, map[string]string{"a.txt": "b.txt", long + "twin-A": long + "twin-B"})
	if err := s.PutLayerIndex(forged); err != nil {
		t.Fatal(err)
	}

	mnt, _ := mountStore(t, st)
	dir := filepath.Join(mnt, "test", "forged", "v1")
	for _, p := range []string{"rootfs/a.txt", "layers/0/a.txt", "rootfs/a.txt", "rootfs/" + long + "twin-A", "layers/0/" + long + "twin-A"} {
		r := runIn(t, "", "cat", filepath.Join(dir, p))
		if r.code == 0 || !strings.Contains(r.stderr, "Input/output error") {
			t.Errorf("cat %s: exit %d, stderr %q, want Input/output error", p, r.code, r.stderr)
		}
		if r.stdout != "" {
			t.Errorf("cat %s printed %q", p, r.stdout)
		}
	}
	for p, want := range map[string]string{"rootfs/b.txt": b, "rootfs/c.txt": "c\n", "layers/0/b.txt": b, "rootfs/" + long + "twin-B": "twin B\n"} {
		if got := ok(t, "", "cat", filepath.Join(dir, p)); got != want {
			t.Errorf("cat %s = %q, want %q", p, got, want)
		}
	}

	log, err := os.ReadFile(filepath.Join(st, ".imgfs", "mount.log"))
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for l := range strings.Lines(string(log)) {
		if strings.Contains(l, img.layers[0].Digest.String()) {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 || !strings.Contains(lines[0], "does not match the index") || !strings.Contains(lines[0], "offset") {
		t.Errorf("the mount log names the forged layer on %d lines, want 1 saying the header does not match:\n%s", len(lines), log)
	}

	r := imgfs(t, st, "diff", "test/other:v1", "test/forged:v1")
	if r.code != 1 || !strings.Contains(r.stderr, "a.txt") || !strings.Contains(r.stderr, img.layers[0].Digest.String()) ||
		strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		t.Errorf("imgfs diff through the forged index: exit %d, stdout %q, stderr %q; want exit 1 and one line naming a.txt and the layer", r.code, r.stdout, r.stderr)
	}
}

// pointAt returns a copy of ix whose entries named as keys of to have the data offsets of
// the entries their values name: an index forged to serve one file's bytes as another's.
func pointAt(ix *layerindex.Index, to map[string]string) *layerindex.Index {
	entries := ix.TOC.Entries()
	offsets := map[string]int64{}
	for _, e := range entries {
		offsets[e.Name] = e.Offset
	}
	for i, e := range entries {
		if other, ok := to[e.Name]; ok {
			entries[i].Offset = offsets[other]
		}
	}
	forged := *ix
	forged.TOC = layerindex.NewTOC(entries)
	return &forged
}
