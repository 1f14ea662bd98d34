package tests

import (
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// inTerminal runs imgfs --store store args... on a pseudo-terminal (util-linux's script),
// 120 columns by 40 rows, TERM=xterm, and returns what the terminal got, stdout and
// stderr together, with the tty's "\r\n" as "\n".
func inTerminal(t *testing.T, store string, args ...string) result {
	t.Helper()
	script := needProgram(t, "script", "bsdutils")
	cmdline := "stty cols 120 rows 40 && exec " + shellQuote(append([]string{imgfsBin, "--store", store}, args...))
	res := runWith(t, "", []string{"TERM=xterm"}, script, "-qfec", cmdline, "/dev/null")
	res.stdout = strings.ReplaceAll(res.stdout, "\r\n", "\n")
	return res
}

func shellQuote(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

// lastFrame is what a terminal shows at the end of out: what follows the last "erase
// below", before which the display moves the cursor up over its previous frame. A display
// that drew one frame only wrote no such sequence: then it is all of out.
func lastFrame(out string) string {
	if i := strings.LastIndex(out, "\x1b[J"); i >= 0 {
		return out[i+len("\x1b[J"):]
	}
	return out
}

// TestProgressTerminal: on a terminal, imgfs push and pull keep a line per layer in place,
// as docker does, and the screen ends with each layer's last word ("Pushed", "Pull
// complete"), then the lines of stdout; the repository line of push is printed once,
// above. Not on a terminal, pull's stderr is plain lines: the image line, then a line per
// change of a layer's word, no byte counts. -q prints nothing on a terminal either.
func TestProgressTerminal(t *testing.T) {
	r := startRegistry(t)
	tmp := t.TempDir()
	ref := r.host + "/test/app:1"
	orig := filepath.Join(tmp, "orig")
	_, img := origImage(t, orig, ref)
	var short []string // the layers' IDs, as docker shortens them
	for _, l := range img.layers {
		short = append(short, l.Digest.Encoded()[:12])
	}

	// Push.
	res := inTerminal(t, orig, "push", ref)
	if res.code != 0 {
		t.Fatalf("imgfs push %s on a terminal: exit %d\n%q\nregistry log:\n%s", ref, res.code, res.stdout, r.logTail())
	}
	above := "The push refers to repository [" + r.host + "/test/app]\n"
	frame := lastFrame(res.stdout)
	if strings.Count(res.stdout, above) != 1 || !strings.HasPrefix(res.stdout, above) {
		t.Errorf("imgfs push on a terminal: %q not once, first:\n%q", above, res.stdout)
	}
	frame = strings.TrimPrefix(frame, above) // drawn in the last frame's refresh
	pushed := "1: digest: " + img.manifest.Digest.String() + " size: " + strconv.FormatInt(img.manifest.Size, 10) + "\n"
	layerLines, ok := strings.CutSuffix(frame, pushed)
	got := strings.Split(strings.TrimSuffix(layerLines, "\n"), "\n")
	slices.Sort(got) // docker lists a push's layers top first; the order is not the point here
	want := []string{short[0] + ": Pushed", short[1] + ": Pushed"}
	slices.Sort(want)
	if !ok || !slices.Equal(got, want) {
		t.Errorf("imgfs push on a terminal ends with:\n%s\nwant the lines %q, then %q; all of it:\n%q", frame, want, pushed, res.stdout)
	}

	// Pull into an empty store.
	res = inTerminal(t, filepath.Join(tmp, "tty"), "pull", ref)
	if res.code != 0 {
		t.Fatalf("imgfs pull %s on a terminal: exit %d\n%q\nregistry log:\n%s", ref, res.code, res.stdout, r.logTail())
	}
	wantEnd := "1: Pulling from test/app\n" +
		short[0] + ": Pull complete\n" +
		short[1] + ": Pull complete\n" +
		"Digest: " + img.manifest.Digest.String() + "\n" +
		"Status: Downloaded newer image for " + ref + "\n"
	if frame := lastFrame(res.stdout); frame != wantEnd {
		t.Errorf("imgfs pull on a terminal ends with:\n%s\nwant:\n%s\nall of it:\n%q", frame, wantEnd, res.stdout)
	}
	if res := inTerminal(t, filepath.Join(tmp, "quiet"), "pull", "-q", ref); res.code != 0 || res.stdout != "" {
		t.Errorf("imgfs pull -q on a terminal: exit %d, %q", res.code, res.stdout)
	}

	// Not on a terminal: plain lines.
	res = imgfs(t, filepath.Join(tmp, "plain"), "pull", ref)
	if res.code != 0 {
		t.Fatalf("imgfs pull %s: exit %d\n%s%s", ref, res.code, res.stdout, res.stderr)
	}
	lines := strings.Split(strings.TrimSuffix(res.stderr, "\n"), "\n")
	if lines[0] != "1: Pulling from test/app" {
		t.Errorf("imgfs pull stderr begins with %q, want the image's line", lines[0])
	}
	layerLine := regexp.MustCompile(`^([0-9a-f]{12}): ([A-Z][a-z]*( [A-Za-z]+)*)$`) // words, no byte counts
	words := map[string][]string{}
	for _, l := range lines[1:] {
		m := layerLine.FindStringSubmatch(l)
		if m == nil || !slices.Contains(short, m[1]) {
			t.Errorf("imgfs pull stderr: %q is not a layer's word", l)
			continue
		}
		words[m[1]] = append(words[m[1]], m[2])
	}
	for _, id := range short {
		w := words[id]
		if len(w) < 3 || w[0] != "Pulling fs layer" || w[len(w)-1] != "Pull complete" || !slices.Contains(w, "Download complete") {
			t.Errorf("layer %s: words %q, want Pulling fs layer … Download complete … Pull complete", id, w)
		}
		for i := 1; i < len(w); i++ {
			if w[i] == w[i-1] {
				t.Errorf("layer %s: %q twice in a row: %q", id, w[i], w)
			}
		}
	}
	if strings.Contains(res.stderr, "\x1b") {
		t.Errorf("imgfs pull stderr, not a terminal, has escape sequences: %q", res.stderr)
	}
	if t.Failed() {
		t.Logf("imgfs pull stderr, not a terminal:\n%s", res.stderr)
	}
}
