package tests

import (
	"archive/tar"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/imgfs/imgfs/layerindex"
	"github.com/imgfs/imgfs/store"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// wholeLayerGets counts the GETs answered whole (200) of each of layers in access log
// lines: a lazy mount's index build streams a layer so, its reads ask for Ranges.
func wholeLayerGets(lines []string, layers []ocispec.Descriptor) map[digest.Digest]int {
	n := map[digest.Digest]int{}
	for _, l := range lines {
		m := rangeLine.FindStringSubmatch(l)
		if m == nil || m[1] != "200" {
			continue
		}
		for _, d := range layers {
			if strings.Contains(l, "/blobs/"+d.Digest.String()+" ") {
				n[d.Digest]++
			}
		}
	}
	return n
}

// TestLazySharedIndexes is index sharing, simulated with three stores and three mounts on
// this machine and one registry: the lazy image (two layers of 32 MiB) pushed by imgfs
// push, which pushes its layer indexes, and by skopeo, whose copy gets them from imgfs
// index push. Each of three empty stores mounts the registry and reads one small file of
// each copy: no mount streams a layer to index it (no whole GET of a layer in the access
// log, only Range GETs), each fetches under 5% of the layer bytes, the mount log says the
// indexes came from the registry and refuses none, and the index each store keeps is the
// one the pushing store built, byte for byte.
func TestLazySharedIndexes(t *testing.T) {
	r := startRegistry(t)
	tmp := t.TempDir()
	orig := filepath.Join(tmp, "orig")
	s := must(store.Open(orig))
	img, err := writeImage(s, r.host+"/test/shared:1", lazyLayer("a", 1), lazyLayer("b", 2))
	if err != nil {
		t.Fatal(err)
	}
	var layerBytes int64
	want := map[digest.Digest][]byte{} // the pushing store's index files
	for _, l := range img.layers {
		layerBytes += l.Size
		if _, err := s.LayerIndex(l); err != nil {
			t.Fatal(err)
		}
		want[l.Digest] = must(os.ReadFile(filepath.Join(orig, ".imgfs/index/sha256", l.Digest.Encoded())))
	}
	imgfsOK(t, orig, "push", "-q", r.host+"/test/shared:1")
	r.skopeoPush(t, orig, "1", "test/sk:1")
	imgfsOK(t, filepath.Join(tmp, "indexer"), "index", "push", r.host+"/test/sk:1")

	for _, repo := range []string{"test/shared", "test/sk"} {
		for i := range 3 {
			lazy := filepath.Join(tmp, fmt.Sprintf("%s-%d", strings.ReplaceAll(repo, "/", "-"), i))
			mnt := t.TempDir()
			_, _, before := r.blobBytes(t)
			logBefore := len(r.blobGets(t))
			imgfsOK(t, lazy, "mount", "--registry", r.host, mnt)
			t.Cleanup(func() { unmountQuietly(mnt) })
			p := filepath.Join(mnt, r.host, repo, "1/rootfs/b/small")
			small, err := os.ReadFile(p)
			if err != nil || string(small) != "the small file of b\n" {
				t.Fatalf("%s: reading a small file: %q, %v\nmount log:\n%s", p, small, err, mountLog(lazy))
			}
			_, _, after := r.blobBytes(t)
			fetched := after - before
			t.Logf("%s, store %d: a small file fetched %d bytes in Range GETs, of %d layer bytes (%.2f%%)",
				repo, i, fetched, layerBytes, 100*float64(fetched)/float64(layerBytes))
			if fetched <= 0 || fetched*20 >= layerBytes {
				t.Errorf("%s, store %d: one small file fetched %d bytes with Range GETs, want some and under 5%% of the layers' %d",
					repo, i, fetched, layerBytes)
			}
			for d, n := range wholeLayerGets(r.blobGets(t)[logBefore:], img.layers) {
				t.Errorf("%s, store %d: layer %s fetched whole %d times: the mount built its index", repo, i, d, n)
			}
			log := mountLog(lazy)
			if !strings.Contains(log, "layer indexes from the registry") || strings.Contains(log, "not used") {
				t.Errorf("%s, store %d: the mount log does not say the indexes came from the registry, or refuses some:\n%s", repo, i, log)
			}
			for _, l := range img.layers {
				got, err := os.ReadFile(filepath.Join(lazy, ".imgfs/index/sha256", l.Digest.Encoded()))
				if err != nil || !bytes.Equal(got, want[l.Digest]) {
					t.Errorf("%s, store %d: layer %s: the stored index is not the pushing store's (%v)", repo, i, l.Digest, err)
				}
			}
		}
	}
}

// TestLazyForgedIndexes: indexes forged in the registry, each given to a lazy mount of an
// empty store as the artifact of the image's indexes (put by hand, as any tool with push
// rights may), with the image skopeo pushed.
//   - Another layer's index, given as layer 1's: refused (logged once, with the reason),
//     layer 1 streamed once to be indexed, layer 0's honest index taken; the image reads
//     as the original does.
//   - Entry offsets shifted to another file's data (digest, size and diffID right, so
//     taken): those files give EIO, never the other file's bytes, logged once; the
//     others read right.
//   - A span's CRCs changed (taken too): every read that touches the span gives EIO, never
//     wrong bytes; the files outside it read right.
func TestLazyForgedIndexes(t *testing.T) {
	r := startRegistry(t)
	tmp := t.TempDir()
	orig := filepath.Join(tmp, "orig")
	s, img := origImage(t, orig, r.host+"/test/app:1")
	indexes := storeIndexes(t, s, img)
	l0, l1 := img.layers[0].Digest, img.layers[1].Digest
	bin := func(ix *layerindex.Index) []byte {
		b, err := ix.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	mntOrig, _ := mountStore(t, orig)
	origDir := filepath.Join(mntOrig, r.host, "test/app/1")

	// mount pushes the image to repo with the artifact of indexes, mounts the registry on
	// an empty store and returns the image's directory, the store, and where the
	// registry's blob GETs were before the mount.
	mount := func(t *testing.T, repo string, indexes ...sharedIndex) (dir, lazy string, gets int) {
		t.Helper()
		r.skopeoPush(t, orig, "1", repo+":1")
		r.putIndexArtifact(t, repo, img.manifest, indexes...)
		lazy = filepath.Join(tmp, strings.ReplaceAll(repo, "/", "-"))
		mnt := t.TempDir()
		r.blobBytes(t) // the access log settled
		gets = len(r.blobGets(t))
		imgfsOK(t, lazy, "mount", "--registry", r.host, mnt)
		t.Cleanup(func() { unmountQuietly(mnt) })
		return filepath.Join(mnt, r.host, repo, "1"), lazy, gets
	}
	// mustEIO checks that cat of each path fails with EIO and prints nothing.
	mustEIO := func(t *testing.T, dir string, paths ...string) {
		t.Helper()
		for _, p := range paths {
			res := runIn(t, "", "cat", filepath.Join(dir, p))
			if res.code == 0 || !strings.Contains(res.stderr, "Input/output error") || res.stdout != "" {
				t.Errorf("cat %s: exit %d, stdout %q, stderr %q; want Input/output error and nothing printed", p, res.code, res.stdout, res.stderr)
			}
		}
	}

	t.Run("another layer's index", func(t *testing.T) {
		dir, lazy, gets := mount(t, "test/other", sharedIndex{l0, bin(indexes[l0])}, sharedIndex{l1, bin(indexes[l0])})
		for _, sub := range []string{"rootfs", "layers/0", "layers/1"} {
			diffs, err := compareTrees(filepath.Join(dir, sub), filepath.Join(origDir, sub), cmpOpts{dirMtime: true, rootMeta: true})
			if err != nil {
				t.Fatalf("%v\nmount log:\n%s", err, mountLog(lazy))
			}
			if len(diffs) > 0 {
				t.Errorf("%s differs from the original's:\n%s", sub, strings.Join(diffs, "\n"))
			}
		}
		r.blobBytes(t)
		whole := wholeLayerGets(r.blobGets(t)[gets:], img.layers)
		if whole[l0] != 0 || whole[l1] != 1 {
			t.Errorf("whole GETs: layer 0 %d, layer 1 %d; want 0 (its index taken) and 1 (indexed from its blob)", whole[l0], whole[l1])
		}
		log := mountLog(lazy)
		if n := strings.Count(log, "not used"); n != 1 || !strings.Contains(log, "layer "+l1.String()+": index from") ||
			!strings.Contains(log, "it indexes blob "+l0.String()) {
			t.Errorf("the mount log has %d lines of indexes not used, want 1 saying layer 1's index is layer 0's:\n%s", n, log)
		}
	})

	t.Run("entry offsets shifted to another file", func(t *testing.T) {
		forged := pointAt(indexes[l0], map[string]string{"old/a": "old/b", "bin/tool": "bin/cap"})
		dir, lazy, gets := mount(t, "test/offsets", sharedIndex{l0, bin(forged)}, sharedIndex{l1, bin(indexes[l1])})
		mustEIO(t, dir, "layers/0/old/a", "rootfs/bin/tool", "layers/0/bin/tool", "layers/0/old/a")
		for p, want := range map[string]string{"layers/0/old/b": "b\n", "rootfs/bin/cap": "#!/bin/sh\necho cap\n", "rootfs/opq/y": "y\n"} {
			if got := ok(t, "", "cat", filepath.Join(dir, p)); got != want {
				t.Errorf("cat %s = %q, want %q", p, got, want)
			}
		}
		r.blobBytes(t)
		if whole := wholeLayerGets(r.blobGets(t)[gets:], img.layers); len(whole) != 0 {
			t.Errorf("layers fetched whole: %v; want none (the indexes taken)", whole)
		}
		log := mountLog(lazy)
		if n := strings.Count(log, "does not match the index"); n != 1 || strings.Contains(log, "not used") {
			t.Errorf("the mount log says %d times that a header does not match the index, want once, and no index refused:\n%s", n, log)
		}
	})

	t.Run("span CRCs changed", func(t *testing.T) {
		ix := indexes[l0]
		forged := *ix
		forged.Checkpoints = slices.Clone(ix.Checkpoints)
		// The span of etc/hello.txt, after the 5 MiB file: not the first.
		var at int64
		for _, e := range ix.TOC.Entries() {
			if e.Name == "etc/hello.txt" {
				at = e.Offset
			}
		}
		k := len(ix.Checkpoints) - 1
		for k > 0 && ix.Checkpoints[k].Out > at {
			k--
		}
		if k == 0 {
			t.Fatalf("etc/hello.txt at %d is in the first span of layer 0 (checkpoints %d): the test needs a span before it", at, len(ix.Checkpoints))
		}
		start, end := ix.Checkpoints[k].Out, ix.Size
		if k+1 < len(ix.Checkpoints) {
			end = ix.Checkpoints[k+1].Out
		}
		cp := &forged.Checkpoints[k]
		cp.CRCs = slices.Clone(cp.CRCs)
		for i := range cp.CRCs {
			cp.CRCs[i] ^= 1
		}
		dir, lazy, _ := mount(t, "test/crcs", sharedIndex{l0, bin(&forged)}, sharedIndex{l1, bin(indexes[l1])})
		var bad, good int
		for _, e := range ix.TOC.Entries() {
			if e.Type != tar.TypeReg || e.Size == 0 {
				continue
			}
			p := "layers/0/" + e.Name
			want := must(os.ReadFile(filepath.Join(origDir, p)))
			// The read checks the tar header before the data too. A file that starts
			// before the span gives its bytes up to the span, then EIO.
			if e.Offset-512 < end && e.Offset+e.Size > start {
				res := runIn(t, "", "cat", filepath.Join(dir, p))
				if res.code == 0 || !strings.Contains(res.stderr, "Input/output error") ||
					!bytes.HasPrefix(want, []byte(res.stdout)) || int64(len(res.stdout)) > max(0, start-e.Offset) {
					t.Errorf("cat %s: exit %d, %d bytes (a prefix of the file's: %v), stderr %q; want EIO by byte %d of it, no wrong byte",
						p, res.code, len(res.stdout), bytes.HasPrefix(want, []byte(res.stdout)), res.stderr, max(0, start-e.Offset))
				}
				bad++
				continue
			}
			if got, err := os.ReadFile(filepath.Join(dir, p)); err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s, outside the forged span: %d bytes, %v; want its %d bytes", p, len(got), err, len(want))
			}
			good++
		}
		if bad == 0 || good == 0 {
			t.Fatalf("%d files in the forged span, %d outside: want some of each", bad, good)
		}
		// layers/0.tar read whole: what it gives before EIO is the layer's tar.
		res := runIn(t, "", "cat", filepath.Join(dir, "layers/0.tar"))
		want := must(os.ReadFile(filepath.Join(origDir, "layers/0.tar")))
		if res.code == 0 || !strings.Contains(res.stderr, "Input/output error") || !bytes.HasPrefix(want, []byte(res.stdout)) ||
			int64(len(res.stdout)) > start {
			t.Errorf("cat layers/0.tar: exit %d, %d bytes (a prefix of the layer's: %v), stderr %q; want EIO by byte %d, no wrong byte",
				res.code, len(res.stdout), bytes.HasPrefix(want, []byte(res.stdout)), res.stderr, start)
		}
		t.Logf("%d files of layer 0 touch the forged span, %d do not", bad, good)
		log := mountLog(lazy)
		if n := strings.Count(log, "read failed"); n != 1 || !strings.Contains(log, "fail their checksum") || strings.Contains(log, "not used") {
			t.Errorf("the mount log has %d failed reads, want 1 saying the bytes fail their checksum, and no index refused:\n%s", n, log)
		}
	})
}
