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
// times the memory it needed. While it serves, the daemon therefore holds its memory
// under memoryFloor with a soft memory limit, and above it collects garbage at 25% heap
// growth; the limit follows the live heap up (memoryHeadroom above it), so that a mount
// holding more than the floor (the inodes of a huge image) is never made to collect
// without end. Below the floor it collects at Go's default growth (100%), the limit
// holding it under the floor all the same: a mount's first reads (layer indexes decoded,
// a tree merged) grow a small heap to a few tens of MiB, and at 25% that took a dozen
// collections, a tenth of a lazy mount's time to its first byte. GOGC and GOMEMLIMIT,
// when set, are left as they say.
const (
	gcPercent      = 25
	floorGCPercent = 100 // below the floor
	memoryFloor    = 60 << 20
	memoryHeadroom = 1.5 // limit: at least the live heap times this
	memoryInterval = time.Second
)

// holdMemory applies the memory policy above until stop is closed, then restores the
// GC percentage and limit it found.
func holdMemory(stop <-chan struct{}) {
	setGC := os.Getenv("GOGC") == ""
	if setGC {
		old := debug.SetGCPercent(floorGCPercent)
		defer debug.SetGCPercent(old)
	}
	if os.Getenv("GOMEMLIMIT") != "" {
		if setGC {
			debug.SetGCPercent(gcPercent) // no floor without a limit of ours
		}
		<-stop
		return
	}
	old := debug.SetMemoryLimit(-1)
	defer debug.SetMemoryLimit(old)
	live := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	set := func() {
		metrics.Read(live)
		limit, pct := memoryPolicy(-1)
		if live[0].Value.Kind() == metrics.KindUint64 {
			limit, pct = memoryPolicy(float64(live[0].Value.Uint64()))
		}
		debug.SetMemoryLimit(limit)
		if setGC {
			debug.SetGCPercent(pct)
		}
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

// memoryPolicy returns the soft memory limit and the GC percentage for a live heap of
// live bytes (negative: not known): the floor and Go's default growth while the heap
// with its headroom fits under the floor, else the heap with its headroom and 25%.
func memoryPolicy(live float64) (limit int64, pct int) {
	if l := live * memoryHeadroom; l > memoryFloor {
		return int64(min(l, math.MaxInt64/2)), gcPercent
	}
	return memoryFloor, floorGCPercent
}
