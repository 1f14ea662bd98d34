package registry

import (
	"bytes"
	"fmt"
	"slices"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/imgfs/imgfs/store"
	"github.com/opencontainers/go-digest"
)

// The locations file keeps the latest maxLocations repositories of each blob, merges
// with what another command wrote meanwhile, and forgets blobs the store no longer has.
func TestBlobLocations(t *testing.T) {
	s, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("a blob")
	kept, _, err := s.WriteBlob(bytes.NewReader(data), digest.FromBytes(data))
	if err != nil {
		t.Fatal(err)
	}
	gone := digest.FromString("not in the store")
	repo := func(r string) name.Repository { return mustRepo(t, r) }

	l := loadLocations(s)
	for i := range maxLocations + 2 {
		l.add(kept, repo(fmt.Sprintf("reg:5000/r%d", i)))
	}
	l.add(gone, repo("reg:5000/r0"))
	other := loadLocations(s) // another command, at the same time
	other.add(kept, repo("other:5000/x"))
	l.save()
	other.save()

	m := readLocations(s)
	want := []string{"other:5000/x", "reg:5000/r5", "reg:5000/r4", "reg:5000/r3"}
	if got := m[kept]; !slices.Equal(got, want) {
		t.Errorf("locations of %s: %q, want %q", kept, got, want)
	}
	if got, ok := m[gone]; ok {
		t.Errorf("a blob not in the store is remembered: %q", got)
	}

	l = loadLocations(s)
	if got, want := l.mountFrom(kept, repo("reg:5000/r4")), []string{"r5", "r3"}; !slices.Equal(got, want) {
		t.Errorf("mountFrom: %q, want %q (same registry, other repositories, latest first)", got, want)
	}
	if got := l.mountFrom(kept, repo("third:5000/r4")); len(got) != 0 {
		t.Errorf("mountFrom another registry: %q, want none", got)
	}
}
