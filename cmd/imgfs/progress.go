package main

import (
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/opencontainers/go-digest"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/term"
)

// progressThreshold is the size a blob must pass for its progress to be shown: configs,
// manifests and small layers come and go too fast to be worth a line.
const progressThreshold = 1_000_000

// blobProgress shows an import's progress (it is a store.Progress) on stderr: a bar per
// blob on a terminal (mpb), else a line when a blob starts and one when it is done. Only
// blobs over progressThreshold bytes show; a blob of unknown size shows once that many
// bytes of it are read. Call Wait before writing anything else to the terminal.
type blobProgress struct {
	mu    sync.Mutex
	out   io.Writer
	bars  *mpb.Progress // nil: plain lines
	blobs map[string]*blobState
}

type blobState struct {
	what  string
	total int64 // <= 0: unknown
	n     int64
	shown bool
	bar   *mpb.Bar
}

// newProgress returns the progress display for stderr: bars when it is a terminal
// (sized, and TERM is not dumb), plain lines otherwise.
func newProgress(stderr io.Writer) *blobProgress {
	p := &blobProgress{out: stderr, blobs: make(map[string]*blobState)}
	if f, ok := stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) && os.Getenv("TERM") != "dumb" {
		// A terminal of no width (a pty nobody sized) would show nothing.
		if w, _, err := term.GetSize(int(f.Fd())); err == nil && w > 0 {
			p.bars = mpb.New(mpb.WithOutput(f), mpb.WithWidth(40))
		}
	}
	return p
}

// Start is called as a blob begins; total is -1 when unknown.
func (p *blobProgress) Start(id, what string, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if old := p.blobs[id]; old != nil && old.bar != nil {
		old.bar.Abort(true)
	}
	st := &blobState{what: what, total: total}
	p.blobs[id] = st
	if total > progressThreshold {
		p.show(id, st)
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
	case st.bar != nil:
		st.bar.IncrInt64(n)
	case !st.shown && st.total <= 0 && st.n > progressThreshold:
		p.show(id, st)
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
	if st.bar != nil {
		if err != nil {
			st.bar.Abort(false)
		} else {
			// Complete it even if fewer bytes came than announced (Wait waits for it).
			if st.total > 0 {
				st.bar.SetCurrent(st.total)
			} else {
				st.bar.SetTotal(-1, true) // the size read is the size
			}
		}
		return
	}
	if err != nil {
		fmt.Fprintf(p.out, "%s: failed\n", shortBlobID(id))
		return
	}
	fmt.Fprintf(p.out, "%s: done\n", shortBlobID(id))
}

// show starts showing blob id; p.mu is held.
func (p *blobProgress) show(id string, st *blobState) {
	st.shown = true
	if p.bars == nil {
		if st.total > 0 {
			fmt.Fprintf(p.out, "Importing %s (%s)\n", shortBlobID(id), humanSize(st.total))
		} else {
			fmt.Fprintf(p.out, "Importing %s\n", shortBlobID(id))
		}
		return
	}
	total := st.total
	if total < 0 {
		total = 0 // mpb: unknown until SetTotal
	}
	label := shortBlobID(id)
	if st.what != "" {
		label = st.what + " " + label
	}
	st.bar = p.bars.AddBar(total,
		mpb.PrependDecorators(
			decor.Name(label, decor.WCSyncSpaceR),
			decor.CountersKiloByte("% .1f / % .1f", decor.WCSyncSpace),
		),
		mpb.AppendDecorators(
			decor.OnAbort(decor.OnComplete(decor.Percentage(decor.WC{W: 5}), "done"), "failed"),
		),
	)
	if st.n > 0 {
		st.bar.SetCurrent(st.n)
	}
}

// Wait ends the display: bars still running (a blob Start had no Done) are stopped, and
// Wait returns once the last frame is drawn.
func (p *blobProgress) Wait() {
	p.mu.Lock()
	for id, st := range p.blobs {
		if st.bar != nil {
			st.bar.Abort(false)
		}
		delete(p.blobs, id)
	}
	bars := p.bars
	p.mu.Unlock()
	if bars != nil {
		bars.Wait()
	}
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
