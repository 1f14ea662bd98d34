// Package store is imgfs's local image store: an OCI image layout directory (oci-layout,
// index.json, blobs/) that skopeo, umoci, crane and buildah can read and write too, plus a
// .imgfs/ directory of things derived from the blobs (layer indexes) that can be deleted and
// rebuilt at any time.
//
// Every write is atomic: data goes to a temp file in .imgfs/tmp, is verified and fsynced,
// then renamed into place and its directory fsynced, so a crash leaves the store as it was.
// index.json is rewritten under an exclusive flock on the store directory after re-reading
// it, so processes tagging at once all land, whatever is deleted in .imgfs/ meanwhile.
// Blobs are never rewritten once present.
//
// Layout:
//
//	oci-layout                    {"imageLayoutVersion":"1.0.0"}
//	index.json                    one descriptor per name
//	blobs/<alg>/<hex>             manifests, indexes, configs, layers as pulled
//	.imgfs/index/<alg>/<hex>      layer index of layer blob <hex> (layerindex format)
//	.imgfs/tmp/                   temp files of writes in progress
//
// The locks are flocks on the store directory (index.json writers) and on blobs/ (GC
// against imports), which deleting .imgfs/ cannot take away; see lockDir.
package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/imgfs/imgfs/layerindex"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Annotations naming an image in index.json. containerd's carries the full normalized
// reference (docker.io/library/busybox:latest); the OCI one carries the tag only when we
// write it, but other tools (skopeo's oci:DIR:busybox:latest) put a short name:tag there.
const (
	AnnotationImageName = "io.containerd.image.name"
	AnnotationRefName   = ocispec.AnnotationRefName
)

// Errors callers may test for with errors.Is.
var (
	// ErrNoSuchImage is wrapped by Resolve and Untag when nothing has the name asked for;
	// the message reads "no such image: busybox:1.0".
	ErrNoSuchImage = errors.New("no such image")
	// ErrAmbiguous is wrapped by Resolve when an image ID prefix matches several images.
	ErrAmbiguous = errors.New("ambiguous image ID prefix")
	// ErrDigestMismatch is wrapped when bytes do not hash to the digest they were asked
	// for (a damaged blob, a bad download).
	ErrDigestMismatch = errors.New("digest mismatch")
	// ErrLayoutVersion is returned by Open for an oci-layout of a version we do not know:
	// writing into it could break whoever made it.
	ErrLayoutVersion = errors.New("unsupported OCI layout version")
)

// Store is an open image store. Its methods are safe for concurrent use by goroutines and,
// through flock, by processes sharing the directory.
type Store struct {
	root string

	// Platform, when set, is the platform Images and Resolve pick from an image index
	// (multi-arch image) instead of the host's. Set it before first use.
	Platform *ocispec.Platform

	// Logger, when set, gets what the store mends on its own (a layer index rebuilt),
	// instead of slog.Default(). Set it before first use.
	Logger *slog.Logger

	// GCWaiting, when set, is called once by a GC that has waited GCWaitNotice for the
	// imports running in the store (Hold) to finish, with the IDs of the processes
	// holding them as far as the system tells (none when it does not). GC waits on.
	GCWaiting func(pids []int)

	// mu serializes index.json writers of this process. flock already does between open
	// file descriptions, but not on filesystems that emulate flock with per-process fcntl
	// locks (NFS).
	mu sync.Mutex

	dirLocksOnce sync.Once
	dirLocks     bool // flocks go on directories, not on files in .imgfs/ (canLockDirs)

	cacheMu   sync.Mutex
	manifests map[digest.Digest]parsed // parsed manifests/indexes by blob digest (immutable)
	layers    map[digest.Digest]*layerindex.Index
	streams   map[digest.Digest]*layerindex.Index // LayerStream's, without entries
	building  map[digest.Digest]*buildCall        // LayerIndex builds in flight
}

// DefaultRoot returns where the store lives when not told: $IMGFS_STORE, else
// /var/lib/imgfs for root, else ${XDG_DATA_HOME:-~/.local/share}/imgfs. It returns ""
// when none applies (no home directory), which Open refuses with a hint.
func DefaultRoot() string {
	if d := os.Getenv("IMGFS_STORE"); d != "" {
		return d
	}
	if os.Geteuid() == 0 {
		return "/var/lib/imgfs"
	}
	// The XDG spec says relative values are invalid and must be ignored.
	if d := os.Getenv("XDG_DATA_HOME"); filepath.IsAbs(d) {
		return filepath.Join(d, "imgfs")
	}
	if home, err := os.UserHomeDir(); err == nil && home != "" {
		return filepath.Join(home, ".local", "share", "imgfs")
	}
	return ""
}

// emptyIndex is the index.json of a new store.
const emptyIndex = `{"schemaVersion":2,"manifests":[]}`

// Open opens the store at root, creating the layout (directories, oci-layout, an empty
// index.json) if it is absent, and root itself with mode 0700 if it does not exist. An existing layout is not written to, so a read-only store
// opens fine. A directory whose oci-layout names another version is refused.
func Open(root string) (*Store, error) {
	if root == "" {
		return nil, errors.New("store: no store directory: set IMGFS_STORE")
	}
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	s := &Store{
		root:      root,
		manifests: make(map[digest.Digest]parsed),
		layers:    make(map[digest.Digest]*layerindex.Index),
		streams:   make(map[digest.Digest]*layerindex.Index),
		building:  make(map[digest.Digest]*buildCall),
	}
	ok, err := s.checkLayout()
	if err != nil {
		return nil, err
	}
	if !ok {
		if err := s.createLayout(); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Root returns the store's directory.
func (s *Store) Root() string { return s.root }

// StateDir returns imgfs's own directory in the store (.imgfs): what it derives from the
// layout (layer indexes), its temp files and the mount's log, none of which other tools
// read.
func (s *Store) StateDir() string { return s.path(".imgfs") }

// ChunkCacheDir is where lazy mounts keep the bytes they fetch from registries (see
// package chunks), shared by every mount of the store.
func (s *Store) ChunkCacheDir() string { return s.path(".imgfs", "cache") }

func (s *Store) log() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

func (s *Store) path(elem ...string) string {
	return filepath.Join(append([]string{s.root}, elem...)...)
}

func (s *Store) tmpDir() string { return s.path(".imgfs", "tmp") }

// checkLayout reports whether root holds a complete layout of our version.
func (s *Store) checkLayout() (bool, error) {
	data, err := os.ReadFile(s.path(ocispec.ImageLayoutFile))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("store: %w", err)
	}
	var l ocispec.ImageLayout
	if err := json.Unmarshal(data, &l); err != nil {
		return false, fmt.Errorf("store: %s: %v", s.path(ocispec.ImageLayoutFile), err)
	}
	if l.Version != ocispec.ImageLayoutVersion {
		return false, fmt.Errorf("store: %s: %w %q (want %q)",
			s.path(ocispec.ImageLayoutFile), ErrLayoutVersion, l.Version, ocispec.ImageLayoutVersion)
	}
	if _, err := os.Stat(s.path("index.json")); errors.Is(err, fs.ErrNotExist) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("store: %w", err)
	}
	return true, nil
}

// createLayout makes what is missing of the layout. It runs under the index lock so that
// a process creating index.json cannot replace one another process just created and
// tagged into.
func (s *Store) createLayout() error {
	// A new store is its owner's only: its layer blobs hold every file of every image,
	// whatever the files' own modes say.
	if err := os.MkdirAll(s.root, 0o700); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	for _, d := range []string{
		s.path("blobs", string(digest.Canonical)),
		s.path(".imgfs", "index", string(digest.Canonical)),
		s.tmpDir(),
	} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("store: %w", err)
		}
	}
	unlock, err := s.lockIndex()
	if err != nil {
		return err
	}
	defer unlock()
	if ok, err := s.checkLayout(); err != nil || ok {
		return err
	}
	if _, err := os.Stat(s.path(ocispec.ImageLayoutFile)); errors.Is(err, fs.ErrNotExist) {
		data, _ := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
		if err := s.writeFileAtomic(s.path(ocispec.ImageLayoutFile), data); err != nil {
			return err
		}
	}
	if _, err := os.Stat(s.path("index.json")); errors.Is(err, fs.ErrNotExist) {
		if err := s.writeFileAtomic(s.path("index.json"), []byte(emptyIndex)); err != nil {
			return err
		}
	}
	return nil
}
