package par

import (
	"sync/atomic"
	"testing"
	"time"
)

// Every index is called once, never more than limit at a time, and Do returns after the
// last call; a limit under one runs one at a time.
func TestDo(t *testing.T) {
	for _, limit := range []int{-1, 0, 1, 3} {
		var running, most atomic.Int32
		calls := make([]atomic.Int32, 20)
		Do(len(calls), limit, func(i int) {
			n := running.Add(1)
			for {
				m := most.Load()
				if n <= m || most.CompareAndSwap(m, n) {
					break
				}
			}
			time.Sleep(time.Millisecond)
			calls[i].Add(1)
			running.Add(-1)
		})
		for i := range calls {
			if c := calls[i].Load(); c != 1 {
				t.Fatalf("limit %d: index %d called %d times", limit, i, c)
			}
		}
		if want := int32(max(limit, 1)); most.Load() > want || running.Load() != 0 {
			t.Fatalf("limit %d: %d at a time (want at most %d), %d still running after Do", limit, most.Load(), want, running.Load())
		}
	}
	Do(0, 2, func(int) { t.Fatal("called for n = 0") })
}
