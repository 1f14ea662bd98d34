package inflate

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
	"testing/iotest"
)

// index decodes gz with checkpoints every span bytes, checking the output against want, and
// returns the checkpoints.
func index(t testing.TB, gz, want []byte, span int64) []Checkpoint {
	t.Helper()
	var cps []Checkpoint
	var got bytes.Buffer
	zr, err := NewGzipReader(bytes.NewReader(gz), span, func(cp Checkpoint) {
		// Emitted before the bytes after it are returned.
		if int64(got.Len()) > cp.Out {
			t.Errorf("checkpoint at %d emitted after %d bytes were read", cp.Out, got.Len())
		}
		cps = append(cps, cp)
	})
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10000) // odd size, to read across checkpoints
	for {
		n, err := zr.Read(buf)
		got.Write(buf[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	zr.Close()
	if n, err := zr.Read(buf); n != 0 || err == nil {
		t.Fatalf("Read after Close: %d, %v", n, err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Fatal("output while indexing differs")
	}
	return cps
}

// member is where a gzip member starts, compressed and uncompressed.
type member struct{ in, out int64 }

func checkCheckpoints(t testing.TB, cps []Checkpoint, gz, want []byte, span int64, members []member) {
	t.Helper()
	if len(cps) == 0 || cps[0].In != 0 || cps[0].Out != 0 || !cps[0].Member || cps[0].Bit != 0 {
		t.Fatalf("first checkpoint: %+v", cps)
	}
	for i, cp := range cps {
		if i > 0 && cp.Out-cps[i-1].Out < span {
			t.Fatalf("checkpoint %d at %d, previous at %d, span %d", i, cp.Out, cps[i-1].Out, span)
		}
		if cp.Member {
			if cp.Bit != 0 || len(cp.Window) != 0 || gz[cp.In] != 0x1f {
				t.Fatalf("member checkpoint %d: %+v", i, cp)
			}
		} else {
			// The window is the member's last 32 KiB (or all of it) before Out.
			start := int64(0)
			for _, m := range members {
				if m.in <= cp.In {
					start = m.out
				}
			}
			wl := min(int64(windowSize), cp.Out-start)
			if int64(len(cp.Window)) != wl || !bytes.Equal(cp.Window, want[cp.Out-wl:cp.Out]) {
				t.Fatalf("checkpoint %d at %d: window of %d bytes, want %d", i, cp.Out, len(cp.Window), wl)
			}
		}
	}
}

// resumeAll resumes from every checkpoint and checks the whole remainder.
func resumeAll(t testing.TB, cps []Checkpoint, gz, want []byte) {
	t.Helper()
	for i, cp := range cps {
		zr, err := Resume(bytes.NewReader(gz[cp.In:]), cp)
		if err != nil {
			t.Fatalf("checkpoint %d (%+v): %v", i, cp.Out, err)
		}
		got, err := io.ReadAll(zr)
		zr.Close()
		if err != nil {
			t.Fatalf("checkpoint %d at %d (in %d bit %d): %v", i, cp.Out, cp.In, cp.Bit, err)
		}
		if !bytes.Equal(got, want[cp.Out:]) {
			t.Fatalf("checkpoint %d at %d: resumed output differs", i, cp.Out)
		}
	}
}

func TestCheckpoints(t *testing.T) {
	data := goSrcTar(t)
	for _, lv := range levels {
		gz := gzipBytes(t, data, lv.level)
		for _, span := range []int64{64 << 10, 1 << 20} {
			data, gz := data, gz
			if span < 1<<20 {
				// Resuming from every checkpoint costs len(data)^2/span: use less data.
				data = data[:1<<20]
				gz = gzipBytes(t, data, lv.level)
			}
			t.Run(fmt.Sprintf("%s/%d", lv.name, span), func(t *testing.T) {
				cps := index(t, gz, data, span)
				if want := len(data) / int(span) / 2; len(cps) < want {
					t.Fatalf("%d checkpoints, want at least %d", len(cps), want)
				}
				checkCheckpoints(t, cps, gz, data, span, []member{{0, 0}})
				resumeAll(t, cps, gz, data)
			})
		}
	}
}

func TestCheckpointsMultiMember(t *testing.T) {
	rnd := rand.New(rand.NewPCG(7, 8))
	src := goSrcTar(t)
	build := func(members int, maxLen int) (gz, want []byte, starts []member) {
		for i := 0; i < members; i++ {
			n := rnd.IntN(maxLen)
			if i%7 == 3 {
				n = 0
			}
			off := rnd.IntN(len(src) - n)
			starts = append(starts, member{int64(len(gz)), int64(len(want))})
			want = append(want, src[off:off+n]...)
			if i%2 == 1 && n < 1<<16 {
				// A single final stored block: no block boundary before the next member.
				raw := []byte{1, byte(n), byte(n >> 8), ^byte(n), ^byte(n >> 8)}
				raw = append(raw, src[off:off+n]...)
				gz = append(gz, gzipMember(gzipHeader(0, nil, "", ""), raw, src[off:off+n])...)
				continue
			}
			gz = append(gz, gzipBytes(t, src[off:off+n], levels[rnd.IntN(len(levels))].level)...)
		}
		return
	}
	for _, tc := range []struct {
		members, maxLen int
		span            int64
	}{
		{5, 600 << 10, 64 << 10},
		{5, 600 << 10, 1 << 20},
		{200, 6 << 10, 4 << 10},  // many small members: checkpoints at member starts
		{200, 6 << 10, 20 << 10}, // spans covering several members
	} {
		t.Run(fmt.Sprintf("%dx%d/%d", tc.members, tc.maxLen, tc.span), func(t *testing.T) {
			gz, want, starts := build(tc.members, tc.maxLen)
			cps := index(t, gz, want, tc.span)
			checkCheckpoints(t, cps, gz, want, tc.span, starts)
			members := 0
			for _, cp := range cps {
				if cp.Member {
					members++
				}
			}
			if tc.members > 100 && members < 5 {
				t.Fatalf("only %d member checkpoints", members)
			}
			resumeAll(t, cps, gz, want)
		})
	}
}

// Resuming with a reader that yields the input in small pieces, and with checkpoints that
// start mid-byte.
func TestResumeSmallReads(t *testing.T) {
	data := goSrcTar(t)[:1<<20]
	gz := gzipBytes(t, data, 9)
	cps := index(t, gz, data, 100<<10)
	midByte := 0
	for _, cp := range cps {
		if cp.Bit != 0 {
			midByte++
		}
		zr, err := Resume(iotest.OneByteReader(bytes.NewReader(gz[cp.In:])), cp)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, min(50000, len(data)-int(cp.Out)))
		if _, err := io.ReadFull(zr, got); err != nil {
			t.Fatal(err)
		}
		checkEqual(t, "resumed", got, data[cp.Out:cp.Out+int64(len(got))])
	}
	if midByte == 0 {
		t.Fatal("no checkpoint starts mid-byte")
	}
}

func TestResumeBadCheckpoint(t *testing.T) {
	for _, cp := range []Checkpoint{
		{Bit: 8},
		{In: -1},
		{Out: 10, Window: make([]byte, 20)},
		{Out: 1 << 20, Window: make([]byte, windowSize+1)},
		{Member: true, Bit: 1},
	} {
		if _, err := Resume(bytes.NewReader(nil), cp); err == nil {
			t.Errorf("Resume(%+v) succeeded", cp)
		}
	}
	// A truncated remainder fails instead of ending quietly.
	data := goSrcTar(t)[:300<<10]
	gz := gzipBytes(t, data, 6)
	cps := index(t, gz, data, 64<<10)
	cp := cps[len(cps)-1]
	zr, err := Resume(bytes.NewReader(gz[cp.In:len(gz)-3]), cp)
	if err == nil {
		_, err = io.ReadAll(zr)
	}
	if err == nil {
		t.Fatal("resume from truncated input succeeded")
	}
}
