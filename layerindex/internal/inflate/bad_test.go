package inflate

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
)

// gunzipErr decodes gz fully with ours and returns the error (nil on success).
func gunzipErr(gz []byte) error {
	zr, err := NewGzipReader(bytes.NewReader(gz), 1000, func(Checkpoint) {})
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, zr)
	return err
}

func inflateErr(raw []byte) error {
	_, err := io.Copy(io.Discard, NewReader(bytes.NewReader(raw)))
	return err
}

// wantErr checks err is an *Error at the given byte offset (or any, if at < 0) whose
// message contains msg.
func wantErr(t *testing.T, what string, err error, at int64, msg string) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("%s: got %v (%T), want *Error", what, err, err)
	}
	if at >= 0 && e.Offset != at {
		t.Errorf("%s: error at byte %d, want %d: %v", what, e.Offset, at, err)
	}
	if !strings.Contains(err.Error(), msg) || !strings.Contains(err.Error(), fmt.Sprintf("at byte %d", e.Offset)) {
		t.Errorf("%s: error %q does not say %q and where", what, err, msg)
	}
	return e
}

func TestTruncated(t *testing.T) {
	data := goSrcTar(t)[:40<<10]
	for _, lv := range levels {
		gz := gzipBytes(t, data, lv.level)
		two := append(gz[:len(gz):len(gz)], gz...)
		raw := deflate(t, data, lv.level)
		step := max(1, len(gz)/200)
		if raceEnabled {
			step = max(1, len(gz)/50)
		}
		for n := 0; n < len(two); n++ {
			if n > 50 && n < len(two)-50 && n%step != 0 && n != len(gz)-1 && n != len(gz)+1 {
				continue
			}
			if n == len(gz) {
				continue // a whole member
			}
			err := gunzipErr(two[:n])
			what := fmt.Sprintf("%s gzip cut at %d of %d", lv.name, n, len(two))
			e := wantErr(t, what, err, -1, "")
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("%s: %v is not io.ErrUnexpectedEOF", what, err)
			}
			if e.Offset > int64(n) {
				t.Fatalf("%s: error at byte %d past the end", what, e.Offset)
			}
			if n < len(raw) {
				err := inflateErr(raw[:n])
				if !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("%s raw cut at %d: %v", lv.name, n, err)
				}
				wantErr(t, "raw", err, -1, "unexpected EOF")
			}
		}
	}
}

func TestBadTrailer(t *testing.T) {
	data := goSrcTar(t)[:50<<10]
	m1 := gzipBytes(t, data, 6)
	m2 := gzipBytes(t, data[:1000], 1)
	for i, what := range []string{"CRC-32 mismatch", "CRC-32 mismatch", "ISIZE mismatch", "ISIZE mismatch"} {
		off := []int{8, 5, 4, 1}[i]
		// In the first member, and in the second.
		gz := append(append([]byte(nil), m1...), m2...)
		gz[len(m1)-off] ^= 0x10
		wantErr(t, what, gunzipErr(gz), 0, what)
		gz = append(append([]byte(nil), m1...), m2...)
		gz[len(gz)-off] ^= 0x10
		wantErr(t, what, gunzipErr(gz), int64(len(m1)), what)
	}
}

func TestBadHeader(t *testing.T) {
	data := []byte("data")
	gz := gzipBytes(t, data, 6)
	raw := deflate(t, data, 6)
	for _, tc := range []struct {
		name string
		gz   []byte
		at   int64
		msg  string
	}{
		{"bad magic", append([]byte{0x1f, 0x8c}, gz[2:]...), 0, "bad magic"},
		{"bad method", append([]byte{0x1f, 0x8b, 7}, gz[3:]...), 0, "compression method"},
		{"reserved flags", gzipMember(gzipHeader(0x40, nil, "", ""), raw, data), 0, "reserved"},
		{"header CRC", func() []byte {
			m := gzipMember(gzipHeader(flagHdrCRC|flagName, nil, "x", ""), raw, data)
			m[12] ^= 1
			return m
		}(), 0, "header CRC"},
		{"garbage after member", append(gz[:len(gz):len(gz)], "garbage!!!!!!!!"...), int64(len(gz)), "bad magic"},
		{"zeros after member", append(gz[:len(gz):len(gz)], make([]byte, 20)...), int64(len(gz)), "bad magic"},
		{"short garbage after member", append(gz[:len(gz):len(gz)], 0x1f), int64(len(gz)), "unexpected EOF"},
		{"bad magic in second member", append(gz[:len(gz):len(gz)], append([]byte{0x1f, 0x8b, 9}, gz[3:]...)...), int64(len(gz)), "compression method"},
	} {
		wantErr(t, tc.name, gunzipErr(tc.gz), tc.at, tc.msg)
		if _, err := stdGunzip(tc.gz); err == nil && tc.name != "reserved flags" {
			t.Errorf("%s: compress/gzip accepts it", tc.name)
		}
	}
}

func TestBadDeflate(t *testing.T) {
	var w bitWriter
	w.bits(1, 1)
	w.bits(1, 2)
	w.fixedLit('a')
	w.fixedLit('b')
	w.fixedMatch(3, 3) // distance code too far back, at bit 3+8+8+7 = 26
	w.fixedLit(256)
	tooFar := w.bytes()

	w = bitWriter{}
	w.bits(1, 1)
	w.bits(1, 2)
	w.fixedLit(286) // bit 3
	badLit := w.bytes()

	w = bitWriter{}
	w.bits(1, 1)
	w.bits(1, 2)
	w.fixedLit('a')
	w.fixedLit(257)
	w.code(30, 5) // bit 3+8+7 = 18
	badDist := w.bytes()

	completeLit := append(append(fill(256, 9), fill(28, 6)...), 5, 5) // 1/2 + 28/64 + 2/32
	for _, tc := range []struct {
		name    string
		raw     []byte
		at, bit int
		msg     string
	}{
		{"block type 3", []byte{0x07}, 0, 0, "invalid block type 3"},
		{"stored length", []byte{0x01, 0x05, 0x00, 0xfa, 0xfe}, 0, 0, "stored block length"},
		{"too far back", tooFar, 3, 2, "too far back"},
		{"fixed code 286", badLit, 0, 3, "invalid literal/length code"},
		{"fixed distance 30", badDist, 2, 2, "invalid distance code"},
		{"lit over-subscribed", dynamicBlock(fill(286, 8), []uint8{1}), 0, 0, "over-subscribed"},
		{"lit incomplete", dynamicBlock(fill(257, 9), []uint8{1}), 0, 0, "incomplete"},
		{"dist incomplete", dynamicBlock(completeLit, []uint8{2}), 0, 0, "incomplete"},
		{"dist over-subscribed", dynamicBlock(completeLit, []uint8{1, 1, 1}), 0, 0, "over-subscribed"},
		{"no end of block", dynamicBlock(append(fill(256, 8), 0), []uint8{1}), 0, 0, "end-of-block"},
		{"too many codes", dynamicBlock(append(fill(256, 9), fill(31, 8)...), []uint8{1}), 0, 0, "too many"},
	} {
		err := inflateErr(tc.raw)
		e := wantErr(t, tc.name, err, int64(tc.at), tc.msg)
		if e != nil && int(e.Bit) != tc.bit {
			t.Errorf("%s: error at bit %d, want %d: %v", tc.name, e.Bit, tc.bit, err)
		}
		if _, err := stdInflate(tc.raw); err == nil {
			t.Errorf("%s: compress/flate accepts it", tc.name)
		}
		// The same inside a gzip member: the error names the DEFLATE position.
		gz := append(gzipHeader(0, nil, "", ""), tc.raw...)
		gz = append(gz, make([]byte, 8)...)
		wantErr(t, tc.name+" in gzip", gunzipErr(gz), int64(tc.at+10), tc.msg)
	}
	// A valid dynamic header built the same way decodes.
	ok := dynamicBlock(completeLit, []uint8{1, 1})
	if err := inflateErr(ok); err == nil || strings.Contains(err.Error(), "Huffman code") {
		t.Errorf("valid dynamic header: %v", err)
	}
}

// Random corruptions of valid streams: ours and the standard library agree on success or
// failure (and output), and ours never panics.
func TestCorruptionAgreement(t *testing.T) {
	rnd := rand.New(rand.NewPCG(9, 10))
	data := goSrcTar(t)[:20<<10]
	n := 1500
	if testing.Short() || raceEnabled {
		n = 400
	}
	for _, lv := range levels {
		raw := deflate(t, data, lv.level)
		gz := append(gzipBytes(t, data, lv.level), gzipBytes(t, data[:3000], lv.level)...)
		for i := 0; i < n/len(levels); i++ {
			r := append([]byte(nil), raw...)
			g := append([]byte(nil), gz...)
			for k := 0; k <= rnd.IntN(3); k++ {
				r[rnd.IntN(len(r))] ^= 1 << rnd.IntN(8)
				g[rnd.IntN(len(g))] ^= 1 << rnd.IntN(8)
			}
			compareInflate(t, r)
			compareGunzip(t, g)
		}
	}
}
