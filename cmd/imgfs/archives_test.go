package main

import (
	"bytes"
	"compress/gzip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestImportArchivesAsDocker imports what docker, skopeo and buildah users have at hand —
// a pre-25 docker save written by skopeo (plain and gzipped), an oci-archive, an OCI layout
// and Docker 25's own save of hello-world — with one `imgfs import`, and checks that
// `imgfs ls` names them as `docker images` would. Then a damaged archive is refused with
// one line and exit 1, leaving index.json as it was.
func TestImportArchivesAsDocker(t *testing.T) {
	if _, err := exec.LookPath("skopeo"); err != nil {
		t.Fatal("skopeo not found: apt-get install skopeo (make deps)")
	}
	layout, _ := ociLayout(t, "", 0)
	tmp := t.TempDir()
	skopeo := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("skopeo", args...).CombinedOutput(); err != nil {
			t.Fatalf("skopeo %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	dockerTar := filepath.Join(tmp, "app.tar")
	skopeo("copy", "oci:"+layout, "docker-archive:"+dockerTar+":example.com/team/app:1")
	busyTar := filepath.Join(tmp, "busybox.tar")
	skopeo("copy", "oci:"+layout, "docker-archive:"+busyTar+":busybox:1.36")
	raw, err := os.ReadFile(busyTar)
	if err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(raw)
	zw.Close()
	busyGz := filepath.Join(tmp, "busybox.tar.gz")
	if err := os.WriteFile(busyGz, gz.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	ociTar := filepath.Join(tmp, "other.tar")
	skopeo("copy", "oci:"+layout, "oci-archive:"+ociTar+":quay.io/other/app:2")
	ociDir := filepath.Join(tmp, "layout")
	skopeo("copy", "oci:"+layout, "oci:"+ociDir+":localhost:5000/dir/app:3")
	hello := filepath.Join("..", "..", "..", "shared", "fixtures", "hello-world-v25.tar")

	_, dir := openStore(t)
	r := imgfsOK(t, dir, "import", "-q", dockerTar, busyGz, ociTar, ociDir, hello)
	for _, want := range []string{
		"Loaded image: example.com/team/app:1", "Loaded image: busybox:1.36",
		"Loaded image: quay.io/other/app:2", "Loaded image: localhost:5000/dir/app:3",
		"Loaded image ID: sha256:ee301c92",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("import output lacks %q:\n%s", want, r.stdout)
		}
	}
	ls := imgfsOK(t, dir, "ls").stdout
	for _, row := range [][]string{
		{"example.com/team/app", "1"}, {"busybox", "1.36"}, {"quay.io/other/app", "2"},
		{"localhost:5000/dir/app", "3"}, {"<none>", "<none>", "ee301c921b8a"},
	} {
		found := false
		for _, line := range strings.Split(ls, "\n") {
			c := columns(line)
			if len(c) >= len(row) && strings.Join(c[:len(row)], " ") == strings.Join(row, " ") {
				found = true
			}
		}
		if !found {
			t.Errorf("imgfs ls has no row %q:\n%s", row, ls)
		}
	}

	before, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	truncated := filepath.Join(tmp, "truncated.tar")
	if err := os.WriteFile(truncated, raw[:len(raw)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	bad := imgfsIn(t, nil, nil, "--store", dir, "import", "-q", truncated)
	if bad.code != 1 || strings.Count(strings.TrimSpace(bad.stderr), "\n") != 0 ||
		!strings.HasPrefix(bad.stderr, "imgfs: ") || !strings.Contains(bad.stderr, "truncated") {
		t.Errorf("truncated archive: exit %d, stderr %q; want exit 1 and one line saying it is truncated", bad.code, bad.stderr)
	}
	after, _ := os.ReadFile(filepath.Join(dir, "index.json"))
	if !bytes.Equal(before, after) {
		t.Error("a refused import changed index.json")
	}
}
