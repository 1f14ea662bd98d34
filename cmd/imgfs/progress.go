package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/opencontainers/go-digest"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/term"
)

// display owns stderr while a command moves blobs (import, save, pull, push). On a
// terminal it keeps a line per id in place, as docker does: "ID: WORD", or while bytes
// move "ID: BUSY [=====>     ] 12.3MB/45.6MB", redrawn by mpb; a message of no id is
// printed above the lines. Elsewhere it prints plain lines, "ID: WORD" once per change of
// word and no byte counts, so that a log gets no flood. Its methods may be called from
// several goroutines at once. Call Wait before writing anything else to the terminal.
type display struct {
	mu    sync.Mutex
	out   io.Writer
	bars  *mpb.Progress // nil: plain lines
	lines map[string]*line
	done  bool // Wait was called: nothing more is shown
}

// line is an id's line. It has its own lock because mpb draws it from its own goroutines,
// which must never wait for display.mu: that is held while calling into mpb.
type line struct {
	id  string
	bar *mpb.Bar // nil: plain lines

	mu      sync.Mutex
	word    string // the latest word
	busy    string // what the line says while bytes move ("Downloading")
	moving  bool   // bytes came since the latest word
	current int64
	total   int64 // <= 0: unknown
}

// progressBarWidth is the widest bar a line draws, docker's.
const progressBarWidth = 50

// newDisplay returns the display for stderr: lines kept in place when it is a terminal
// (sized, and TERM is not dumb), plain lines otherwise.
func newDisplay(stderr io.Writer) *display {
	if f, ok := stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) && os.Getenv("TERM") != "dumb" {
		// A terminal of no width (a pty nobody sized) would show nothing.
		if w, _, err := term.GetSize(int(f.Fd())); err == nil && w > 0 {
			return terminalDisplay(f)
		}
	}
	return &display{out: stderr, lines: make(map[string]*line)}
}

// terminalDisplay draws on out as on a terminal; opts are for tests, which draw into a
// buffer.
func terminalDisplay(out io.Writer, opts ...mpb.ContainerOption) *display {
	opts = append([]mpb.ContainerOption{mpb.WithOutput(out)}, opts...)
	return &display{out: out, bars: mpb.New(opts...), lines: make(map[string]*line)}
}

// terminal says whether d keeps lines in place.
func (d *display) terminal() bool { return d.bars != nil }

// Say sets id's word (its line shows it instead of a bar, if the word is new); a msg of no
// id ("" id) is printed as it is, above the lines.
func (d *display) Say(id, msg string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.done {
		return
	}
	if id == "" {
		if d.bars != nil {
			d.bars.Write([]byte(msg + "\n"))
		} else {
			fmt.Fprintln(d.out, msg)
		}
		return
	}
	l := d.line(id)
	l.mu.Lock()
	changed := l.word != msg
	if changed {
		// A new word ends the bytes; the same word again ("Downloading", said as they
		// move) does not.
		l.word, l.moving = msg, false
	}
	l.mu.Unlock()
	if d.bars == nil && changed {
		fmt.Fprintf(d.out, "%s: %s\n", id, msg)
	}
}

// Bytes says current bytes of id's total (<= 0: unknown) have moved: on a terminal its
// line shows busy and a bar until its next word. Plain lines leave bytes out.
func (d *display) Bytes(id, busy string, current, total int64) {
	if d.bars == nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.done {
		return
	}
	l := d.line(id)
	l.mu.Lock()
	l.busy, l.moving, l.current, l.total = busy, true, current, total
	l.mu.Unlock()
}

// line returns id's line, made (and on a terminal drawn last) if new; d.mu is held.
func (d *display) line(id string) *line {
	if l := d.lines[id]; l != nil {
		return l
	}
	l := &line{id: id}
	d.lines[id] = l
	if d.bars != nil {
		// A bar of total 0 never completes by itself: Wait completes it. mpb only gives
		// the line its place; draw says all of it.
		bar, err := d.bars.Add(0, nil, mpb.BarFillerTrim(), mpb.PrependDecorators(decor.Any(l.draw)))
		if err == nil {
			l.bar = bar
		}
	}
	return l
}

// draw is the line as it is now, to fit in st.AvailableWidth when a bar is drawn (mpb
// cuts what is still too long).
func (l *line) draw(st decor.Statistics) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.moving {
		return l.id + ": " + l.word
	}
	head := l.id + ": " + l.busy + " "
	counts := humanSize(l.current)
	if l.total <= 0 {
		return head + counts
	}
	counts += "/" + humanSize(l.total)
	// "[" + width + ">]" + " "
	width := min(progressBarWidth, st.AvailableWidth-utf8.RuneCountInString(head+counts)-4)
	if width < 10 {
		return head + counts
	}
	return head + progressBar(l.current, l.total, width) + " " + counts
}

// progressBar is docker's bar for current of total bytes: width cells of "=" filling up,
// then ">".
func progressBar(current, total int64, width int) string {
	filled := int(min(current, total) * int64(width) / total)
	return "[" + strings.Repeat("=", filled) + ">" + strings.Repeat(" ", width-filled) + "]"
}

// Wait ends the display and returns once the last frame is drawn. A line whose bytes are
// all in ends on its latest word; one cut short keeps its bar, to show how far it came.
func (d *display) Wait() {
	if d == nil {
		return
	}
	d.mu.Lock()
	if d.done {
		d.mu.Unlock()
		return
	}
	d.done = true
	for _, l := range d.lines {
		l.mu.Lock()
		if l.moving && l.word != "" && l.total > 0 && l.current >= l.total {
			l.moving = false
		}
		l.mu.Unlock()
		if l.bar != nil {
			l.bar.SetTotal(-1, true)
		}
	}
	bars := d.bars
	d.mu.Unlock()
	if bars != nil {
		bars.Wait()
	}
}

// statusFunc is d.Say as a pull's or push's Status: nil for no display.
func (d *display) statusFunc() func(id, msg string) {
	if d == nil {
		return nil
	}
	return d.Say
}

// progressFunc is d.Bytes as a pull's or push's Progress, busy the word while a layer's
// bytes move: nil for no display.
func (d *display) progressFunc(busy string) func(id string, current, total int64) {
	if d == nil {
		return nil
	}
	return func(id string, current, total int64) { d.Bytes(id, busy, current, total) }
}

// progressThreshold is the size a blob must pass for its progress to be shown: configs,
// manifests and small layers come and go too fast to be worth a line.
const progressThreshold = 1_000_000

// blobProgress shows an import's progress (it is a store.Progress) on a display: a line
// per blob on a terminal ("sha256:0123456789ab…: Importing layer [==>  ] 1.2MB/3.4MB",
// then "…: done"), else "Importing ID (SIZE)" when a blob starts and "ID: done" when it is
// done. Only blobs over progressThreshold bytes show; a blob of unknown size shows once
// that many bytes of it are read. Call Wait before writing anything else to the terminal.
type blobProgress struct {
	mu    sync.Mutex
	d     *display
	verb  string // "Importing"
	blobs map[string]*blobState
}

type blobState struct {
	label string // the line's id: the short digest
	busy  string // verb and what the blob is
	total int64  // <= 0: unknown
	n     int64
	shown bool
}

// newProgress returns the progress of blobs on stderr, verb saying what is done to them.
func newProgress(stderr io.Writer, verb string) *blobProgress {
	return &blobProgress{d: newDisplay(stderr), verb: verb, blobs: make(map[string]*blobState)}
}

// Start is called as a blob begins; what is what it is ("layer"), total -1 when unknown.
func (p *blobProgress) Start(id, what string, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := &blobState{label: shortBlobID(id), busy: strings.TrimSpace(p.verb + " " + what), total: total}
	p.blobs[id] = st
	if total > progressThreshold {
		p.show(st)
	}
}

// Add is called as n more bytes of blob id are read.
func (p *blobProgress) Add(id string, n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.blobs[id]
	if st == nil {
		return
	}
	st.n += n
	switch {
	case st.shown:
		p.d.Bytes(st.label, st.busy, st.n, st.total)
	case st.total <= 0 && st.n > progressThreshold:
		p.show(st)
	}
}

// Done is called when blob id is stored, or failed to be.
func (p *blobProgress) Done(id string, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.blobs[id]
	if st == nil {
		return
	}
	delete(p.blobs, id)
	if !st.shown {
		return
	}
	word := "done"
	if err != nil {
		word = "failed"
	}
	if p.d.terminal() {
		p.d.Say(st.label, word)
	} else {
		fmt.Fprintf(p.d.out, "%s: %s\n", st.label, word)
	}
}

// show starts showing a blob; p.mu is held.
func (p *blobProgress) show(st *blobState) {
	st.shown = true
	if p.d.terminal() {
		p.d.Bytes(st.label, st.busy, st.n, st.total)
		return
	}
	if st.total > 0 {
		fmt.Fprintf(p.d.out, "%s %s (%s)\n", p.verb, st.label, humanSize(st.total))
	} else {
		fmt.Fprintf(p.d.out, "%s %s\n", p.verb, st.label)
	}
}

// Wait ends the display: the lines of blobs that had no Done say they failed, and Wait
// returns once the last frame is drawn.
func (p *blobProgress) Wait() {
	p.mu.Lock()
	for id, st := range p.blobs {
		if st.shown && p.d.terminal() {
			p.d.Say(st.label, "failed")
		}
		delete(p.blobs, id)
	}
	p.mu.Unlock()
	p.d.Wait()
}

// shortBlobID shortens a digest to docker's 12 hex digits ("sha256:0123456789ab…"); any
// other id (an archive path) is shown whole.
func shortBlobID(id string) string {
	d, err := digest.Parse(id)
	if err != nil || len(d.Encoded()) <= 12 {
		return id
	}
	return string(d.Algorithm()) + ":" + d.Encoded()[:12] + "…"
}
