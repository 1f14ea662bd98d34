package main

import (
	"math"
	"testing"
)

// The daemon's memory policy: under the floor, Go's default growth and the floor as the
// limit (a mount's first reads are not slowed by collections); above it, the limit
// follows the live heap up with its headroom, at 25% growth, and never overflows.
func TestMemoryPolicy(t *testing.T) {
	for _, c := range []struct {
		live  float64
		limit int64
		pct   int
	}{
		{-1, memoryFloor, floorGCPercent},
		{0, memoryFloor, floorGCPercent},
		{20 << 20, memoryFloor, floorGCPercent},
		{memoryFloor / memoryHeadroom, memoryFloor, floorGCPercent},
		{60 << 20, 90 << 20, gcPercent},
		{1 << 30, 3 << 29, gcPercent},
		{math.MaxFloat64, 1 << 62, gcPercent}, // math.MaxInt64/2 as a float64
	} {
		if limit, pct := memoryPolicy(c.live); limit != c.limit || pct != c.pct {
			t.Errorf("live %g: limit %d, GC %d%%; want %d, %d%%", c.live, limit, pct, c.limit, c.pct)
		}
	}
}
