package fs

import (
	"hash/fnv"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/distribution/reference"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/opencontainers/go-digest"

	"github.com/imgfs/imgfs/store"
)

// inoKey is FNV-1a over the parts' bytes: a part's type decides its bytes, and a string
// ends with a zero byte, so that different parts never hash alike by running together.
func TestInoKey(t *testing.T) {
	h := fnv.New64a()
	h.Write([]byte("name\x00busybox\x00"))
	h.Write([]byte{7, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 3})
	if got, want := newIno().str("name").str("busybox").u64(7).u32(9).bytes(3).sum(), h.Sum64(); got != want {
		t.Errorf("inoKey = %x, FNV-1a of the same bytes %x", got, want)
	}
	if newIno().str("ab").str("c").sum() == newIno().str("a").str("bc").sum() {
		t.Error(`("ab", "c") and ("a", "bc") hash alike`)
	}
	for _, k := range []inoKey{0, 1, inoKey(^uint64(0))} {
		if n := k.sum(); n <= 1 || n == ^uint64(0) {
			t.Errorf("sum of %x is %x, a reserved inode number", uint64(k), n)
		}
	}
	// A repository's export.tar is another file when a newer image comes.
	t0 := time.Unix(1700000000, 0)
	if exportIno("busybox", t0) == exportIno("busybox", t0.Add(time.Nanosecond)) {
		t.Error("export.tar keeps its inode number when its repository's newest image changes")
	}
	if exportIno("busybox", t0) == exportIno("alpine", t0) {
		t.Error("two repositories' export.tar share an inode number")
	}
	if treeIno(42, 0) != 42 || treeIno(42, 1) == treeIno(42, 2) || treeIno(42, 1) == treeIno(43, 1) {
		t.Error("treeIno: a tree's root is not its base, or two nodes share a number")
	}
}

func named(t *testing.T, ref string, id string) store.Image {
	t.Helper()
	n, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		t.Fatal(err)
	}
	return store.Image{Name: n, ID: digest.FromString(id)}
}

// buildNames: repositories by familiar name, one directory a component, tags as entries
// with the repository's export.tar beside them; names that meet a path of the tree are
// hidden and reported.
func TestBuildNames(t *testing.T) {
	mtime := time.Unix(1700000000, 0)
	root, hidden := buildNames([]store.Image{
		named(t, "busybox:latest", "a"),
		named(t, "busybox:1.36", "b"),
		named(t, "ghcr.io/acme/app:v2", "c"),
		named(t, "busybox:export.tar", "d"),
		named(t, "busybox/latest:x", "e"),
		{ID: digest.FromString("untagged")},
	}, mtime)
	if want := []string{"busybox", "ghcr.io"}; !slices.Equal(root.list, want) {
		t.Errorf("root lists %v, want %v", root.list, want)
	}
	bb := root.dirs["busybox"]
	if want := []string{"1.36", "export.tar", "latest"}; !slices.Equal(bb.list, want) {
		t.Errorf("busybox/ lists %v, want %v", bb.list, want)
	}
	app := root.dirs["ghcr.io"].dirs["acme"].dirs["app"]
	if app == nil || app.path != "ghcr.io/acme/app" || !slices.Equal(app.list, []string{"export.tar", "v2"}) {
		t.Errorf("ghcr.io/acme/app: %+v", app)
	}
	var got []string
	for _, h := range hidden {
		got = append(got, h.name+" at "+h.path)
	}
	if want := []string{"busybox/latest:x at busybox/latest", "busybox:export.tar at busybox/export.tar"}; !slices.Equal(got, want) {
		t.Errorf("hidden %v, want %v", got, want)
	}
	if tags := bb.tagged(); len(tags) != 3 {
		t.Errorf("busybox's export has %d tags, want 3 (export.tar too)", len(tags))
	}
}

// Made-up files and directories: read-only, dated (the epoch when no date is known).
func TestMadeUpAttrs(t *testing.T) {
	var a fuse.Attr
	fileAttr(&a, 1000, 4096, time.Time{})
	if a.Mode != syscall.S_IFREG|0o444 || a.Size != 1000 || a.Blocks != 2 || a.Nlink != 1 || a.Mtime != 0 {
		t.Errorf("fileAttr: %+v", a)
	}
	mtime := time.Unix(1700000000, 5)
	dirAttr(&a, mtime, 3)
	if a.Mode != syscall.S_IFDIR|0o555 || a.Nlink != 3 || a.Mtime != 1700000000 || a.Mtimensec != 5 {
		t.Errorf("dirAttr: %+v", a)
	}
	if _, _, errno := openMadeUp(syscall.O_RDWR); errno != syscall.EROFS {
		t.Errorf("opening a made-up file for writing: %v, want EROFS", errno)
	}
}

// hasAccess is access(2) against an entry's owner and mode, as the kernel would check it.
func TestHasAccess(t *testing.T) {
	for _, c := range []struct {
		uid, gid, fuid, fgid, mode, mask uint32
		want                             bool
	}{
		{1000, 1000, 1000, 1000, 0o600, 4, true},
		{1001, 1000, 1000, 1000, 0o640, 4, true},
		{1001, 1001, 1000, 1000, 0o640, 4, false},
		{1001, 1001, 1000, 1000, 0o604, 4, true},
		{1000, 1000, 1000, 1000, 0o400, 2, false},
		{0, 0, 1000, 1000, 0o000, 4, true},
		{0, 0, 1000, 1000, syscall.S_IFREG | 0o644, 1, false},
		{0, 0, 1000, 1000, syscall.S_IFREG | 0o744, 1, true},
		{0, 0, 1000, 1000, syscall.S_IFDIR | 0o000, 1, true},
	} {
		if got := hasAccess(c.uid, c.gid, c.fuid, c.fgid, c.mode, c.mask); got != c.want {
			t.Errorf("hasAccess(uid %d gid %d, file %d:%d %o, mask %d) = %v", c.uid, c.gid, c.fuid, c.fgid, c.mode, c.mask, got)
		}
	}
}
