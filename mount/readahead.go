package mount

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// streamReadAheadKB is how far the kernel reads ahead in a file read whole and in order,
// such as export.tar: one request of max_read. The kernel caps a FUSE mount's read-ahead
// at its 128 KiB default whatever the daemon asks for, so such a reader had 256 KiB
// requests, one at a time. Cold cp of the bench export.tar, A/B of 8 on one binary: 0.84 s
// at 128 KiB, 0.64 s at 1 MiB (dd bs=32k 0.68 -> 0.59 s); 2 MiB was slower than either.
//
// It is not the whole mount's: in a walk of rootfs/, with its many small and middling
// files, go-fuse then allocates a reply buffer of every size up to 1 MiB, and the daemon's
// peak memory in scripts/bench/walk.sh went up by 3 to 5 MiB, past the goal of #4.
const streamReadAheadKB = 1 << 10

// raisedFor is how long a raise lasts when no read of the file comes to end it.
const raisedFor = time.Second

// ReadAhead switches the read-ahead of the files opened on a mount. The kernel copies a
// file's read-ahead from its mount's bdi (/sys/class/bdi/MAJ:MIN/read_ahead_kb) when it
// opens the file, and imgfs mounts open files without asking the daemon (no OPEN); but the
// path walk of an open asks for the file (LOOKUP) first, unless its entry is cached. So
// the filesystem raises the value when it answers the lookup of a file read whole, and
// lowers it back at that file's first read, or after raisedFor. A nil ReadAhead, of a mount
// whose read-ahead cannot be changed, does nothing.
type ReadAhead struct {
	path   string      // the bdi's read_ahead_kb
	raised atomic.Bool // found is set

	mu     sync.Mutex
	found  []byte      // the value before the raise
	timer  *time.Timer // lowers it when no read comes
	closed bool        // the mount is gone: its device number may be another mount's
}

// newReadAhead returns the read-ahead switch of the mount at dir, or nil when it cannot
// be changed (only root may write sysfs).
func newReadAhead(dir string) *ReadAhead {
	dev, _, ok := mountInfo(dir)
	if !ok {
		return nil
	}
	r := &ReadAhead{path: "/sys/class/bdi/" + dev + "/read_ahead_kb"}
	f, err := os.OpenFile(r.path, os.O_WRONLY, 0)
	if err != nil {
		return nil
	}
	f.Close()
	return r
}

// Raise sets the read-ahead of the files opened from now on to streamReadAheadKB, unless it
// is that much already, for raisedFor or until Lower.
func (r *ReadAhead) Raise() {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	if r.found == nil {
		cur, err := os.ReadFile(r.path)
		if err != nil {
			return
		}
		if kb, err := strconv.Atoi(strings.TrimSpace(string(cur))); err != nil || kb >= streamReadAheadKB {
			return
		}
		if os.WriteFile(r.path, []byte(strconv.Itoa(streamReadAheadKB)), 0) != nil {
			return
		}
		r.found = cur
		r.raised.Store(true)
	}
	if r.timer == nil {
		r.timer = time.AfterFunc(raisedFor, r.Lower)
	} else {
		r.timer.Reset(raisedFor)
	}
}

// Lower puts back the read-ahead that Raise found.
func (r *ReadAhead) Lower() {
	if r == nil || !r.raised.Load() {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.found != nil {
		os.WriteFile(r.path, r.found, 0)
		r.found = nil
		r.raised.Store(false)
	}
}

// close puts the read-ahead back, if raised, and stops the timer: the mount is going away.
func (r *ReadAhead) close() {
	if r == nil {
		return
	}
	r.Lower()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	if r.timer != nil {
		r.timer.Stop()
	}
}

// ReadAhead is the mount's switch of the kernel's read-ahead for the files opened next;
// nil (doing nothing) on a mount whose read-ahead cannot be changed.
func (s *Server) ReadAhead() *ReadAhead { return s.readAhead }
