package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

func TestVersion(t *testing.T) {
	r := imgfsIn(t, nil, nil, "version")
	if r.code != 0 || r.stdout != "imgfs "+testVersion+"\n" || r.stderr != "" {
		t.Fatalf("version: %+v", r)
	}
}

func TestUsageErrors(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"nope"},
		{"ls", "--bogus"},
		{"--bogus", "ls"},
		{"ls", "a", "b"},
		{"ls", "--format", "xml"},
		{"inspect"},
		{"inspect", "a", "b"},
		{"rm"},
		{"tag", "a"},
		{"gc", "x"},
		{"version", "x"},
		{"--platform", "linux", "ls"},
		{"--platform", "linux/arm/v7/x", "ls"},
	} {
		r := imgfsIn(t, nil, nil, append([]string{"--store", dir}, args...)...)
		lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
		if r.code != 2 || r.stdout != "" || !strings.HasPrefix(lines[0], "imgfs: ") ||
			!strings.HasPrefix(lines[len(lines)-1], "See 'imgfs") {
			t.Errorf("imgfs %s: exit %d, stdout %q, stderr %q; want exit 2 and a usage hint",
				strings.Join(args, " "), r.code, r.stdout, r.stderr)
		}
	}
	// A misspelt command gets a suggestion.
	if r := imgfsIn(t, nil, nil, "--store", dir, "lss"); !strings.Contains(r.stderr, `did you mean "ls"`) {
		t.Errorf("imgfs lss: stderr %q", r.stderr)
	}
	// --help is no error.
	if r := imgfsIn(t, nil, nil, "ls", "--help"); r.code != 0 || !strings.Contains(r.stdout, "Usage:") {
		t.Errorf("imgfs ls --help: %+v", r)
	}
}

func TestUnknownImage(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{{"inspect", "foo"}, {"rm", "foo"}} {
		r := imgfsIn(t, nil, nil, append([]string{"--store", dir}, args...)...)
		if r.code != 1 || r.stdout != "" || r.stderr != "imgfs: no such image: foo\n" {
			t.Errorf("imgfs %s: %+v", strings.Join(args, " "), r)
		}
	}
	// rm goes on past a failure, and still fails.
	s, dir := openStore(t)
	tag(t, s, "busybox:latest", writeImage(t, s, map[string]string{"a": "a"}, nil, true))
	r := imgfsIn(t, nil, nil, "--store", dir, "rm", "nope", "busybox")
	if r.code != 1 || r.stdout != "Untagged: busybox:latest\n" || r.stderr != "imgfs: no such image: nope\n" {
		t.Errorf("rm nope busybox: %+v", r)
	}
}

func TestLsEmpty(t *testing.T) {
	dir := t.TempDir()
	r := imgfsOK(t, dir, "ls")
	if !regexp.MustCompile(`^REPOSITORY +TAG +IMAGE ID +CREATED +SIZE\n$`).MatchString(r.stdout) {
		t.Errorf("ls on an empty store: %q", r.stdout)
	}
	if r := imgfsOK(t, dir, "ls", "--format", "json"); strings.TrimSpace(r.stdout) != "[]" {
		t.Errorf("ls --format json on an empty store: %q", r.stdout)
	}
	// The store comes from IMGFS_STORE too.
	r = imgfsIn(t, nil, []string{"IMGFS_STORE=" + dir}, "ls", "-q")
	if r.code != 0 || r.stdout != "" {
		t.Errorf("IMGFS_STORE=dir imgfs ls -q: %+v", r)
	}
}

// columns splits a table line at runs of 2 or more spaces (cells hold single spaces).
func columns(line string) []string {
	return regexp.MustCompile(` {2,}`).Split(strings.TrimSpace(line), -1)
}

// lsJSON is a row of ls --format json.
type lsJSON struct {
	Repository     string        `json:"repository"`
	Tag            string        `json:"tag"`
	Name           string        `json:"name"`
	ID             digest.Digest `json:"id"`
	Digest         digest.Digest `json:"digest"`
	Created        *time.Time    `json:"created"`
	Size           int64         `json:"size"`
	CompressedSize int64         `json:"compressedSize"`
}

func TestLsInspectRmGC(t *testing.T) {
	s, dir := openStore(t)
	now := time.Now().UTC()
	weeks2, hours3 := now.Add(-15*24*time.Hour), now.Add(-3*time.Hour)
	bb := writeImage(t, s, map[string]string{"bin/sh": strings.Repeat("x", 5000), "etc/passwd": "root:x:0:0::/root:/bin/sh\n"}, &weeks2, true)
	tag(t, s, "busybox:latest", bb)
	tag(t, s, "busybox:1.36", bb)
	app := writeImage(t, s, map[string]string{"app": "v2"}, &hours3, true)
	tag(t, s, "ghcr.io/acme/app:v2", app)
	// An image without name, date or layer index.
	anon := writeImage(t, s, map[string]string{"anon": "1"}, nil, false)
	if err := s.AddUntagged(anon.manifest); err != nil {
		t.Fatal(err)
	}

	// ls: newest first, one row per name, <none> last (no date).
	r := imgfsOK(t, dir, "ls")
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	want := [][]string{
		{"REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"},
		{"ghcr.io/acme/app", "v2", app.id.Encoded()[:12], "3 hours ago", humanSize(app.uncompressed)},
		{"busybox", "1.36", bb.id.Encoded()[:12], "2 weeks ago", humanSize(bb.uncompressed)},
		{"busybox", "latest", bb.id.Encoded()[:12], "2 weeks ago", humanSize(bb.uncompressed)},
		{"<none>", "<none>", anon.id.Encoded()[:12], "N/A", humanSize(anon.layer.Size)},
	}
	if len(lines) != len(want) {
		t.Fatalf("ls:\n%s", r.stdout)
	}
	for i, w := range want {
		if got := columns(lines[i]); !slices.Equal(got, w) {
			t.Errorf("ls line %d: %q, want %q\n%s", i, got, w, r.stdout)
		}
	}
	if !strings.HasPrefix(lines[1][strings.Index(lines[0], "TAG"):], "v2") {
		t.Errorf("ls: columns not aligned:\n%s", r.stdout)
	}
	if bb.uncompressed != 7680 || humanSize(bb.uncompressed) != "7.68kB" {
		t.Errorf("busybox layer: %d bytes, %s", bb.uncompressed, humanSize(bb.uncompressed))
	}

	// ls --format json: the same rows, full fields.
	r = imgfsOK(t, dir, "ls", "--format", "json")
	var rows []lsJSON
	if err := json.Unmarshal([]byte(r.stdout), &rows); err != nil {
		t.Fatalf("ls --format json: %v\n%s", err, r.stdout)
	}
	if len(rows) != 4 {
		t.Fatalf("ls --format json: %d rows\n%s", len(rows), r.stdout)
	}
	if g := rows[1]; g.Repository != "busybox" || g.Tag != "1.36" || g.Name != "docker.io/library/busybox:1.36" ||
		g.ID != bb.id || g.Digest != bb.manifest.Digest || g.Created == nil || !g.Created.Equal(weeks2) ||
		g.Size != bb.uncompressed || g.CompressedSize != bb.layer.Size {
		t.Errorf("ls --format json row 1: %+v", g)
	}
	if g := rows[3]; g.Repository != "<none>" || g.Tag != "<none>" || g.ID != anon.id || g.Created != nil || g.Size != anon.layer.Size {
		t.Errorf("ls --format json row 3: %+v", g)
	}

	// ls REPOSITORY[:TAG], ls -q.
	if r := imgfsOK(t, dir, "ls", "busybox"); strings.Count(r.stdout, "\n") != 3 {
		t.Errorf("ls busybox:\n%s", r.stdout)
	}
	if r := imgfsOK(t, dir, "images", "busybox:1.36"); strings.Count(r.stdout, "\n") != 2 || !strings.Contains(r.stdout, "1.36") {
		t.Errorf("images busybox:1.36:\n%s", r.stdout)
	}
	if r := imgfsOK(t, dir, "ls", "-q"); r.stdout != strings.Join([]string{app.id.Encoded()[:12], bb.id.Encoded()[:12], anon.id.Encoded()[:12], ""}, "\n") {
		t.Errorf("ls -q:\n%s", r.stdout)
	}

	// inspect: the layers with their index state.
	type inspected struct {
		Name      string        `json:"name"`
		RepoTags  []string      `json:"repoTags"`
		ID        digest.Digest `json:"id"`
		Digest    digest.Digest `json:"digest"`
		MediaType string        `json:"mediaType"`
		Platform  struct{ OS, Architecture string }
		Size      int64           `json:"size"`
		Config    json.RawMessage `json:"config"`
		Layers    []struct {
			Digest    digest.Digest `json:"digest"`
			Size      int64         `json:"size"`
			MediaType string        `json:"mediaType"`
			DiffID    digest.Digest `json:"diffID"`
			Index     struct {
				State string `json:"state"`
				Size  int64  `json:"size"`
			} `json:"index"`
		} `json:"layers"`
	}
	var ins inspected
	r = imgfsOK(t, dir, "inspect", "busybox")
	if err := json.Unmarshal([]byte(r.stdout), &ins); err != nil {
		t.Fatalf("inspect: %v\n%s", err, r.stdout)
	}
	if !strings.Contains(r.stdout, "\n  \"layers\": [\n") {
		t.Errorf("inspect: not indented:\n%s", r.stdout)
	}
	l := ins.Layers
	if ins.Name != "busybox:latest" || !slices.Equal(ins.RepoTags, []string{"busybox:1.36", "busybox:latest"}) ||
		ins.ID != bb.id || ins.Digest != bb.manifest.Digest || ins.MediaType != "application/vnd.oci.image.manifest.v1+json" ||
		ins.Platform.OS != "linux" || ins.Size != bb.uncompressed || !json.Valid(ins.Config) ||
		len(l) != 1 || l[0].Digest != bb.layer.Digest || l[0].Size != bb.layer.Size || l[0].DiffID != bb.diffID ||
		l[0].MediaType != bb.layer.MediaType || l[0].Index.State != "built" || l[0].Index.Size != bb.uncompressed {
		t.Errorf("inspect busybox:\n%s", r.stdout)
	}
	// An image whose layer index is not built: inspect does not build it.
	r = imgfsOK(t, dir, "inspect", anon.id.Encoded()[:12])
	ins = inspected{}
	if err := json.Unmarshal([]byte(r.stdout), &ins); err != nil {
		t.Fatal(err)
	}
	if ins.Name != "" || len(ins.Layers) != 1 || ins.Layers[0].Index.State != "missing" || ins.Layers[0].Index.Size != 0 {
		t.Errorf("inspect anon:\n%s", r.stdout)
	}
	if r := imgfsOK(t, dir, "inspect", anon.id.Encoded()[:12]); strings.Contains(r.stdout, `"built"`) {
		t.Errorf("inspect built a layer index:\n%s", r.stdout)
	}

	// rm: a name; an image ID without name; ls no longer lists them.
	if r := imgfsOK(t, dir, "rm", "busybox:1.36"); r.stdout != "Untagged: busybox:1.36\n" {
		t.Errorf("rm busybox:1.36: %q", r.stdout)
	}
	if r := imgfsOK(t, dir, "rmi", "sha256:"+anon.id.Encoded()[:16]); r.stdout != "Deleted: "+anon.id.String()+"\n" {
		t.Errorf("rm anon: %q", r.stdout)
	}
	r = imgfsOK(t, dir, "ls")
	if strings.Contains(r.stdout, "1.36") || strings.Contains(r.stdout, "<none>") || !strings.Contains(r.stdout, "latest") {
		t.Errorf("ls after rm:\n%s", r.stdout)
	}
	// An ID untags every name of the image.
	tag(t, s, "busybox:1.36", bb)
	if r := imgfsOK(t, dir, "rm", bb.id.Encoded()); r.stdout != "Untagged: busybox:1.36\nUntagged: busybox:latest\n" &&
		r.stdout != "Untagged: busybox:latest\nUntagged: busybox:1.36\n" {
		t.Errorf("rm <busybox id>: %q", r.stdout)
	}
	// ... unless they are in several repositories.
	tag(t, s, "busybox:latest", bb)
	tag(t, s, "mirror.example/busybox:latest", bb)
	r = imgfsIn(t, nil, nil, "--store", dir, "rm", bb.id.Encoded()[:12])
	if r.code != 1 || !strings.HasPrefix(r.stderr, "imgfs: conflict: unable to delete "+bb.id.Encoded()[:12]) || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("rm <id in 2 repositories>: %+v", r)
	}
	if r := imgfsOK(t, dir, "rm", "-f", bb.id.Encoded()[:12]); strings.Count(r.stdout, "Untagged: ") != 2 {
		t.Errorf("rm -f: %q", r.stdout)
	}

	// gc removes what nothing names any more, and keeps the rest.
	r = imgfsOK(t, dir, "gc")
	if !regexp.MustCompile(`^Removed [1-9][0-9]* blobs, freed [0-9.]+k?B\n$`).MatchString(r.stdout) {
		t.Errorf("gc: %q", r.stdout)
	}
	for _, d := range []digest.Digest{bb.layer.Digest, bb.id, bb.manifest.Digest, anon.layer.Digest, anon.id} {
		if s.HasBlob(d) {
			t.Errorf("gc kept %s", d)
		}
	}
	for _, d := range []digest.Digest{app.layer.Digest, app.id, app.manifest.Digest} {
		if !s.HasBlob(d) {
			t.Errorf("gc removed %s", d)
		}
	}
	if r := imgfsOK(t, dir, "gc"); r.stdout != "Removed 0 blobs, freed 0B\n" {
		t.Errorf("gc again: %q", r.stdout)
	}
	r = imgfsOK(t, dir, "ls")
	if lines := strings.Split(strings.TrimSpace(r.stdout), "\n"); len(lines) != 2 || !strings.HasPrefix(lines[1], "ghcr.io/acme/app") {
		t.Errorf("ls after gc:\n%s", r.stdout)
	}
}

// rm removes a name whatever became of its image: a manifest blob missing or damaged
// leaves a line of index.json that rm can still drop.
func TestRmBrokenImage(t *testing.T) {
	s, dir := openStore(t)
	missing := writeImage(t, s, map[string]string{"a": "missing"}, nil, true)
	damaged := writeImage(t, s, map[string]string{"a": "damaged"}, nil, true)
	ok := writeImage(t, s, map[string]string{"a": "ok"}, nil, true)
	tag(t, s, "busybox:latest", missing)
	tag(t, s, "ghcr.io/acme/app:1", damaged)
	tag(t, s, "ok:1", ok)
	if err := os.Remove(s.BlobPath(missing.manifest.Digest)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.BlobPath(damaged.manifest.Digest), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := imgfsIn(t, nil, nil, "--store", dir, "rm", "busybox", "ghcr.io/acme/app:1")
	if r.code != 0 || r.stdout != "Untagged: busybox:latest\nUntagged: ghcr.io/acme/app:1\n" {
		t.Errorf("rm of names whose manifests are missing or damaged: %+v", r)
	}
	r = imgfsOK(t, dir, "ls", "--format", "json")
	var rows []lsJSON
	if err := json.Unmarshal([]byte(r.stdout), &rows); err != nil || len(rows) != 1 || rows[0].Repository != "ok" {
		t.Errorf("ls after rm: %v\n%s%s", err, r.stdout, r.stderr)
	}
	if r := imgfsIn(t, nil, nil, "--store", dir, "rm", "busybox"); r.code != 1 || r.stderr != "imgfs: no such image: busybox\n" {
		t.Errorf("rm busybox again: %+v", r)
	}
}

// gc behind an import says, once, what it waits for, and goes on when the import ends.
func TestGCSaysWhatItWaitsFor(t *testing.T) {
	s, dir := openStore(t)
	release, err := s.Hold() // as an import does, from its first blob to its tag
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	cmd := exec.Command(imgfsBin, "--store", dir, "gc")
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	want := fmt.Sprintf("imgfs gc: waiting for an import running in this store (pid %d) to finish", os.Getpid())
	select {
	case l := <-lines:
		if l != want {
			t.Errorf("gc said %q, want %q", l, want)
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatal("gc said nothing in 10 s")
	}
	release()
	var more []string
	for l := range lines {
		more = append(more, l)
	}
	if err := cmd.Wait(); err != nil || len(more) > 0 || stdout.String() != "Removed 0 blobs, freed 0B\n" {
		t.Errorf("gc after the import: %v, stdout %q, more stderr %q", err, stdout.String(), more)
	}
}

// TestTag: imgfs tag names an image again, as docker tag does: by name or ID, :latest when
// the target has no tag, a name that had another image moves; a digest target, a bad name
// and an unknown source are refused with one line.
func TestTag(t *testing.T) {
	s, dir := openStore(t)
	one := writeImage(t, s, map[string]string{"a": "1"}, nil, true)
	two := writeImage(t, s, map[string]string{"b": "2"}, nil, true)
	tag(t, s, "busybox:1.36", one)
	tag(t, s, "alpine:3", two)
	id := func(ref string) digest.Digest {
		t.Helper()
		img, err := s.Resolve(ref)
		if err != nil {
			t.Fatalf("%s: %v", ref, err)
		}
		return img.ID
	}
	for _, args := range [][]string{
		{"busybox:1.36", "ghcr.io/acme/app"},
		{id("busybox:1.36").Encoded()[:12], "busybox:mine"},
		{"alpine:3", "busybox:mine"}, // moves to the other image
	} {
		if r := imgfsOK(t, dir, append([]string{"tag"}, args...)...); r.stdout != "" || r.stderr != "" {
			t.Errorf("tag %v printed %+v", args, r)
		}
	}
	if id("ghcr.io/acme/app:latest") != id("busybox:1.36") || id("busybox:mine") != id("alpine:3") {
		t.Error("tag did not name the images asked")
	}
	if id("busybox:1.36") == id("alpine:3") {
		t.Error("tag changed the source's own name")
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"nope", "x"}, "imgfs: no such image: nope\n"},
		{[]string{"busybox:1.36", "Bad/Name"}, "imgfs: invalid reference format"},
		{[]string{"busybox:1.36", "busybox@sha256:" + strings.Repeat("a", 64)}, "imgfs: refusing to create a tag with a digest reference\n"},
	} {
		r := imgfsIn(t, nil, nil, append([]string{"--store", dir, "tag"}, c.args...)...)
		if r.code != 1 || r.stdout != "" || !strings.HasPrefix(r.stderr, c.want) || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("tag %v: %+v, want exit 1 and %q", c.args, r, c.want)
		}
	}
}
