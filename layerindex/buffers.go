package layerindex

import "math/bits"

// bufferList keeps a few buffers that nobody holds any more, for the next one needed of
// about their size. It is not a sync.Pool because a garbage collection empties those, and
// a sequential read through a mount collects every few spans: each span would then get a
// fresh buffer, which the kernel has to fault in and zero. The zero value keeps nothing;
// its methods need the owner's lock.
type bufferList struct {
	free [][]byte
	max  int // buffers kept at most
	made int // buffers allocated
}

// get returns a buffer of n bytes, whose contents are undefined.
func (l *bufferList) get(n int64) []byte {
	for i := len(l.free) - 1; i >= 0; i-- {
		if b := l.free[i]; int64(cap(b)) >= n {
			l.free = append(l.free[:i], l.free[i+1:]...)
			return b[:n]
		}
	}
	l.made++
	return make([]byte, n, bufCap(n))
}

// put keeps b for get, or lets it go when enough are kept (the smallest first, as they
// fit the fewest spans).
func (l *bufferList) put(b []byte) {
	if len(l.free) < l.max {
		l.free = append(l.free, b)
		return
	}
	small := 0
	for i, f := range l.free {
		if cap(f) < cap(l.free[small]) {
			small = i
		}
	}
	if len(l.free) > 0 && cap(b) > cap(l.free[small]) {
		l.free[small] = b
	}
}

// bufCap rounds n up to the next of eight sizes per power of two, so that a freed buffer
// fits most spans after it: their lengths differ by the part of a DEFLATE block that runs
// past SpanSize.
func bufCap(n int64) int64 {
	step := max(int64(4096), int64(1)<<(bits.Len64(uint64(n))-1)/8)
	return (n + step - 1) / step * step
}
