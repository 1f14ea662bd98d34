package tests

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imgfs/imgfs/store"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// lazyFileSize and lazyFiles make each layer of the lazy mount test's image: 16 files of
// 4 MiB (one decoding span each), half random bytes and half zeros in every 4 KiB, so that
// gzip halves them: 64 MiB a layer, 32 MiB compressed. One small file sits in the middle of
// each layer. A read of a small file decodes one span (4 MiB of the 128 MiB, about 2 MiB
// of the 64 MiB fetched): under the 5% of the layers' bytes a read may fetch.
const (
	lazyFileSize = 4 << 20
	lazyFiles    = 16
)

// lazyLayer returns a layer of the lazy image: dir/ with its files, dir/small in the middle.
func lazyLayer(dir string, seed byte) []entry {
	r := rand.New(rand.NewChaCha8([32]byte{seed}))
	ents := []entry{{hdr: tar.Header{Typeflag: tar.TypeDir, Name: dir + "/", Mode: 0o755}}}
	for i := range lazyFiles {
		if i == lazyFiles/2 {
			ents = append(ents, file(dir+"/small", 0o644, "the small file of "+dir+"\n"))
		}
		b := make([]byte, lazyFileSize)
		for blk := 0; blk < len(b); blk += 4096 {
			for j := blk; j < blk+2048; j += 8 {
				v := r.Uint64()
				for k := range 8 {
					b[j+k] = byte(v >> (8 * k))
				}
			}
		}
		ents = append(ents, entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("%s/f%02d", dir, i), Mode: 0o644, Size: int64(len(b))}, body: b})
	}
	return ents
}

// TestLazyMount mounts an empty store with --registry and reads the test registry's
// two-layer image in place, pushed by imgfs push with its layer indexes: a small file
// fetches under 5% of the layers' bytes (the Range GETs of the access log), and no layer
// whole (TestRegistryLayerIndex: without shared indexes, a layer is streamed once to index
// it, which fills the cache). rootfs/ is
// the pulled image's entry by entry, export.tar byte for byte; the registry killed during
// a read fails it with EIO within --timeout, and once the registry is back the same read
// succeeds on the same mount.
func TestLazyMount(t *testing.T) {
	r := startRegistry(t)
	tmp := t.TempDir()
	ref := r.host + "/test/lazy:1"
	orig := filepath.Join(tmp, "orig")
	s, err := store.Open(orig)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := writeImage(s, ref, lazyLayer("a", 1), lazyLayer("b", 2)); err != nil {
		t.Fatal(err)
	}
	next, err := writeImage(s, r.host+"/test/lazy:2", layer0())
	if err != nil {
		t.Fatal(err)
	}
	imgfsOK(t, orig, "push", "-q", ref)
	pulled := filepath.Join(tmp, "pulled")
	imgfsOK(t, pulled, "pull", "-q", ref)
	want := resolveIn(t, pulled, ref)
	var layerBytes int64
	for _, l := range want.Manifest.Layers {
		layerBytes += l.Size
	}

	lazy := filepath.Join(tmp, "lazy")
	mnt := t.TempDir()
	out := imgfsOK(t, lazy, "mount", "--registry", r.host, "--timeout", "5s", mnt)
	if _, found := daemonPid(out); !found {
		t.Fatalf("imgfs mount printed %q: no pid", out)
	}
	t.Cleanup(func() { unmountQuietly(mnt) })

	if got := dirNames(t, mnt); len(got) != 1 || got[0] != r.host {
		t.Errorf("the mount's root lists %v, want [%s]", got, r.host)
	}
	if got := dirNames(t, filepath.Join(mnt, r.host, "test")); len(got) != 1 || got[0] != "lazy" {
		t.Errorf("%s/test lists %v, want [lazy] from the catalog", r.host, got)
	}
	if got := dirNames(t, filepath.Join(mnt, r.host, "test", "lazy")); len(got) != 1 || got[0] != "1" {
		t.Errorf("%s/test/lazy lists %v, want its tag [1]", r.host, got)
	}
	gets := len(r.blobGets(t))
	_, _, before := r.blobBytes(t)
	small, err := os.ReadFile(filepath.Join(mnt, r.host, "test/lazy/1/rootfs/b/small"))
	if err != nil || string(small) != "the small file of b\n" {
		t.Fatalf("reading a small file: %q, %v\nmount log:\n%s", small, err, mountLog(lazy))
	}
	_, _, after := r.blobBytes(t)
	fetched := after - before
	whole := wholeLayerGets(r.blobGets(t)[gets:], want.Manifest.Layers)
	t.Logf("a small file fetched %d bytes in Range GETs, of %d layer bytes (%.2f%%); whole layer GETs %v",
		fetched, layerBytes, 100*float64(fetched)/float64(layerBytes), whole)
	if fetched <= 0 || fetched*20 >= layerBytes || len(whole) != 0 {
		t.Errorf("reading one small file fetched %d bytes with Range GETs and layers whole %v, want some and under 5%% of the layers' %d, no layer whole", fetched, whole, layerBytes)
	}

	l1 := want.Manifest.Layers[1]
	var part, size int64
	fetchedAttr := strings.TrimSpace(ok(t, "", "getfattr", "--only-values", "-n", "user.imgfs.fetched", filepath.Join(mnt, r.host, "test/lazy/1/layers/1")))
	if _, err := fmt.Sscanf(fetchedAttr, "%d/%d", &part, &size); err != nil || size != l1.Size || part <= 0 || part > fetched {
		t.Errorf("user.imgfs.fetched of layers/1 is %q, want some of the %d bytes fetched, of %d", fetchedAttr, fetched, l1.Size)
	}
	if _, state := must(store.Open(lazy)).StoredIndex(want.Manifest.Layers[1]); state != store.IndexBuilt {
		t.Errorf("the index of the registry layer is %s in the lazy store, want built", state)
	}

	// By digest too, and the same tree as the pulled image's.
	mntPulled, _ := mountStore(t, pulled)
	byDigest := filepath.Join(mnt, r.host, "test", "lazy@"+want.Descriptor.Digest.String())
	for _, dir := range []string{filepath.Join(mnt, r.host, "test/lazy/1"), byDigest} {
		diffs, err := compareTrees(filepath.Join(dir, "rootfs"), filepath.Join(mntPulled, r.host, "test/lazy/1/rootfs"),
			cmpOpts{dirMtime: true, rootMeta: true})
		if err != nil {
			t.Fatal(err)
		}
		if len(diffs) > 0 {
			t.Errorf("%s/rootfs differs from the pulled image's:\n%s", dir, strings.Join(diffs, "\n"))
		}
	}
	for _, name := range []string{"manifest.json", "config.json", "export.tar"} {
		res := runIn(t, "", "cmp", filepath.Join(mnt, r.host, "test/lazy/1", name), filepath.Join(mntPulled, r.host, "test/lazy/1", name))
		if res.code != 0 {
			t.Errorf("%s differs from the pulled image's: %s%s", name, res.stdout, res.stderr)
		}
	}

	// The registry stalled (SIGSTOP): what the mount has resolved and fetched still
	// serves, well within --timeout, once the names' timeout has passed and the kernel
	// has dropped its pages.
	r.cmd.Process.Signal(syscall.SIGSTOP)
	time.Sleep(1500 * time.Millisecond)
	dropCaches(t)
	start := time.Now()
	small, err = os.ReadFile(filepath.Join(mnt, r.host, "test/lazy/1/rootfs/b/small"))
	took := time.Since(start)
	r.cmd.Process.Signal(syscall.SIGCONT)
	if err != nil || string(small) != "the small file of b\n" {
		t.Fatalf("reading a fetched file with the registry stalled: %q, %v", small, err)
	}
	if took > 2*time.Second {
		t.Errorf("reading a fetched file with the registry stalled took %s: it waited on the registry", took)
	}
	t.Logf("a fetched file read in %s with the registry stalled", took.Round(time.Millisecond))

	// A second store's mount, which has fetched nothing: its indexes built (a lookup of
	// a's directory), the registry killed while a file of layer a is read.
	cold := filepath.Join(tmp, "cold")
	mnt2 := t.TempDir()
	imgfsOK(t, cold, "mount", "--registry", r.host, "--timeout", "5s", mnt2)
	t.Cleanup(func() { unmountQuietly(mnt2) })
	big := filepath.Join(mnt2, r.host, "test/lazy/1/rootfs/a/f03")
	if _, err := os.Stat(big); err != nil {
		t.Fatal(err)
	}
	// The read starts, fetching, then the registry dies: the read goes on to fail.
	tarPath := filepath.Join(mnt2, r.host, "test/lazy/1/layers/0.tar")
	f, err := os.Open(tarPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	if _, err := io.ReadFull(f, buf); err != nil {
		t.Fatalf("the first MiB of layers/0.tar: %v\nmount log:\n%s", err, mountLog(cold))
	}
	r.cmd.Process.Signal(syscall.SIGKILL)
	<-r.exited
	killed := time.Now()
	failed := make(chan error, 1)
	go func() {
		for {
			if _, err := f.Read(buf); err != nil {
				failed <- err
				return
			}
		}
	}()
	select {
	case err := <-failed:
		took := time.Since(killed)
		if !errors.Is(err, syscall.EIO) {
			t.Fatalf("reading layers/0.tar on with the registry killed: %v (%s after the kill), want EIO", err, took)
		}
		t.Logf("the read failed %s after the kill: %v", took.Round(time.Millisecond), err)
	case <-time.After(15 * time.Second):
		t.Fatal("the read of layers/0.tar did not fail within 15s of the registry's kill (--timeout 5s)")
	}
	if !r.run(t, needRegistry(t)) {
		t.Fatalf("the registry did not come back on %s: %s", r.host, r.logTail())
	}
	res := runIn(t, "", "cmp", filepath.Join(mnt2, r.host, "test/lazy/1/layers/0.tar"), filepath.Join(mntPulled, r.host, "test/lazy/1/layers/0.tar"))
	if res.code != 0 {
		t.Errorf("after the registry came back, layers/0.tar differs from the pulled one: %s%s\nmount log:\n%s", res.stdout, res.stderr, mountLog(cold))
	}
	// The tag moved to another image: the mount follows within the names' timeout.
	r.skopeoPush(t, orig, "2", "test/lazy:1")
	manifest := filepath.Join(mnt, r.host, "test/lazy/1/manifest.json")
	if !waitFor(5*time.Second, func() bool {
		b, err := os.ReadFile(manifest)
		return err == nil && digest.FromBytes(b) == next.manifest.Digest
	}) {
		b, err := os.ReadFile(manifest)
		t.Errorf("5s after test/lazy:1 moved to %s, its manifest.json hashes to %s (%v)", next.manifest.Digest, digest.FromBytes(b), err)
	}

	logText := mountLog(cold)
	if n := strings.Count(logText, "later failures of this layer are not logged"); n != 1 {
		t.Errorf("the cold mount's log has %d failed-layer lines, want 1:\n%s", n, logText)
	}
}

// mountLog returns the mount log of the store at dir.
func mountLog(dir string) string {
	b, _ := os.ReadFile(filepath.Join(dir, ".imgfs", "mount.log"))
	return string(b)
}

// dropCaches drops the kernel's page, dentry and inode caches (as root), so that reads
// and lookups reach the mount's daemon again.
func dropCaches(t *testing.T) {
	t.Helper()
	exec.Command("sync").Run()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o200); err != nil {
		t.Fatalf("dropping the kernel's caches (the test runs as root): %v", err)
	}
}

// TestLazyMountTLSAuthZstd mounts lazily an image of zstd layers from a registry that
// speaks HTTPS only (its CA given with --cert-dir) and asks for credentials (docker's
// config.json): rootfs/ and export.tar are the pulled image's. Without credentials, the
// image's lookup fails with EIO and the mount log says why.
func TestLazyMountTLSAuthZstd(t *testing.T) {
	r := startRegistryWith(t, registryOpts{tls: true, user: "imgfs", password: "s3cret"})
	tmp := t.TempDir()
	ref := r.host + "/test/zstd:1"
	orig := filepath.Join(tmp, "orig")
	s, err := store.Open(orig)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := writeImageAs(s, ref, ocispec.MediaTypeImageLayerZstd, layer0(), layer1()); err != nil {
		t.Fatal(err)
	}
	good := []string{"DOCKER_CONFIG=" + dockerConfig(t, r.host, "imgfs", "s3cret")}
	certDir := "--cert-dir=" + r.certDir
	run := func(env []string, store string, args ...string) {
		t.Helper()
		res := runWith(t, "", env, imgfsBin, append([]string{"--store", store}, args...)...)
		if res.code != 0 {
			t.Fatalf("imgfs %s: exit %d\n%s%s", strings.Join(args, " "), res.code, res.stdout, res.stderr)
		}
	}
	run(good, orig, "push", "-q", certDir, ref)
	pulled := filepath.Join(tmp, "pulled")
	run(good, pulled, "pull", "-q", certDir, ref)
	mntPulled, _ := mountStore(t, pulled)

	lazy := filepath.Join(tmp, "lazy")
	mnt := t.TempDir()
	run(good, lazy, "mount", "--registry", r.host, certDir, mnt)
	t.Cleanup(func() { unmountQuietly(mnt) })
	img := filepath.Join(mnt, r.host, "test/zstd/1")
	diffs, err := compareTrees(filepath.Join(img, "rootfs"), filepath.Join(mntPulled, r.host, "test/zstd/1/rootfs"),
		cmpOpts{dirMtime: true, rootMeta: true})
	if err != nil {
		t.Fatalf("%v\nmount log:\n%s", err, mountLog(lazy))
	}
	if len(diffs) > 0 {
		t.Errorf("rootfs/ of the zstd image differs from the pulled one's:\n%s", strings.Join(diffs, "\n"))
	}
	if res := runIn(t, "", "cmp", filepath.Join(img, "export.tar"), filepath.Join(mntPulled, r.host, "test/zstd/1/export.tar")); res.code != 0 {
		t.Errorf("export.tar differs from the pulled one's: %s%s", res.stdout, res.stderr)
	}
	if ranged, _, _ := r.blobBytes(t); ranged == 0 {
		t.Error("no Range GET in the registry's access log: the zstd layers were not read lazily")
	}

	anon := filepath.Join(tmp, "anon")
	mnt2 := t.TempDir()
	run([]string{"DOCKER_CONFIG=" + dockerConfig(t, r.host, "", "")}, anon, "mount", "--registry", r.host, certDir, mnt2)
	t.Cleanup(func() { unmountQuietly(mnt2) })
	_, err = os.Stat(filepath.Join(mnt2, r.host, "test/zstd/1"))
	if !errors.Is(err, syscall.EIO) {
		t.Errorf("looking up the image without credentials: %v, want EIO", err)
	}
	if log := mountLog(anon); !strings.Contains(log, "refused access") {
		t.Errorf("the mount log does not say the registry refused access:\n%s", log)
	}
}

// TestLazyMountSkopeoZstd: an image skopeo pushed with its layers recompressed as zstd
// (--dest-compress-format zstd), no layer indexes in the registry, mounts lazily: its
// layers are zstd in the registry, rootfs/ is the original's entry by entry, and the
// mount's export.tar loads in docker (docker save without docker pull) with the image's ID.
func TestLazyMountSkopeoZstd(t *testing.T) {
	r := startRegistry(t)
	tmp := t.TempDir()
	orig := filepath.Join(tmp, "orig")
	_, img := origImage(t, orig, "test/z:1")
	skopeo := needProgram(t, "skopeo", "skopeo")
	ok(t, "", skopeo, "copy", "--quiet", "--dest-tls-verify=false", "--dest-compress-format", "zstd",
		"oci:"+orig+":1", "docker://"+r.host+"/test/z:1")

	lazy := filepath.Join(tmp, "lazy")
	mnt := t.TempDir()
	imgfsOK(t, lazy, "mount", "--registry", r.host, mnt)
	t.Cleanup(func() { unmountQuietly(mnt) })
	dir := filepath.Join(mnt, r.host, "test/z/1")
	var m ocispec.Manifest
	readJSONFile(t, filepath.Join(dir, "manifest.json"), &m)
	for _, l := range m.Layers {
		if !strings.Contains(l.MediaType, "zstd") {
			t.Fatalf("skopeo pushed a layer of media type %s, want zstd", l.MediaType)
		}
	}
	mntOrig, _ := mountStore(t, orig)
	diffs, err := compareTrees(filepath.Join(dir, "rootfs"), filepath.Join(mntOrig, "test/z/1/rootfs"), cmpOpts{dirMtime: true, rootMeta: true})
	if err != nil {
		t.Fatalf("%v\nmount log:\n%s", err, mountLog(lazy))
	}
	reportDiffs(t, "rootfs/ of the zstd image from the registry against the original's", diffs)

	archive := filepath.Join(tmp, "export.tar")
	ok(t, "", "cp", filepath.Join(dir, "export.tar"), archive)
	if id, _ := dockerLoad(t, archive); id != img.id.String() {
		t.Errorf("docker load of the lazy mount's export.tar: image ID %s, want %s", id, img.id)
	}
}
