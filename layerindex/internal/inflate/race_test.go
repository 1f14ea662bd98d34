//go:build race

package inflate

// The race detector slows decoding about tenfold: tests use less data under it.
const raceEnabled = true
