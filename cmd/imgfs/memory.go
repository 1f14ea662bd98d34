package main

import (
	"math"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// A mount's Go heap is mostly decoded spans: the span cache, a bounded amount, and the
// spans evicted from it, garbage at a rate of one span per 4 MiB read. With the Go
// defaults (GOGC=100, no memory limit) the heap grows to twice what is live and the pages
// freed stay mapped for a while, so a full read of an image left the daemon at about three
// times the memory it needed. While it serves, the daemon therefore collects garbage at
// 25% heap growth and holds its memory under memoryFloor with a soft memory limit; the
// limit follows the live heap up (memoryHeadroom above it), so that a mount holding more
// than the floor (the inodes of a huge image) is never made to collect without end.
// GOGC and GOMEMLIMIT, when set, are left as they say.
const (
	gcPercent      = 25
	memoryFloor    = 60 << 20
	memoryHeadroom = 1.5 // limit: at least the live heap times this
	memoryInterval = time.Second
)

// holdMemory applies the memory policy above until stop is closed, then restores the
// limit it found.
func holdMemory(stop <-chan struct{}) {
	if os.Getenv("GOGC") == "" {
		old := debug.SetGCPercent(gcPercent)
		defer debug.SetGCPercent(old)
	}
	if os.Getenv("GOMEMLIMIT") != "" {
		<-stop
		return
	}
	old := debug.SetMemoryLimit(-1)
	defer debug.SetMemoryLimit(old)
	live := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	set := func() {
		metrics.Read(live)
		limit := int64(memoryFloor)
		if live[0].Value.Kind() == metrics.KindUint64 {
			if l := float64(live[0].Value.Uint64()) * memoryHeadroom; l > memoryFloor {
				limit = int64(min(l, math.MaxInt64/2))
			}
		}
		debug.SetMemoryLimit(limit)
	}
	set()
	t := time.NewTicker(memoryInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			set()
		}
	}
}
