package main

import (
	"testing"
	"time"
)

func TestHumanSize(t *testing.T) {
	for n, want := range map[int64]string{
		0:             "0B",
		512:           "512B",
		999:           "999B",
		1000:          "1kB",
		1234:          "1.23kB",
		999_499:       "999kB",
		999_600:       "1MB",
		4_264_000:     "4.26MB",
		12_345_678:    "12.3MB",
		1_500_000_000: "1.5GB",
	} {
		if got := humanSize(n); got != want {
			t.Errorf("humanSize(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestHumanDuration(t *testing.T) {
	const day = 24 * time.Hour
	for d, want := range map[time.Duration]string{
		-time.Minute:           "Less than a second",
		500 * time.Millisecond: "Less than a second",
		time.Second:            "1 second",
		45 * time.Second:       "45 seconds",
		90 * time.Second:       "About a minute",
		30 * time.Minute:       "30 minutes",
		70 * time.Minute:       "About an hour",
		3 * time.Hour:          "3 hours",
		47 * time.Hour:         "47 hours",
		3 * day:                "3 days",
		13 * day:               "13 days",
		15 * day:               "2 weeks",
		8 * 7 * day:            "8 weeks",
		61 * day:               "2 months",
		700 * day:              "23 months",
		3*365*day + 10*day:     "3 years",
	} {
		if got := humanDuration(d); got != want {
			t.Errorf("humanDuration(%v) = %q, want %q", d, got, want)
		}
	}
	if got := createdSince(time.Time{}, time.Now()); got != "N/A" {
		t.Errorf("createdSince(zero) = %q", got)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "512": 512, "1K": 1 << 10, "512M": 512 << 20, "10G": 10 << 30, "10GiB": 10 << 30,
		"1TB": 1 << 40, "3m": 3 << 20, "2kb": 2 << 10,
	} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "G", "-1", "1.5G", "10X", "99999999999T"} {
		if got, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", in, got)
		}
	}
}
