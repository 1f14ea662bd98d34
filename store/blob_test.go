package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestOpenCreatesLayout(t *testing.T) {
	root := filepath.Join(t.TempDir(), "a", "store")
	s, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "oci-layout"))
	if err != nil {
		t.Fatal(err)
	}
	var l ocispec.ImageLayout
	if err := json.Unmarshal(data, &l); err != nil || l.Version != "1.0.0" {
		t.Fatalf("oci-layout = %s (%v)", data, err)
	}
	if data, _ := os.ReadFile(filepath.Join(root, "index.json")); string(data) != emptyIndex {
		t.Fatalf("index.json = %s", data)
	}
	if ix := readIndexJSON(t, s); ix.SchemaVersion != 2 || len(ix.Manifests) != 0 {
		t.Fatalf("index.json = %+v", ix)
	}
	for _, d := range []string{"blobs/sha256", ".imgfs/index/sha256", ".imgfs/tmp"} {
		if fi, err := os.Stat(filepath.Join(root, d)); err != nil || !fi.IsDir() {
			t.Errorf("%s: %v", d, err)
		}
	}
	if imgs, err := s.Images(); err != nil || len(imgs) != 0 {
		t.Fatalf("Images = %v, %v", imgs, err)
	}
	// A new store is its owner's only; a directory that exists keeps its mode.
	if fi, err := os.Stat(root); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("new store %s: mode %v (%v), want 0700", root, fi.Mode(), err)
	}
	existing := filepath.Join(t.TempDir(), "existing")
	if err := os.Mkdir(existing, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(existing); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(existing); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("store in an existing directory: mode %v (%v), want 0755 as it was", fi.Mode(), err)
	}

	// Again, with an image in it: nothing is rewritten.
	img := writeImage(t, s, imageOpts{})
	if err := s.Tag(mustName(t, "busybox"), img.Manifest); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, root)
	s2, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	if d := diffSnapshots(before, snapshot(t, root)); len(d) > 0 {
		t.Fatalf("second Open changed the store: %v", d)
	}
	if _, err := s2.Resolve("busybox"); err != nil {
		t.Fatal(err)
	}
}

func TestOpenRefusesOtherLayoutVersion(t *testing.T) {
	root := t.TempDir()
	os.WriteFile(filepath.Join(root, "oci-layout"), []byte(`{"imageLayoutVersion":"2.0.0"}`), 0o644)
	_, err := Open(root)
	if !errors.Is(err, ErrLayoutVersion) || !strings.Contains(err.Error(), `"2.0.0"`) {
		t.Fatalf("Open = %v, want ErrLayoutVersion naming 2.0.0", err)
	}
	if _, err := os.Stat(filepath.Join(root, "index.json")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("index.json created in a refused directory: %v", err)
	}
	if _, err := Open(""); err == nil {
		t.Fatal(`Open("") succeeded`)
	}
}

func TestDefaultRoot(t *testing.T) {
	t.Setenv("IMGFS_STORE", "/srv/images")
	if got := DefaultRoot(); got != "/srv/images" {
		t.Fatalf("with IMGFS_STORE: %q", got)
	}
	t.Setenv("IMGFS_STORE", "")
	t.Setenv("XDG_DATA_HOME", "/home/u/data")
	want := "/home/u/data/imgfs"
	if os.Geteuid() == 0 {
		want = "/var/lib/imgfs"
	}
	if got := DefaultRoot(); got != want {
		t.Fatalf("DefaultRoot = %q, want %q", got, want)
	}
}

func TestWriteBlob(t *testing.T) {
	s := openStore(t)
	data := []byte("hello, blob\n")
	want := digest.FromBytes(data)

	d, n, err := s.WriteBlob(bytes.NewReader(data), "")
	if err != nil || d != want || n != int64(len(data)) {
		t.Fatalf("WriteBlob = %s, %d, %v", d, n, err)
	}
	if got, err := os.ReadFile(s.BlobPath(want)); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("stored %q, %v", got, err)
	}
	if fi, _ := os.Stat(s.BlobPath(want)); fi.Mode().Perm() != 0o644 {
		t.Errorf("blob mode %v", fi.Mode())
	}
	if !s.HasBlob(want) || s.HasBlob(digest.FromString("other")) || s.HasBlob("sha256:../../oci-layout") {
		t.Fatal("HasBlob wrong")
	}
	if got, err := s.ReadBlob(want, 100); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("ReadBlob = %q, %v", got, err)
	}
	if _, err := s.ReadBlob(want, 4); err == nil {
		t.Fatal("ReadBlob over maxSize succeeded")
	}
	// With the expected digest, and again when present (not rewritten: same inode).
	fi1, _ := os.Stat(s.BlobPath(want))
	if d, _, err := s.WriteBlob(bytes.NewReader(data), want); err != nil || d != want {
		t.Fatalf("WriteBlob again = %s, %v", d, err)
	}
	fi2, _ := os.Stat(s.BlobPath(want))
	if !os.SameFile(fi1, fi2) {
		t.Fatal("present blob rewritten")
	}
	if s.BlobPath("sha256:../../x") != "" {
		t.Fatal("BlobPath of a malformed digest is not empty")
	}
	assertTmpEmpty(t, s)
}

func TestReadBlobErrors(t *testing.T) {
	s := openStore(t)
	missing := digest.FromString("missing")
	_, err := s.OpenBlob(missing)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), missing.String()) {
		t.Fatalf("OpenBlob(missing) = %v", err)
	}
	if _, err := s.ReadBlob(missing, 10); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("ReadBlob(missing) = %v", err)
	}
	// A damaged blob is refused by ReadBlob.
	desc := putBlob(t, s, "", []byte(`{"a":1}`))
	os.WriteFile(s.BlobPath(desc.Digest), []byte(`{"a":2}`), 0o644)
	if _, err := s.ReadBlob(desc.Digest, 100); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("ReadBlob(damaged) = %v", err)
	}
}

func assertTmpEmpty(t *testing.T, s *Store) {
	t.Helper()
	ents, err := os.ReadDir(s.tmpDir())
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) > 0 {
		t.Fatalf("left in .imgfs/tmp: %v", ents)
	}
}

func TestWriteBlobMismatchLeavesStoreUntouched(t *testing.T) {
	s := openStore(t)
	present := putBlob(t, s, "", []byte("already here"))
	before := snapshot(t, s.Root())

	data := []byte("the real content")
	wrong := digest.FromString("something else")
	_, _, err := s.WriteBlob(bytes.NewReader(data), wrong)
	if !errors.Is(err, ErrDigestMismatch) || !strings.Contains(err.Error(), wrong.String()) ||
		!strings.Contains(err.Error(), digest.FromBytes(data).String()) {
		t.Fatalf("WriteBlob(mismatch) = %v, want both digests named", err)
	}
	// Claiming a present blob's digest with other bytes fails too.
	if _, _, err := s.WriteBlob(strings.NewReader("not it"), present.Digest); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("WriteBlob(present digest, other bytes) = %v", err)
	}
	if d := diffSnapshots(before, snapshot(t, s.Root())); len(d) > 0 {
		t.Fatalf("store changed: %v", d)
	}
	assertTmpEmpty(t, s)
}

// A reader that fails midway leaves nothing behind either.
func TestWriteBlobReadError(t *testing.T) {
	s := openStore(t)
	before := snapshot(t, s.Root())
	r := io.MultiReader(strings.NewReader("partial"), errReader{})
	if _, _, err := s.WriteBlob(r, ""); err == nil {
		t.Fatal("WriteBlob of a failing reader succeeded")
	}
	if d := diffSnapshots(before, snapshot(t, s.Root())); len(d) > 0 {
		t.Fatalf("store changed: %v", d)
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("connection reset") }

func TestWriteBlobConcurrentSame(t *testing.T) {
	s := openStore(t)
	data := bytes.Repeat([]byte("concurrent "), 50000)
	want := digest.FromBytes(data)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			exp := want
			if i%2 == 0 {
				exp = "" // some without the expected digest
			}
			d, n, err := s.WriteBlob(bytes.NewReader(data), exp)
			if err == nil && (d != want || n != int64(len(data))) {
				err = errors.New("wrong digest or size")
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got, err := s.ReadBlob(want, int64(len(data))); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("ReadBlob: %v", err)
	}
	assertTmpEmpty(t, s)
}

// A caller teeing the stream sees every byte once, whether the blob is new or present.
func TestWriteBlobTee(t *testing.T) {
	s := openStore(t)
	data := bytes.Repeat([]byte("tee"), 100000)
	for _, exp := range []digest.Digest{"", digest.FromBytes(data), digest.FromBytes(data)} {
		var side bytes.Buffer
		if _, _, err := s.WriteBlob(io.TeeReader(bytes.NewReader(data), &side), exp); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(side.Bytes(), data) {
			t.Fatalf("tee saw %d bytes, want %d", side.Len(), len(data))
		}
	}
}
