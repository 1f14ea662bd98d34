package tests

import (
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imgfs/imgfs/store"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestHistory: imgfs history of an image prints what docker history prints of the same
// image loaded from its export.tar into the tests' dockerd, row by row and byte for byte:
// the table (CREATED BY cut at 45, short ID), --no-trunc, -q and the JSON rows. The image
// has every kind of layer entry docker sizes (files, hard and symbolic links, whiteouts,
// an opaque directory) and history entries with and without layers, a comment, a tab, and
// a long and non-ASCII CREATED BY. hello-world (a docker save) is checked too. An entry
// without a date is checked in JSON: CREATED is "N/A" there, as docker's CLI says it from
// version 23 (Debian 12's, 20.10, says "292 years ago").
func TestHistory(t *testing.T) {
	tmp := t.TempDir()
	dir := filepath.Join(tmp, "store")
	s, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	day := func(d int) *time.Time {
		c := time.Date(2023, 1, d, 12, 0, 0, 0, time.UTC)
		return &c
	}
	hist := []ocispec.History{
		{Created: day(1), CreatedBy: "/bin/sh -c #(nop) ADD file:0123456789abcdef in / "},
		{Created: day(1), CreatedBy: `/bin/sh -c #(nop)  CMD ["sh"]`, EmptyLayer: true},
		{Created: day(2), CreatedBy: "RUN /bin/sh -c apt-get update &&\tapt-get install -y curl ca-certificates gnupg lsb-release # buildkit", Comment: "buildkit.dockerfile.v0"},
		{Created: day(3), CreatedBy: "LABEL é=ü über-long label that docker cuts somewhere in the middle of it", EmptyLayer: true},
	}
	if _, err := writeImageWith(s, "test/hist:v1", ocispec.MediaTypeImageLayerGzip, hist, layer0(), layer1()); err != nil {
		t.Fatal(err)
	}
	undated := append(hist[:len(hist):len(hist)], ocispec.History{CreatedBy: "LABEL undated=1", EmptyLayer: true})
	if _, err := writeImageWith(s, "test/undated:v1", ocispec.MediaTypeImageLayerGzip, undated, layer0(), layer1()); err != nil {
		t.Fatal(err)
	}
	hello := regexp.MustCompile(`sha256:[0-9a-f]{64}`).FindString(imgfsOK(t, dir, "import", "-q", "../../shared/fixtures/hello-world-v25.tar"))

	for _, ref := range []string{"test/hist:v1", hello, "test/undated:v1"} {
		archive := filepath.Join(tmp, strings.NewReplacer("/", "_", ":", "_").Replace(ref)+".tar")
		imgfsOK(t, dir, "save", "-o", archive, ref)
		dockerLoad(t, archive)
		d := dockerDaemon(t)
		if ref == "test/undated:v1" {
			want := strings.Split(ok(t, "", d.client, "-H", d.host, "history", "--no-trunc", "--format", "{{json .}}", ref), "\n")
			got := strings.Split(imgfsOK(t, dir, "history", "--no-trunc", "--format", "json", ref), "\n")
			want[0] = strings.Replace(want[0], `"CreatedSince":"292 years ago"`, `"CreatedSince":"N/A"`, 1)
			if !slices.Equal(got, want) {
				t.Errorf("imgfs history --no-trunc --format json %s:\n%s\ndocker's:\n%s", ref, strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			if !strings.Contains(got[0], `"CreatedAt":"0001-01-01T00:00:00Z","CreatedBy":"LABEL undated=1","CreatedSince":"N/A"`) {
				t.Errorf("imgfs history: the undated row is %s", got[0])
			}
			continue
		}
		for _, c := range []struct{ docker, imgfs []string }{
			{[]string{"history", ref}, []string{"history", ref}},
			{[]string{"history", "--no-trunc", ref}, []string{"history", "--no-trunc", ref}},
			{[]string{"history", "-q", ref}, []string{"history", "-q", ref}},
			{[]string{"history", "--no-trunc", "--format", "{{json .}}", ref}, []string{"history", "--no-trunc", "--format", "json", ref}},
			{[]string{"history", "--format", "{{json .}}", ref}, []string{"history", "--format", "json", ref}},
		} {
			want := ok(t, "", d.client, append([]string{"-H", d.host}, c.docker...)...)
			got := imgfsOK(t, dir, c.imgfs...)
			if got != want {
				t.Errorf("imgfs %s:\n%s\ndocker %s:\n%s", strings.Join(c.imgfs, " "), got, strings.Join(c.docker, " "), want)
			}
		}
	}
	if rows := strings.Count(imgfsOK(t, dir, "history", "-q", "test/hist:v1"), "\n"); rows != len(hist) {
		t.Errorf("imgfs history -q: %d rows, want %d", rows, len(hist))
	}
	if r := imgfs(t, dir, "history", "test/nothing:here"); r.code != 1 || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("imgfs history of an unknown image: exit %d, stderr %q; want 1 and one line", r.code, r.stderr)
	}
}
