package main

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
)

func TestProgressLines(t *testing.T) {
	var b bytes.Buffer
	p := newProgress(&b, "Importing") // not a terminal: plain lines
	if p.d.terminal() {
		t.Fatal("bars on a buffer")
	}
	big := "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	unknown := "sha256:fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
	small := "sha256:1111111111111111111111111111111111111111111111111111111111111111"

	p.Start(small, "config", 300) // too small to show
	p.Add(small, 300)
	p.Done(small, nil)
	p.Start(big, "layer", 12_345_678)
	p.Add(big, 12_345_678)
	p.Done(big, nil)
	p.Start(unknown, "blob", -1) // shown once past the threshold
	p.Add(unknown, 600_000)
	if b.Len() != len("Importing sha256:0123456789ab… (12.3MB)\nsha256:0123456789ab…: done\n") {
		t.Errorf("before the threshold: %q", b.String())
	}
	p.Add(unknown, 600_000)
	p.Done(unknown, errors.New("boom"))
	p.Start("blobs/sha256/x", "layer", 2_000_000)
	p.Done("blobs/sha256/x", nil)
	p.Wait()

	want := "Importing sha256:0123456789ab… (12.3MB)\nsha256:0123456789ab…: done\n" +
		"Importing sha256:fedcba987654…\nsha256:fedcba987654…: failed\n" +
		"Importing blobs/sha256/x (2MB)\nblobs/sha256/x: done\n"
	if b.String() != want {
		t.Errorf("progress:\n%s\nwant:\n%s", b.String(), want)
	}
}

// A pull's and a push's events as the registry package sends them: Status never twice at
// once, Progress from a goroutine per layer, several layers at a time. Each layer's bytes
// all arrive before its next word.
type layerEvents struct {
	busy   string           // the word while bytes move
	before []string         // "ID: word" (or a message of no ID) before the bytes move
	bytes  map[string]int64 // layers whose bytes move, at once: their size
	after  []string         // after the bytes
	plain  string           // the plain lines these make
	final  string           // a terminal's last frame
	above  string           // printed above the lines on a terminal ("": none)
}

var pullEvents = layerEvents{
	busy: "Downloading",
	before: []string{
		"1: Pulling from test/app",
		"cccccccccccc: Already exists",
		"aaaaaaaaaaaa: Pulling fs layer",
		"bbbbbbbbbbbb: Pulling fs layer",
		"dddddddddddd: Pulling fs layer",
		"bbbbbbbbbbbb: Waiting",
		"dddddddddddd: Waiting",
		"aaaaaaaaaaaa: Downloading",
	},
	bytes: map[string]int64{"aaaaaaaaaaaa": 2_000_000, "bbbbbbbbbbbb": 3_500_000, "dddddddddddd": 700_000},
	after: []string{
		"aaaaaaaaaaaa: Downloading", // again: no new line
		"aaaaaaaaaaaa: Verifying Checksum",
		"aaaaaaaaaaaa: Download complete",
		"dddddddddddd: Download complete",
		"aaaaaaaaaaaa: Pull complete",
		"bbbbbbbbbbbb: Download complete",
		"bbbbbbbbbbbb: Pull complete",
		"dddddddddddd: Pull complete",
	},
	plain: `1: Pulling from test/app
cccccccccccc: Already exists
aaaaaaaaaaaa: Pulling fs layer
bbbbbbbbbbbb: Pulling fs layer
dddddddddddd: Pulling fs layer
bbbbbbbbbbbb: Waiting
dddddddddddd: Waiting
aaaaaaaaaaaa: Downloading
aaaaaaaaaaaa: Verifying Checksum
aaaaaaaaaaaa: Download complete
dddddddddddd: Download complete
aaaaaaaaaaaa: Pull complete
bbbbbbbbbbbb: Download complete
bbbbbbbbbbbb: Pull complete
dddddddddddd: Pull complete
`,
	final: `1: Pulling from test/app
cccccccccccc: Already exists
aaaaaaaaaaaa: Pull complete
bbbbbbbbbbbb: Pull complete
dddddddddddd: Pull complete
`,
}

var pushEvents = layerEvents{
	busy: "Pushing",
	before: []string{
		"The push refers to repository [127.0.0.1:5000/test/app]",
		"aaaaaaaaaaaa: Preparing",
		"bbbbbbbbbbbb: Preparing",
		"cccccccccccc: Preparing",
		"dddddddddddd: Preparing",
		"bbbbbbbbbbbb: Waiting",
		"cccccccccccc: Waiting",
		"dddddddddddd: Waiting",
	},
	bytes: map[string]int64{"aaaaaaaaaaaa": 1_500_000, "bbbbbbbbbbbb": 2_500_000},
	after: []string{
		"cccccccccccc: Layer already exists",
		"dddddddddddd: Mounted from other/app",
		"bbbbbbbbbbbb: Pushed",
		"aaaaaaaaaaaa: Pushed",
	},
	plain: `The push refers to repository [127.0.0.1:5000/test/app]
aaaaaaaaaaaa: Preparing
bbbbbbbbbbbb: Preparing
cccccccccccc: Preparing
dddddddddddd: Preparing
bbbbbbbbbbbb: Waiting
cccccccccccc: Waiting
dddddddddddd: Waiting
cccccccccccc: Layer already exists
dddddddddddd: Mounted from other/app
bbbbbbbbbbbb: Pushed
aaaaaaaaaaaa: Pushed
`,
	final: `aaaaaaaaaaaa: Pushed
bbbbbbbbbbbb: Pushed
cccccccccccc: Layer already exists
dddddddddddd: Mounted from other/app
`,
	above: "The push refers to repository [127.0.0.1:5000/test/app]\n",
}

// drive sends ev to d through the callbacks pull and push give the registry package, and
// calls moved once every layer's bytes are in, before the words that follow them.
func (ev layerEvents) drive(d *display, moved func()) {
	status, progress := d.statusFunc(), d.progressFunc(ev.busy)
	say := func(lines []string) {
		for _, l := range lines {
			id, msg, ok := strings.Cut(l, ": ")
			if !ok || strings.Contains(id, " ") {
				id, msg = "", l
			}
			status(id, msg)
		}
	}
	say(ev.before)
	var wg sync.WaitGroup
	for id, size := range ev.bytes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := int64(0); n < size; {
				n = min(n+32*1024, size)
				progress(id, n, size)
			}
		}()
	}
	wg.Wait()
	moved()
	say(ev.after)
	d.Wait()
}

func TestDisplayPlain(t *testing.T) {
	for _, ev := range []layerEvents{pullEvents, pushEvents} {
		var b bytes.Buffer
		d := newDisplay(&b)
		if d.terminal() {
			t.Fatal("lines kept in place on a buffer")
		}
		ev.drive(d, func() {})
		if b.String() != ev.plain {
			t.Errorf("%s: plain lines:\n%s\nwant:\n%s", ev.busy, b.String(), ev.plain)
		}
	}
}

// syncBuffer is a bytes.Buffer mpb writes into from its goroutine while a test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// lastFrame is what a terminal shows at the end of out: what follows the last "erase
// below" (mpb moves the cursor up over the previous frame and erases it before drawing).
func lastFrame(out string) string {
	if i := strings.LastIndex(out, "\x1b[J"); i >= 0 {
		return out[i+len("\x1b[J"):]
	}
	return out
}

// TestDisplayTerminal: on a terminal, while bytes move, each moving layer's line has a bar
// and its byte counts; the last frame has every layer's last word, in the order the layers
// came, and a message of no ID is printed once, above.
func TestDisplayTerminal(t *testing.T) {
	for _, ev := range []layerEvents{pullEvents, pushEvents} {
		var out syncBuffer
		d := terminalDisplay(&out, mpb.WithAutoRefresh(), mpb.WithWidth(100), mpb.WithRefreshRate(10*time.Millisecond))
		ev.drive(d, func() {
			// Every moving layer shows, in some frame, a full bar: 50 cells, as docker.
			for id, size := range ev.bytes {
				want := fmt.Sprintf("%s: %s [%s>] %s/%s\n", id, ev.busy, strings.Repeat("=", 50), humanSize(size), humanSize(size))
				deadline := time.Now().Add(10 * time.Second)
				for !strings.Contains(out.String(), want) {
					if time.Now().After(deadline) {
						t.Fatalf("%s: no frame with %q in 10s:\n%q", ev.busy, want, out.String())
					}
					time.Sleep(5 * time.Millisecond)
				}
			}
		})
		got := out.String()
		if f := lastFrame(got); f != ev.final {
			t.Errorf("%s: last frame:\n%s\nwant:\n%s\nall output: %q", ev.busy, f, ev.final, got)
		}
		if ev.above != "" {
			i := strings.Index(got, ev.above)
			if i < 0 || strings.Count(got, ev.above) != 1 || i > strings.LastIndex(got, "\x1b[J") {
				t.Errorf("%s: %q not once above the last frame: %q", ev.busy, ev.above, got)
			}
		}
	}
}

// TestLineDraw: a line's shape as bytes move, fitting its width.
func TestLineDraw(t *testing.T) {
	bar := func(filled, width int) string {
		return "[" + strings.Repeat("=", filled) + ">" + strings.Repeat(" ", width-filled) + "]"
	}
	for _, c := range []struct {
		current, total int64
		width          int
		want           string
	}{
		{0, 0, 100, "abc: Pulling fs layer"}, // no bytes yet: the word
		{1_230_000, 4_560_000, 100, "abc: Downloading " + bar(13, 50) + " 1.23MB/4.56MB"},
		{4_560_000, 4_560_000, 100, "abc: Downloading " + bar(50, 50) + " 4.56MB/4.56MB"},
		{1_230_000, -1, 100, "abc: Downloading 1.23MB"},                                 // size unknown: no bar
		{1_230_000, 4_560_000, 50, "abc: Downloading " + bar(4, 16) + " 1.23MB/4.56MB"}, // narrower: 50 columns
		{1_230_000, 4_560_000, 40, "abc: Downloading 1.23MB/4.56MB"},                    // too narrow for a bar
	} {
		l := &line{id: "abc", word: "Pulling fs layer"}
		if c.total != 0 {
			l.busy, l.moving, l.current, l.total = "Downloading", true, c.current, c.total
		}
		if got := l.draw(decor.Statistics{AvailableWidth: c.width}); got != c.want {
			t.Errorf("%d/%d in %d columns: %q, want %q", c.current, c.total, c.width, got, c.want)
		}
		if got := l.draw(decor.Statistics{AvailableWidth: c.width}); len([]rune(got)) > c.width {
			t.Errorf("%d/%d: %d columns, wider than %d", c.current, c.total, len([]rune(got)), c.width)
		}
	}
}

// TestDisplayWordAgain: on a terminal, a layer's word said again as its bytes move keeps
// its bar; a new word ends it.
func TestDisplayWordAgain(t *testing.T) {
	var out syncBuffer
	d := terminalDisplay(&out, mpb.WithAutoRefresh(), mpb.WithWidth(100))
	defer d.Wait()
	status, progress := d.statusFunc(), d.progressFunc("Downloading")
	shown := func() string { return d.lines["abc"].draw(decor.Statistics{AvailableWidth: 100}) }
	status("abc", "Downloading")
	progress("abc", 1_000_000, 2_000_000)
	status("abc", "Downloading")
	if got := shown(); !strings.HasPrefix(got, "abc: Downloading [") {
		t.Errorf("after the same word again: %q, want the bar", got)
	}
	status("abc", "Verifying Checksum")
	if got := shown(); got != "abc: Verifying Checksum" {
		t.Errorf("after a new word: %q", got)
	}
}
