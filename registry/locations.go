package registry

import (
	"encoding/json"
	"slices"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/imgfs/imgfs/store"
	"github.com/opencontainers/go-digest"
)

// locationsFile is the file in the store's StateDir that remembers, for the blobs in the
// store, the registry repositories they are known to be in ("HOST/REPO", most recent
// first): push mounts a blob from one of them instead of uploading it, as docker does
// with its v2 metadata.
const locationsFile = "blob-locations.json"

// maxLocations bounds the repositories remembered per blob: a few are enough to find
// one on the registry pushed to.
const maxLocations = 4

// maxLocationsFile bounds the file read: larger, it is taken for damaged and started
// anew.
const maxLocationsFile = 16 << 20

// blobLocations is the locations file as read at the start of a command, and what the
// command learnt since. Safe for concurrent use.
type blobLocations struct {
	s     *store.Store
	mu    sync.Mutex
	known map[digest.Digest][]string
	added map[digest.Digest][]string // this command's, in the order learnt
}

// loadLocations reads the locations file of s. A missing, unreadable or damaged file is
// an empty one: it only spares uploads.
func loadLocations(s *store.Store) *blobLocations {
	return &blobLocations{s: s, known: readLocations(s), added: map[digest.Digest][]string{}}
}

// noLocations is a blobLocations for a command without a store: it knows nothing and
// keeps nothing.
func noLocations() *blobLocations {
	return &blobLocations{known: map[digest.Digest][]string{}, added: map[digest.Digest][]string{}}
}

func readLocations(s *store.Store) map[digest.Digest][]string {
	m := map[digest.Digest][]string{}
	data, err := s.ReadStateFile(locationsFile, maxLocationsFile)
	if err != nil {
		return m
	}
	if json.Unmarshal(data, &m) != nil {
		return map[digest.Digest][]string{}
	}
	return m
}

// repoKey is how a repository is written in the file: HOST/REPO.
func repoKey(repo name.Repository) string {
	return repo.RegistryStr() + "/" + repo.RepositoryStr()
}

// add records that blob d is in repo.
func (l *blobLocations) add(d digest.Digest, repo name.Repository) {
	k := repoKey(repo)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.known[d] = prepend(l.known[d], k)
	l.added[d] = append(l.added[d], k)
}

// prepend puts k first in list, once, and keeps maxLocations.
func prepend(list []string, k string) []string {
	out := append([]string{k}, slices.DeleteFunc(slices.Clone(list), func(s string) bool { return s == k })...)
	if len(out) > maxLocations {
		out = out[:maxLocations]
	}
	return out
}

// mountFrom returns the repositories on repo's registry, other than repo, that blob d is
// known to be in, most recent first (their paths, as a mount's from= names them).
func (l *blobLocations) mountFrom(d digest.Digest, repo name.Repository) []string {
	prefix := repo.RegistryStr() + "/"
	l.mu.Lock()
	defer l.mu.Unlock()
	var from []string
	for _, k := range l.known[d] {
		if p, ok := strings.CutPrefix(k, prefix); ok && p != repo.RepositoryStr() && p != "" {
			from = append(from, p)
		}
	}
	return from
}

// mountSource is the repository of repo's registry to mount blob b from: the latest one
// it was seen in, else the latest one the blob it is likely beside was seen in; "" for
// none.
func (l *blobLocations) mountSource(b blobToPush, repo name.Repository) string {
	if f := l.mountFrom(b.desc.Digest, repo); len(f) > 0 {
		return f[0]
	}
	if b.near != "" {
		if f := l.mountFrom(b.near, repo); len(f) > 0 {
			return f[0]
		}
	}
	return ""
}

// save writes what this command learnt into the file, merged with the file as it is now
// (another command may have written it meanwhile), keeping only blobs still in the store
// so that the file stays as small as the store. Errors are dropped: the file is a hint,
// and a read-only store just goes without it.
func (l *blobLocations) save() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.added) == 0 || l.s == nil {
		return
	}
	m := readLocations(l.s)
	for d, ks := range l.added {
		for _, k := range ks {
			m[d] = prepend(m[d], k)
		}
	}
	for d := range m {
		if !l.s.HasBlob(d) {
			delete(m, d)
		}
	}
	data, err := json.Marshal(m)
	if err != nil {
		return
	}
	if l.s.WriteStateFile(locationsFile, data) == nil {
		l.added = map[digest.Digest][]string{}
	}
}
