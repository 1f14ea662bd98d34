package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/distribution/reference"
	"github.com/imgfs/imgfs/internal/testimg"
	"github.com/imgfs/imgfs/store"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// imgfsBin is the imgfs binary TestMain builds; the tests run it as a user would.
var imgfsBin string

const testVersion = "v0.0.0-test"

func TestMain(m *testing.M) {
	os.Exit(func() int {
		dir, err := os.MkdirTemp("", "imgfs-cli-test-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		imgfsBin = filepath.Join(dir, "imgfs")
		goCmd, err := exec.LookPath("go")
		if err != nil {
			goCmd = filepath.Join("/usr/local/go/bin", "go")
		}
		build := exec.Command(goCmd, "build", "-ldflags", "-X main.version="+testVersion, "-o", imgfsBin, ".")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "building imgfs:", err)
			return 1
		}
		return m.Run()
	}())
}

// result is what a run of imgfs did.
type result struct {
	stdout, stderr string
	code           int
}

// imgfs runs the binary with args and the given stdin (nil: none), IMGFS_STORE unset so
// that nothing reaches a real store by accident.
func imgfsIn(t *testing.T, stdin []byte, env []string, args ...string) result {
	t.Helper()
	cmd := exec.Command(imgfsBin, args...)
	cmd.Env = append(slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "IMGFS_STORE=")
	}), env...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
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

// imgfs runs imgfs --store dir args... and fails the test unless it exits 0.
func imgfsOK(t *testing.T, dir string, args ...string) result {
	t.Helper()
	r := imgfsIn(t, nil, nil, append([]string{"--store", dir}, args...)...)
	if r.code != 0 {
		t.Fatalf("imgfs %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r
}

// testImage is an image a test wrote into a store.
type testImage struct {
	manifest     ocispec.Descriptor
	id           digest.Digest
	layer        ocispec.Descriptor
	diffID       digest.Digest
	uncompressed int64
}

// layerTar makes a tar of files (name -> content), and its gzip.
func layerTar(t *testing.T, files map[string]string) (tarball, gz []byte) {
	t.Helper()
	bin := make(map[string][]byte, len(files))
	for n, body := range files {
		bin[n] = []byte(body)
	}
	tarball = testimg.Tar(t, bin)
	var zb bytes.Buffer
	zw := gzip.NewWriter(&zb)
	zw.Write(tarball)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return tarball, zb.Bytes()
}

// writeImage writes a one-layer image into s with store's own API. created nil: the config
// has no date. indexed: the layer is stored with its layer index (WriteLayer), else as a
// plain blob whose index is missing.
func writeImage(t *testing.T, s *store.Store, files map[string]string, created *time.Time, indexed bool) testImage {
	t.Helper()
	tarball, gz := layerTar(t, files)
	ti := testImage{diffID: digest.FromBytes(tarball), uncompressed: int64(len(tarball))}
	ti.layer = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromBytes(gz), Size: int64(len(gz))}
	if indexed {
		ix, err := s.WriteLayer(bytes.NewReader(gz), ti.layer)
		if err != nil {
			t.Fatal(err)
		}
		if ix.Size != ti.uncompressed || ix.DiffID != ti.diffID {
			t.Fatalf("layer index: size %d diffID %s, want %d %s", ix.Size, ix.DiffID, ti.uncompressed, ti.diffID)
		}
	} else if _, _, err := s.WriteBlob(bytes.NewReader(gz), ti.layer.Digest); err != nil {
		t.Fatal(err)
	}
	cfg := ocispec.Image{
		Created:  created,
		Platform: ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH},
		Config:   ocispec.ImageConfig{Cmd: []string{"sh"}},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{ti.diffID}},
	}
	cd := putJSON(t, s, ocispec.MediaTypeImageConfig, cfg)
	ti.id = cd.Digest
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: cd, Layers: []ocispec.Descriptor{ti.layer}}
	m.SchemaVersion = 2
	ti.manifest = putJSON(t, s, ocispec.MediaTypeImageManifest, m)
	return ti
}

func putJSON(t *testing.T, s *store.Store, mediaType string, v any) ocispec.Descriptor {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	d, n, err := s.WriteBlob(bytes.NewReader(data), digest.FromBytes(data))
	if err != nil {
		t.Fatal(err)
	}
	return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: n}
}

func tag(t *testing.T, s *store.Store, name string, img testImage) {
	t.Helper()
	n, err := reference.ParseNormalizedNamed(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Tag(n, img.manifest); err != nil {
		t.Fatal(err)
	}
}

func openStore(t *testing.T) (*store.Store, string) {
	t.Helper()
	dir := t.TempDir()
	s, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s, dir
}
