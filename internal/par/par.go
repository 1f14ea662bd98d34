// Package par runs a function over the indexes of a slice, a bounded number at a time: the
// one way imgfs loads, builds or fetches a few layers' worth of work at once.
package par

import "sync"

// Do calls f(i) for every i in [0, n), at most limit at a time (at least one), each on a
// goroutine of its own, and returns once every call has returned. f reports through what
// it closes over, one slot per i.
func Do(n, limit int, f func(i int)) {
	slots := make(chan struct{}, max(limit, 1))
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		slots <- struct{}{}
		go func() {
			defer func() { <-slots; wg.Done() }()
			f(i)
		}()
	}
	wg.Wait()
}
