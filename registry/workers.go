package registry

import (
	"context"
	"sync"
)

// workers runs the transfers of one command, at most n at a time: the first failure
// cancels the others (through ctx) and is what wait returns.
type workers struct {
	ctx    context.Context
	cancel context.CancelFunc
	sem    chan struct{}
	wg     sync.WaitGroup
	mu     sync.Mutex
	err    error
}

func newWorkers(ctx context.Context, n int) *workers {
	if n <= 0 {
		n = DefaultConcurrency
	}
	w := &workers{sem: make(chan struct{}, n)}
	w.ctx, w.cancel = context.WithCancel(ctx)
	return w
}

// fail records err unless a failure came first, and cancels the others.
func (w *workers) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil {
		w.err = err
		w.cancel()
	}
}

// acquire takes one of the n places, calling waiting (if set) first when none is free.
// It returns false once the command is cancelled.
func (w *workers) acquire(waiting func()) bool {
	select {
	case w.sem <- struct{}{}:
		return true
	default:
	}
	if waiting != nil {
		waiting()
	}
	select {
	case w.sem <- struct{}{}:
		return true
	case <-w.ctx.Done():
		return false
	}
}

func (w *workers) release() { <-w.sem }

// start runs f in a goroutine that wait waits for.
func (w *workers) start(f func()) {
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		f()
	}()
}

// wait waits for every goroutine started and returns the first failure, else the
// command's own context's error.
func (w *workers) wait() error {
	w.wg.Wait()
	w.mu.Lock()
	err := w.err
	w.mu.Unlock()
	if err == nil {
		err = w.ctx.Err()
	}
	w.cancel()
	return err
}
