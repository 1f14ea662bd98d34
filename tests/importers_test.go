package tests

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// The importers: programs a user would load a docker save archive with, each giving back
// the image ID (the digest of the image's config) and the diffIDs it found. skopeo and
// docker check each layer against its diffID while loading; podman too.

// needProgram returns the path of prog, looked for on PATH and in /usr/sbin (dockerd is
// there, and a user's PATH may leave it out). A missing program fails the test, naming the
// Debian package it comes in, as for umoci.
func needProgram(t *testing.T, prog, pkg string) string {
	t.Helper()
	if p, err := exec.LookPath(prog); err == nil {
		return p
	}
	if p := filepath.Join("/usr/sbin", prog); isExecutable(p) {
		return p
	}
	t.Fatalf("%s not found, which this test runs: apt-get install %s (or scripts/install-deps.sh)", prog, pkg)
	return ""
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// readOCIImage reads the one image of the OCI layout at dir: its config's digest, checked
// against the config's bytes, and the config's diffIDs.
func readOCIImage(t *testing.T, dir string) (id string, diffIDs []string) {
	t.Helper()
	var ix ocispec.Index
	readJSONFile(t, filepath.Join(dir, "index.json"), &ix)
	if len(ix.Manifests) != 1 {
		t.Fatalf("%s/index.json: %d manifests, want 1", dir, len(ix.Manifests))
	}
	var m ocispec.Manifest
	readJSONFile(t, blobPath(dir, ix.Manifests[0].Digest), &m)
	data, err := os.ReadFile(blobPath(dir, m.Config.Digest))
	if err != nil {
		t.Fatal(err)
	}
	if got := digest.FromBytes(data); got != m.Config.Digest {
		t.Fatalf("%s: config %s has digest %s", dir, m.Config.Digest, got)
	}
	var cfg ocispec.Image
	if err := json.Unmarshal(data, &cfg); err != nil {
		t.Fatalf("%s: config: %v", dir, err)
	}
	for _, d := range cfg.RootFS.DiffIDs {
		diffIDs = append(diffIDs, d.String())
	}
	return m.Config.Digest.String(), diffIDs
}

func blobPath(dir string, d digest.Digest) string {
	return filepath.Join(dir, "blobs", d.Algorithm().String(), d.Encoded())
}

func readJSONFile(t *testing.T, p string, v any) {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", p, err)
	}
}

// skopeoLoad copies archive, a docker save archive holding one image, into an OCI layout
// with skopeo copy docker-archive:, which reads it by its manifest.json and checks each
// layer against its diffID. It returns the copied config's digest (the image ID) and its
// diffIDs.
func skopeoLoad(t *testing.T, archive string) (id string, diffIDs []string) {
	t.Helper()
	skopeo := needProgram(t, "skopeo", "skopeo")
	dir := filepath.Join(t.TempDir(), "oci")
	ok(t, "", skopeo, "copy", "-q", "docker-archive:"+archive, "oci:"+dir+":loaded")
	return readOCIImage(t, dir)
}

// podmanLoad loads archive with podman load into a store of its own (vfs, in a temporary
// directory, removed at the end of the test) and returns the image's ID ("sha256:" and the
// config's digest) and the diffIDs podman reports (RootFS.Layers). podman 4 tries an
// archive as an OCI archive before a docker archive, so it reads a Docker 25+ archive by
// its index.json, an older one by its manifest.json.
func podmanLoad(t *testing.T, archive string) (id string, diffIDs []string) {
	t.Helper()
	podman, env := podmanStore(t)
	podmanOK := func(args ...string) string {
		t.Helper()
		return okEnv(t, env, podman[0], append(slices.Clone(podman[1:]), args...)...)
	}
	podmanOK("load", "-q", "-i", archive)
	ids := strings.Fields(podmanOK("image", "ls", "-q", "--no-trunc"))
	if len(ids) != 1 {
		t.Fatalf("podman load -i %s: the store holds images %q, want one", archive, ids)
	}
	return inspectImage(t, "podman image inspect", podmanOK("image", "inspect", ids[0]))
}

// podmanStore makes a podman store for the test, removed at its end, and returns the
// podman command line that uses it (program and global options) and the environment to
// add. The run root is a directory of its own with a short path: podman 4 refuses one
// longer than 50 characters, which a t.TempDir of a subtest can be.
func podmanStore(t *testing.T) (cmd, env []string) {
	t.Helper()
	podman := needProgram(t, "podman", "podman")
	dir := t.TempDir()
	run, err := os.MkdirTemp("", "podman-run-")
	if err == nil && len(run) > 50 {
		os.Remove(run)
		run, err = os.MkdirTemp("/tmp", "podman-run-")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// None expected with vfs; before the directories are removed.
		unmountUnder(run)
		unmountUnder(dir)
		os.RemoveAll(run)
	})
	cmd = []string{podman,
		"--root", filepath.Join(dir, "root"), "--runroot", run,
		"--tmpdir", filepath.Join(dir, "tmp"), "--network-config-dir", filepath.Join(dir, "net"),
		"--storage-driver", "vfs", "--events-backend", "none", "--cgroup-manager", "cgroupfs",
	}
	// TMPDIR too: podman extracts an archive there to try it as an OCI archive.
	return cmd, []string{"TMPDIR=" + filepath.Join(dir, "tmp")}
}

// okEnv runs a program with env added to the environment and fails the test unless it
// exits 0; it returns stdout.
func okEnv(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), append([]string{"LC_ALL=C"}, env...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

// inspectImage reads the ID and RootFS.Layers from the output of podman or docker image
// inspect, which must be of one image (inspected under one or more names).
func inspectImage(t *testing.T, what, out string) (id string, diffIDs []string) {
	t.Helper()
	var imgs []struct {
		ID     string `json:"Id"`
		RootFS struct{ Layers []string }
	}
	if err := json.Unmarshal([]byte(out), &imgs); err != nil {
		t.Fatalf("%s: %v\n%s", what, err, out)
	}
	if len(imgs) == 0 {
		t.Fatalf("%s: no image", what)
	}
	for _, img := range imgs[1:] {
		if img.ID != imgs[0].ID {
			t.Fatalf("%s: images %s and %s, want one", what, imgs[0].ID, img.ID)
		}
	}
	id = imgs[0].ID
	if !strings.Contains(id, ":") {
		id = "sha256:" + id // podman's IDs are bare hex
	}
	return id, imgs[0].RootFS.Layers
}

// dockerLoad loads archive with docker load, into the dockerd the test binary starts at
// the first call (vfs storage in a temporary directory, its own socket and containerd),
// and returns the image's ID and the diffIDs docker reports (RootFS.Layers). docker load
// reads an archive by its manifest.json. The image is removed at the end of the test;
// dockerd's log is printed if the test fails.
func dockerLoad(t *testing.T, archive string) (id string, diffIDs []string) {
	t.Helper()
	d := dockerDaemon(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("dockerd log (%s), last lines:\n%s", d.log, d.logTail())
		}
	})
	// One load and its inspect at a time: tags are the daemon's, shared by the tests.
	d.mu.Lock()
	defer d.mu.Unlock()
	out := ok(t, "", d.client, "-H", d.host, "load", "-i", archive)
	var refs []string
	for line := range strings.SplitSeq(out, "\n") {
		for _, p := range []string{"Loaded image ID: ", "Loaded image: "} {
			if ref, found := strings.CutPrefix(line, p); found {
				refs = append(refs, strings.TrimSpace(ref))
				break
			}
		}
	}
	if len(refs) == 0 {
		t.Fatalf("docker load -i %s printed no image:\n%s", archive, out)
	}
	id, diffIDs = inspectImage(t, "docker image inspect", ok(t, "", d.client, append([]string{"-H", d.host, "image", "inspect"}, refs...)...))
	t.Cleanup(func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		exec.Command(d.client, "-H", d.host, "image", "rm", "-f", id).Run()
	})
	return id, diffIDs
}

// dockerd is the daemon the tests load images into.
type dockerd struct {
	dir, host, client, log string
	cmd                    *exec.Cmd
	exited                 chan struct{} // closed when cmd has been waited for
	startup                time.Duration // from exec to the first answer
	mu                     sync.Mutex
}

var (
	dockerOnce sync.Once
	docker     *dockerd // set once its directory is made; stopDockerd takes it down
	dockerErr  error
)

// dockerDaemon starts dockerd at the first call and returns it.
func dockerDaemon(t *testing.T) *dockerd {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("dockerLoad runs dockerd, which needs root")
	}
	dockerdBin := needProgram(t, "dockerd", "docker.io")
	needProgram(t, "containerd", "containerd") // dockerd starts one of its own
	// The client of the daemon's package if there is one (docker.io's /usr/bin/docker),
	// else any: a newer client talks to an older daemon at the daemon's API version.
	client := filepath.Join("/usr/bin", "docker")
	if !isExecutable(client) {
		client = needProgram(t, "docker", "docker.io")
	}
	dockerOnce.Do(func() { dockerErr = startDockerd(dockerdBin, client) })
	if dockerErr != nil {
		t.Fatal(dockerErr)
	}
	return docker
}

func startDockerd(bin, client string) error {
	dir, err := os.MkdirTemp("", "imgfs-dockerd-")
	if err != nil {
		return err
	}
	d := &dockerd{dir: dir, host: "unix://" + filepath.Join(dir, "docker.sock"), client: client,
		log: filepath.Join(dir, "dockerd.log"), exited: make(chan struct{})}
	docker = d
	// An empty configuration, so that /etc/docker/daemon.json stays out of it; dockerd
	// before 24 writes a key to /etc/docker/key.json unless told another place.
	cfg := map[string]string{}
	if v, _ := exec.Command(bin, "--version").Output(); dockerMajor(string(v)) < 24 {
		cfg["deprecated-key-path"] = filepath.Join(dir, "key.json")
	}
	data, _ := json.Marshal(cfg)
	if err := os.WriteFile(filepath.Join(dir, "daemon.json"), data, 0o644); err != nil {
		return err
	}
	logf, err := os.Create(d.log)
	if err != nil {
		return err
	}
	defer logf.Close()
	d.cmd = exec.Command(bin, "--config-file", filepath.Join(dir, "daemon.json"),
		"--data-root", filepath.Join(dir, "data"), "--exec-root", filepath.Join(dir, "exec"),
		"--pidfile", filepath.Join(dir, "dockerd.pid"), "-H", d.host,
		"--storage-driver", "vfs", "--iptables=false", "--ip6tables=false", "--bridge=none")
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	// If the test binary dies (a -timeout panic), dockerd shuts down with it.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	start := time.Now()
	if err := d.cmd.Start(); err != nil {
		return fmt.Errorf("starting dockerd: %v", err)
	}
	go func() { d.cmd.Wait(); close(d.exited) }()
	up := false
	waitFor(60*time.Second, func() bool {
		select {
		case <-d.exited:
			return true
		default:
		}
		up = exec.Command(client, "-H", d.host, "version", "--format", "{{.Server.Version}}").Run() == nil
		return up
	})
	d.startup = time.Since(start)
	if !up && d.cmd.ProcessState != nil {
		return fmt.Errorf("dockerd (%s) exited (%v) before it answered on %s; its log, last lines:\n%s", bin, d.cmd.ProcessState, d.host, d.logTail())
	}
	if !up {
		return fmt.Errorf("dockerd (%s) did not answer on %s within %v; its log, last lines:\n%s", bin, d.host, d.startup.Round(time.Millisecond), d.logTail())
	}
	return nil
}

// dockerMajor is the major version in dockerd --version's "Docker version 20.10.24+dfsg1,
// build 5d6db84", 0 if there is none.
func dockerMajor(version string) int {
	_, v, _ := strings.Cut(version, "version ")
	major, _, _ := strings.Cut(v, ".")
	n, _ := strconv.Atoi(major)
	return n
}

// logTail is the end of dockerd's log.
func (d *dockerd) logTail() string {
	data, _ := os.ReadFile(d.log)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	return strings.Join(lines, "\n")
}

// stopDockerd takes down the dockerd the tests started, if any (SIGTERM, SIGKILL after
// 30 s), and the containerd it started if that outlived it, then unmounts what is left
// mounted under its directory and removes it. TestMain calls it after the tests.
func stopDockerd() {
	d := docker
	if d == nil {
		return
	}
	if d.cmd != nil && d.cmd.Process != nil {
		d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.exited:
		case <-time.After(30 * time.Second):
			d.cmd.Process.Kill()
			<-d.exited
		}
	}
	// dockerd stops its containerd when it shuts down cleanly; after a SIGKILL it may not.
	if data, err := os.ReadFile(filepath.Join(d.dir, "exec", "containerd", "containerd.pid")); err == nil {
		pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err == nil && pid > 1 && alive(pid) && strings.Contains(string(cmdline), d.dir) {
			syscall.Kill(pid, syscall.SIGKILL)
			waitFor(5*time.Second, func() bool { return !alive(pid) })
		}
	}
	unmountUnder(d.dir) // dockerd bind-mounts its data root on itself
	os.RemoveAll(d.dir)
}

// unmountUnder unmounts (lazily) every mount at or below dir, deepest first.
func unmountUnder(dir string) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var mnts []string
	for line := range strings.SplitSeq(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		if p := unescapeMountinfo(f[4]); p == dir || strings.HasPrefix(p, dir+"/") {
			mnts = append(mnts, p)
		}
	}
	slices.SortFunc(mnts, func(a, b string) int { return len(b) - len(a) })
	for _, p := range mnts {
		syscall.Unmount(p, syscall.MNT_DETACH)
	}
}

// unescapeMountinfo undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountinfo(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// TestImportersHarness: a two-layer image that skopeo writes as a docker save archive
// loads in skopeo, podman and docker with the image ID and diffIDs of the OCI layout it was
// made from. It proves the importer helpers the export.tar tests use.
func TestImportersHarness(t *testing.T) {
	tmp := t.TempDir()
	layout := filepath.Join(tmp, "layout")
	base := time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)
	err := writeLayout(layout, "v1", base,
		[]lent{ldir("etc/", 0o755), lfile("etc/hostname", 0o644, "harness\n"), ldir("bin/", 0o755), lfile("bin/tool", 0o755, "#!/bin/sh\necho hi\n")},
		[]lent{lfile("etc/hostname", 0o644, "changed\n"), lsym("bin/alias", "tool"), lfile("etc/.wh.gone", 0o644, "")})
	if err != nil {
		t.Fatal(err)
	}
	wantID, wantDiffIDs := readOCIImage(t, layout)
	archive := filepath.Join(tmp, "image.tar")
	skopeo := needProgram(t, "skopeo", "skopeo")
	ok(t, "", skopeo, "copy", "-q", "oci:"+layout+":v1", "docker-archive:"+archive+":imgfs-test/harness:v1")

	for _, imp := range []struct {
		name string
		load func(*testing.T, string) (string, []string)
	}{{"skopeo", skopeoLoad}, {"podman", podmanLoad}, {"docker", dockerLoad}} {
		t.Run(imp.name, func(t *testing.T) {
			if imp.name == "docker" {
				d := dockerDaemon(t)
				t.Logf("dockerd answered %v after its start", d.startup.Round(time.Millisecond))
			}
			start := time.Now()
			id, diffIDs := imp.load(t, archive)
			t.Logf("%s load: %v", imp.name, time.Since(start).Round(time.Millisecond))
			if id != wantID {
				t.Errorf("image ID %s, want %s (the config's digest)", id, wantID)
			}
			if !slices.Equal(diffIDs, wantDiffIDs) {
				t.Errorf("diffIDs %q, want %q", diffIDs, wantDiffIDs)
			}
		})
	}

	// Each importer checks the layers against the diffIDs: an archive whose config names
	// another last layer does not load, and the error names the diffID.
	t.Run("wrong-diffID", func(t *testing.T) {
		bad := filepath.Join(tmp, "bad.tar")
		badID := withWrongDiffID(t, archive, bad)
		d := dockerDaemon(t)
		podman, _ := podmanStore(t)
		for _, c := range [][]string{
			{skopeo, "copy", "-q", "docker-archive:" + bad, "oci:" + filepath.Join(t.TempDir(), "oci") + ":x"},
			append(slices.Clone(podman), "load", "-q", "-i", bad),
			{d.client, "-H", d.host, "load", "-i", bad},
		} {
			r := runIn(t, "", c[0], c[1:]...)
			if r.code == 0 || !strings.Contains(r.stderr, badID) {
				t.Errorf("%s: exit %d, want a failure naming %s\nstdout:\n%s\nstderr:\n%s", strings.Join(c, " "), r.code, badID, r.stdout, r.stderr)
			}
		}
	})
}

// withWrongDiffID writes to dst the docker save archive src (of one image, as skopeo
// writes it) with the last diffID of its config changed, and returns that diffID: the
// archive is well formed, but its last layer is not the one the config names.
func withWrongDiffID(t *testing.T, src, dst string) string {
	t.Helper()
	type member struct {
		hdr  *tar.Header
		body []byte
	}
	var members []member
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		members = append(members, member{hdr, body})
	}
	i := slices.IndexFunc(members, func(m member) bool { return m.hdr.Name == "manifest.json" })
	if i < 0 {
		t.Fatalf("%s: no manifest.json", src)
	}
	var manifest []map[string]any
	if err := json.Unmarshal(members[i].body, &manifest); err != nil || len(manifest) != 1 {
		t.Fatalf("%s: manifest.json %s: %v", src, members[i].body, err)
	}
	cfgName, _ := manifest[0]["Config"].(string)
	j := slices.IndexFunc(members, func(m member) bool { return m.hdr.Name == cfgName })
	if j < 0 {
		t.Fatalf("%s: no config %q", src, cfgName)
	}
	var cfg map[string]any
	if err := json.Unmarshal(members[j].body, &cfg); err != nil {
		t.Fatal(err)
	}
	rootfs, _ := cfg["rootfs"].(map[string]any)
	diffIDs, _ := rootfs["diff_ids"].([]any)
	if len(diffIDs) == 0 {
		t.Fatalf("%s: config without diffIDs", src)
	}
	last, _ := diffIDs[len(diffIDs)-1].(string)
	bad := last[:len(last)-1] + map[bool]string{true: "1", false: "0"}[last[len(last)-1] == '0']
	diffIDs[len(diffIDs)-1] = bad
	body, _ := json.Marshal(cfg)
	newName := digest.FromBytes(body).Encoded() + ".json"
	members[j] = member{&tar.Header{Typeflag: tar.TypeReg, Name: newName, Mode: 0o444, Size: int64(len(body))}, body}
	manifest[0]["Config"] = newName
	members[i].body, _ = json.Marshal(manifest)
	members[i].hdr.Size = int64(len(members[i].body))

	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	tw := tar.NewWriter(out)
	for _, m := range members {
		if err := tw.WriteHeader(m.hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(m.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return bad
}
