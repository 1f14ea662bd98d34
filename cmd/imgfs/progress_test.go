package main

import (
	"bytes"
	"errors"
	"testing"
)

func TestProgressLines(t *testing.T) {
	var b bytes.Buffer
	p := newProgress(&b) // not a terminal: plain lines
	if p.bars != nil {
		t.Fatal("bars on a buffer")
	}
	big := "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	unknown := "sha256:fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
	small := "sha256:1111111111111111111111111111111111111111111111111111111111111111"

	p.Start(small, "config", 300) // too small to show
	p.Add(small, 300)
	p.Done(small, nil)
	p.Start(big, "layer", 12_345_678)
	p.Add(big, 12_345_678)
	p.Done(big, nil)
	p.Start(unknown, "blob", -1) // shown once past the threshold
	p.Add(unknown, 600_000)
	if b.Len() != len("Importing sha256:0123456789ab… (12.3MB)\nsha256:0123456789ab…: done\n") {
		t.Errorf("before the threshold: %q", b.String())
	}
	p.Add(unknown, 600_000)
	p.Done(unknown, errors.New("boom"))
	p.Start("blobs/sha256/x", "layer", 2_000_000)
	p.Done("blobs/sha256/x", nil)
	p.Wait()

	want := "Importing sha256:0123456789ab… (12.3MB)\nsha256:0123456789ab…: done\n" +
		"Importing sha256:fedcba987654…\nsha256:fedcba987654…: failed\n" +
		"Importing blobs/sha256/x (2MB)\nblobs/sha256/x: done\n"
	if b.String() != want {
		t.Errorf("progress:\n%s\nwant:\n%s", b.String(), want)
	}
}
