// Package readahead switches how far the kernel reads ahead in the files opened next on
// a FUSE mount. The kernel copies a file's read-ahead from its mount's bdi
// (/sys/class/bdi/MAJ:MIN/read_ahead_kb) when it opens the file, and caps a FUSE mount's at
// its 128 KiB default whatever the daemon asks for: a file read whole and in order, such as
// export.tar, then comes in requests of 256 KiB at most, one at a time. The filesystem
// raises the value when it answers the lookup of such a file (which the open of it follows)
// and lowers it back at the file's first read, or after a second.
package readahead

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// streamKB is the read-ahead of a file read whole and in order: one request of the
// mount's max_read. It is not the whole mount's: in a walk of rootfs/, with its many small
// and middling files, go-fuse would allocate a reply buffer of every size up to it, and
// the daemon's peak memory would grow by several MiB.
const streamKB = 1 << 10

// raisedFor is how long a raise lasts when no read of the file comes to end it.
const raisedFor = time.Second

// Switch raises and lowers the read-ahead of the files opened next on one mount. It is
// made before the mount (the filesystem is handed it when it is made) and bound to the
// mount's bdi once the mount is made. A nil Switch, an unbound one, and one bound to a
// bdi we may not write (only root may write sysfs) do nothing.
type Switch struct {
	raised atomic.Bool // found is set

	mu     sync.Mutex
	path   string      // the bdi's read_ahead_kb; "" until Bind
	found  []byte      // the value before the raise
	timer  *time.Timer // lowers it when no read comes
	closed bool        // the mount is gone: its device number may be another mount's
}

// New returns a Switch bound to no mount yet.
func New() *Switch { return new(Switch) }

// Bind binds s to the mount whose device number is dev ("MAJ:MIN"), when its read-ahead
// can be changed.
func (s *Switch) Bind(dev string) {
	if s == nil {
		return
	}
	p := "/sys/class/bdi/" + dev + "/read_ahead_kb"
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		return
	}
	f.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.path = p
	}
}

// Raise sets the read-ahead of the files opened from now on to streamKB, unless it is
// that much already, for raisedFor or until Lower.
func (s *Switch) Raise() {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.path == "" {
		return
	}
	if s.found == nil {
		cur, err := os.ReadFile(s.path)
		if err != nil {
			return
		}
		if kb, err := strconv.Atoi(strings.TrimSpace(string(cur))); err != nil || kb >= streamKB {
			return
		}
		if os.WriteFile(s.path, []byte(strconv.Itoa(streamKB)), 0) != nil {
			return
		}
		s.found = cur
		s.raised.Store(true)
	}
	if s.timer == nil {
		s.timer = time.AfterFunc(raisedFor, s.Lower)
	} else {
		s.timer.Reset(raisedFor)
	}
}

// Lower puts back the read-ahead that Raise found.
func (s *Switch) Lower() {
	if s == nil || !s.raised.Load() {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.found != nil {
		os.WriteFile(s.path, s.found, 0)
		s.found = nil
		s.raised.Store(false)
	}
}

// Close puts the read-ahead back, if raised, and stops the timer: the mount is going away.
func (s *Switch) Close() {
	if s == nil {
		return
	}
	s.Lower()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.timer != nil {
		s.timer.Stop()
	}
}
