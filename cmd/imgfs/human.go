package main

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// siUnits are the size units docker prints: powers of 1000, "kB" with a small k.
var siUnits = []string{"B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"}

// humanSize formats a byte count as docker does in `docker images`: three significant
// digits and an SI unit, no space ("4.26MB", "512B", "1.2kB").
func humanSize(n int64) string {
	v := float64(n)
	u := 0
	for {
		s := strconv.FormatFloat(v, 'g', 3, 64)
		// 999.6 rounds to "1e+03": that is the next unit's 1.
		if u < len(siUnits)-1 && (v >= 1000 || strings.Contains(s, "e+")) {
			v /= 1000
			u++
			continue
		}
		return s + siUnits[u]
	}
}

// durationSteps are the bands of humanDuration, smallest first: a duration under limit
// is told as count(d) units. They are docker's (go-units HumanDuration) so that `imgfs ls`
// reads like `docker images`.
var durationSteps = []struct {
	limit time.Duration
	say   func(d time.Duration) string
}{
	{time.Second, func(time.Duration) string { return "Less than a second" }},
	{2 * time.Second, func(time.Duration) string { return "1 second" }},
	{time.Minute, func(d time.Duration) string { return fmt.Sprintf("%d seconds", int(d.Seconds())) }},
	{2 * time.Minute, func(time.Duration) string { return "About a minute" }},
	{time.Hour, func(d time.Duration) string { return fmt.Sprintf("%d minutes", int(d.Minutes())) }},
}

// humanDuration says how long d is the way docker's CREATED column does: "45 seconds",
// "About an hour", "3 days", "2 weeks", "5 months", "2 years". Hours are rounded to the
// nearest; days, weeks (7 days), months (30 days) and years (365 days) are whole.
func humanDuration(d time.Duration) string {
	for _, s := range durationSteps {
		if d < s.limit {
			return s.say(d)
		}
	}
	hours := int(d.Hours() + 0.5)
	const day, week, month, year = 24, 24 * 7, 24 * 30, 24 * 365
	switch {
	case hours <= 1:
		return "About an hour"
	case hours < 2*day:
		return fmt.Sprintf("%d hours", hours)
	case hours < 2*week:
		return fmt.Sprintf("%d days", hours/day)
	case hours < 2*month:
		return fmt.Sprintf("%d weeks", hours/week)
	case hours < 2*year:
		return fmt.Sprintf("%d months", hours/month)
	}
	return fmt.Sprintf("%d years", int(d.Hours())/year)
}

// createdSince is the CREATED column: how long ago t was, or "N/A" when the image does not
// say when it was made.
func createdSince(t time.Time, now time.Time) string {
	if t.IsZero() {
		return "N/A"
	}
	return humanDuration(now.Sub(t)) + " ago"
}

// parseSize reads a byte count: a number, maybe followed by K, M, G or T (powers of 1024,
// an optional i and B after: 512M, 10GiB, 1TB).
func parseSize(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	t = strings.TrimSuffix(t, "B")
	t = strings.TrimSuffix(t, "I")
	mult := int64(1)
	if n := len(t); n > 0 {
		if i := strings.IndexByte("KMGT", t[n-1]); i >= 0 {
			mult = int64(1) << (10 * (i + 1))
			t = t[:n-1]
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/mult {
		return 0, errors.New("not a size (bytes, or a number with K, M, G or T)")
	}
	return n * mult, nil
}
