package tests

import (
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/imgfs/imgfs/store"
)

// TestRegistryClients: docker and podman, the clients a user pulls with, take an image
// imgfs pushed, with the image ID imgfs has; and imgfs pulls what docker pushed (docker's
// manifest, layers docker compressed) to the same rootfs/ as the original. The registries
// are on 127.0.0.1, which dockerd treats as insecure (plain HTTP) without being told.
func TestRegistryClients(t *testing.T) {
	r := startRegistry(t)
	tmp := t.TempDir()
	ref := r.host + "/test/app:1"
	orig := filepath.Join(tmp, "orig")
	_, img := origImage(t, orig, ref)
	if res := imgfs(t, orig, "push", "-q", ref); res.code != 0 {
		t.Fatalf("imgfs push %s: exit %d\n%s%s\nregistry log:\n%s", ref, res.code, res.stdout, res.stderr, r.logTail())
	}

	d := dockerDaemon(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("dockerd log (%s), last lines:\n%s", d.log, d.logTail())
		}
	})
	// Tags are the daemon's, shared by the tests: hold them for the whole round trip.
	d.mu.Lock()
	defer d.mu.Unlock()
	dockerOK := func(args ...string) string {
		t.Helper()
		return ok(t, "", d.client, append([]string{"-H", d.host}, args...)...)
	}
	// Removes every tag of it; after the test, so under the lock again.
	t.Cleanup(func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		exec.Command(d.client, "-H", d.host, "image", "rm", "-f", img.id.String()).Run()
	})

	dockerOK("pull", "-q", ref)
	if id := strings.TrimSpace(dockerOK("image", "inspect", "--format", "{{.Id}}", ref)); id != img.id.String() {
		t.Errorf("docker pull %s: image ID %s, want imgfs's %s", ref, id, img.id)
	}

	podman, env := podmanStore(t)
	podmanOK := func(args ...string) string {
		t.Helper()
		return okEnv(t, env, podman[0], append(slices.Clone(podman[1:]), args...)...)
	}
	podmanOK("pull", "-q", "--tls-verify=false", ref)
	// podman's IDs are the config's digest in bare hex.
	if id := "sha256:" + strings.TrimSpace(podmanOK("image", "inspect", "--format", "{{.Id}}", ref)); id != img.id.String() {
		t.Errorf("podman pull %s: image ID %s, want imgfs's %s", ref, id, img.id)
	}

	// The other way: docker pushes the image to a registry of its own, where it has no layer
	// to mount from another repository, so the layers are those docker tars (tar-split
	// gives back the original tars) and gzips itself; imgfs pulls that.
	r2 := startRegistry(t)
	back := r2.host + "/test/fromdocker:1"
	dockerOK("tag", ref, back)
	dockerOK("push", back)
	pulled := filepath.Join(tmp, "pulled")
	if res := imgfs(t, pulled, "pull", "-q", back); res.code != 0 {
		t.Fatalf("imgfs pull %s: exit %d\n%s%s\nregistry log:\n%s", back, res.code, res.stdout, res.stderr, r2.logTail())
	}
	got := resolveIn(t, pulled, back)
	// docker pushes the config as it got it: the image ID stays.
	if got.ID != img.id {
		t.Errorf("imgfs pull %s: image ID %s, want %s", back, got.ID, img.id)
	}
	if got.Descriptor.MediaType != store.MediaTypeDockerManifest {
		t.Errorf("imgfs pull %s: manifest of type %s, want docker's %s", back, got.Descriptor.MediaType, store.MediaTypeDockerManifest)
	}
	for i, l := range got.Manifest.Layers {
		if i < len(img.layers) && l.Digest == img.layers[i].Digest {
			t.Errorf("docker push %s: layer %d is the original blob %s, not one docker compressed: this test no longer sees docker's layers", back, i, l.Digest)
		}
	}
	mntOrig, _ := mountStore(t, orig)
	mntPulled, _ := mountStore(t, pulled)
	diffs, err := compareTrees(filepath.Join(mntPulled, r2.host, "test", "fromdocker", "1", "rootfs"),
		filepath.Join(mntOrig, r.host, "test", "app", "1", "rootfs"), cmpOpts{dirMtime: true, rootMeta: true})
	if err != nil {
		t.Fatal(err)
	}
	reportDiffs(t, "rootfs/ of the image docker pushed vs the original", diffs)
}
