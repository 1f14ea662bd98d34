package tests

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// dockerConfig writes a docker config directory (what DOCKER_CONFIG names) whose
// config.json holds user:password for host, or no credentials with user "".
func dockerConfig(t *testing.T, host, user, password string) string {
	t.Helper()
	auths := map[string]any{}
	if user != "" {
		auths[host] = map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(user + ":" + password))}
	}
	b, err := json.Marshal(map[string]any{"auths": auths})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestRegistryAuth: against a registry on 127.0.0.1 that speaks only HTTPS (a CA the
// test makes) and takes only the htpasswd user, imgfs push and pull with the credentials
// of a docker config.json and the CA from --cert-dir succeed (skopeo sees the pushed
// digest). Without credentials, with a wrong password, without the CA, and for a missing
// repository or tag, each fails with exit 1 and one line saying which.
func TestRegistryAuth(t *testing.T) {
	r := startRegistryWith(t, registryOpts{tls: true, user: "imgfs", password: "s3cret"})
	tmp := t.TempDir()
	ref := r.host + "/test/app:1"
	orig := filepath.Join(tmp, "orig")
	_, img := origImage(t, orig, ref)
	good := []string{"DOCKER_CONFIG=" + dockerConfig(t, r.host, "imgfs", "s3cret")}
	certDir := "--cert-dir=" + r.certDir
	run := func(env []string, store string, args ...string) result {
		t.Helper()
		return runWith(t, "", env, imgfsBin, append([]string{"--store", store}, args...)...)
	}

	res := run(good, orig, "push", certDir, ref)
	if res.code != 0 {
		t.Fatalf("imgfs push %s: exit %d\nstdout:\n%s\nstderr:\n%s\nregistry log:\n%s", ref, res.code, res.stdout, res.stderr, r.logTail())
	}
	skopeo := needProgram(t, "skopeo", "skopeo")
	out := ok(t, "", skopeo, append(append([]string{"inspect"}, r.skopeoFlags("")...), "docker://"+ref)...)
	var info struct{ Digest string }
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("skopeo inspect: %v\n%s", err, out)
	}
	if info.Digest != img.manifest.Digest.String() {
		t.Errorf("skopeo inspect: digest %s, want the pushed %s", info.Digest, img.manifest.Digest)
	}
	pulled := filepath.Join(tmp, "pulled")
	if res := run(good, pulled, "pull", certDir, ref); res.code != 0 {
		t.Fatalf("imgfs pull %s: exit %d\n%s%s", ref, res.code, res.stdout, res.stderr)
	}
	if got := resolveIn(t, pulled, ref); got.Target.Digest != img.manifest.Digest || got.ID != img.id {
		t.Errorf("pulled manifest %s, ID %s; want %s, %s", got.Target.Digest, got.ID, img.manifest.Digest, img.id)
	}

	// oneLine checks that a failed run exited 1 with one line of error on stderr, with
	// every one of want in it; progress lines (the push's repository, its layers' words, as
	// docker prints them before its error) aside.
	progress := regexp.MustCompile(`^(The push refers to repository \[.*\]|[0-9a-f]{12}: (Preparing|Waiting|Pushing|Pushed|Layer already exists|Mounted from .*))$`)
	oneLine := func(what string, res result, want ...string) {
		t.Helper()
		var lines []string
		for _, l := range strings.Split(strings.TrimSpace(res.stderr), "\n") {
			if !progress.MatchString(l) {
				lines = append(lines, l)
			}
		}
		if len(lines) == 0 {
			lines = []string{""}
		}
		good := res.code == 1 && len(lines) == 1
		for _, w := range want {
			good = good && strings.Contains(lines[0], w)
		}
		if !good {
			t.Errorf("%s: exit %d, stderr:\n%s\nwant exit 1 and one line with %q", what, res.code, res.stderr, want)
		}
	}
	// Push names the first blob it asks about, pull the tag.
	refused := []string{"registry " + r.host + " refused access to repository test/app (", "): wrong or missing credentials"}
	for _, c := range []struct {
		what string
		env  []string
	}{
		{"no credentials", []string{"DOCKER_CONFIG=" + dockerConfig(t, r.host, "", "")}},
		{"a wrong password", []string{"DOCKER_CONFIG=" + dockerConfig(t, r.host, "imgfs", "wrong")}},
	} {
		oneLine("push with "+c.what, run(c.env, orig, "push", certDir, ref), refused...)
		oneLine("pull with "+c.what, run(c.env, filepath.Join(tmp, "refused"), "pull", certDir, ref), refused...)
	}
	untrusted := []string{"registry " + r.host + ": TLS certificate not trusted", "--cert-dir", "/etc/docker/certs.d/" + r.host + "/"}
	oneLine("push without the CA", run(good, orig, "push", ref), untrusted...)
	oneLine("pull without the CA", run(good, filepath.Join(tmp, "untrusted"), "pull", ref), untrusted...)

	oneLine("pull of a missing tag", run(good, pulled, "pull", certDir, r.host+"/test/app:2"),
		"tag 2 not found in repository test/app on registry "+r.host)
	oneLine("pull of a missing repository", run(good, pulled, "pull", certDir, r.host+"/test/nothing:1"),
		"repository test/nothing not found on registry "+r.host)
}
