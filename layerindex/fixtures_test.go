package layerindex

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

// Fixtures are made here from files on the machine and from real tools; nothing is
// downloaded.

// needTool fails the test when a program the test drives is missing, naming the Debian
// package that has it (scripts/install-deps.sh installs them all).
func needTool(t testing.TB, cmd, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(cmd); err != nil {
		t.Fatalf("%s not found: apt-get install %s (make deps)", cmd, pkg)
	}
}

func run(t testing.TB, stdin []byte, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, stderr.String())
	}
	return out
}

var (
	goTarOnce sync.Once
	goTarData []byte
)

// goTar is a tar written by archive/tar: about 6 MB of Go sources (so that small spans give
// many checkpoints) and every kind of entry a layer may hold.
func goTar(t testing.TB) []byte {
	goTarOnce.Do(func() {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		mt := time.Unix(1700000000, 0)
		add := func(h *tar.Header, body []byte) {
			if h.ModTime.IsZero() {
				h.ModTime = mt
			}
			h.Size = int64(len(body))
			if err := tw.WriteHeader(h); err != nil {
				t.Fatalf("tar header %q: %v", h.Name, err)
			}
			if _, err := tw.Write(body); err != nil {
				t.Fatal(err)
			}
		}
		add(&tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755}, nil)
		add(&tar.Header{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755}, nil)
		add(&tar.Header{Name: "bin/sh", Typeflag: tar.TypeReg, Mode: 0o4755, Uname: "root", Gname: "root"}, []byte("#!/bin/true\n"))
		add(&tar.Header{Name: "bin/ash", Typeflag: tar.TypeLink, Linkname: "bin/sh", Mode: 0o4755}, nil)
		add(&tar.Header{Name: "bin/dash", Typeflag: tar.TypeSymlink, Linkname: "sh", Mode: 0o777}, nil)
		add(&tar.Header{Name: "dev/null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3}, nil)
		add(&tar.Header{Name: "dev/sda", Typeflag: tar.TypeBlock, Mode: 0o660, Devmajor: 8, Devminor: 0, Gid: 6}, nil)
		add(&tar.Header{Name: "run/fifo", Typeflag: tar.TypeFifo, Mode: 0o600}, nil)
		add(&tar.Header{Name: "usr/bin/ping", Typeflag: tar.TypeReg, Mode: 0o755, PAXRecords: map[string]string{
			"SCHILY.xattr.security.capability": "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
			"SCHILY.xattr.user.comment":        "pong",
		}}, []byte("ELF"))
		long := strings.Repeat("very-long-directory-name/", 5) + "file"  // > 100 bytes: USTAR prefix
		longer := strings.Repeat("ridiculously-long-name-", 14) + ".txt" // > 255 bytes: PAX path
		add(&tar.Header{Name: long, Typeflag: tar.TypeReg, Mode: 0o644}, []byte("long"))
		add(&tar.Header{Name: longer, Typeflag: tar.TypeReg, Mode: 0o644}, []byte("longer"))
		add(&tar.Header{Name: "gnu/" + longer, Typeflag: tar.TypeReg, Mode: 0o644, Format: tar.FormatGNU}, []byte("gnu long name"))
		add(&tar.Header{Name: "gnu/link", Typeflag: tar.TypeSymlink, Linkname: longer, Format: tar.FormatGNU}, nil)
		add(&tar.Header{Name: "pax/link", Typeflag: tar.TypeSymlink, Linkname: longer}, nil)
		add(&tar.Header{Name: "grüße/日本語.txt", Typeflag: tar.TypeReg, Mode: 0o644}, []byte("non-ASCII"))
		add(&tar.Header{Name: "nano", Typeflag: tar.TypeReg, Mode: 0o600, ModTime: time.Unix(1700000000, 123456789), Format: tar.FormatPAX}, []byte("ns"))
		add(&tar.Header{Name: "old", Typeflag: tar.TypeReg, Mode: 0o600, ModTime: time.Unix(-86400*365, 0), Format: tar.FormatPAX}, []byte("1969"))
		add(&tar.Header{Name: "bigid", Typeflag: tar.TypeReg, Mode: 0o600, Uid: 1 << 30, Gid: 1 << 24, Uname: "nobody", Gname: "nogroup"}, []byte("ids"))
		add(&tar.Header{Name: "empty", Typeflag: tar.TypeReg, Mode: 0o644}, nil)
		add(&tar.Header{Name: "etc/.wh..wh..opq", Typeflag: tar.TypeReg}, nil)
		add(&tar.Header{Name: "etc/.wh.motd", Typeflag: tar.TypeReg}, nil)

		src := filepath.Join(runtime.GOROOT(), "src")
		total, limit := 0, 6<<20
		if testing.Short() { // the race detector's run: fewer bytes, the same kinds of entry
			limit = 1536 << 10
		}
		var paths []string
		filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() && strings.HasSuffix(p, ".go") {
				paths = append(paths, p)
			}
			return nil
		})
		sort.Strings(paths)
		for _, p := range paths {
			body, err := os.ReadFile(p)
			if err != nil {
				continue
			}
			rel, _ := filepath.Rel(runtime.GOROOT(), p)
			add(&tar.Header{Name: "usr/lib/go/" + rel, Typeflag: tar.TypeReg, Mode: 0o644}, body)
			if total += len(body); total > limit {
				break
			}
		}
		// A few incompressible bytes, so that gzip writes stored blocks too.
		noise := make([]byte, 200<<10)
		var x uint32 = 1
		for i := range noise {
			x = x*1664525 + 1013904223
			noise[i] = byte(x >> 24)
		}
		add(&tar.Header{Name: "noise.bin", Typeflag: tar.TypeReg, Mode: 0o644}, noise)
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
		goTarData = buf.Bytes()
	})
	if goTarData == nil {
		t.Fatal("building the archive/tar fixture failed")
	}
	return goTarData
}

// gnuTar is a tar written by GNU tar from a directory made here: long names, hard links,
// symlinks, a FIFO, devices, xattrs.
func gnuTar(t testing.TB, format string) []byte {
	needTool(t, "tar", "tar")
	if os.Geteuid() != 0 {
		t.Fatal("this test makes device nodes: run it as root")
	}
	dir := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	long := filepath.Join(dir, strings.Repeat("d", 120), strings.Repeat("n", 200))
	must(os.MkdirAll(filepath.Dir(long), 0o755))
	must(os.WriteFile(long, []byte("deep"), 0o640))
	must(os.WriteFile(filepath.Join(dir, "a"), bytes.Repeat([]byte("hello\n"), 5000), 0o644))
	must(os.Link(filepath.Join(dir, "a"), filepath.Join(dir, "a-link")))
	must(os.Symlink(strings.Repeat("t", 150), filepath.Join(dir, "dangling")))
	run(t, nil, "mkfifo", filepath.Join(dir, "fifo"))
	run(t, nil, "mknod", filepath.Join(dir, "null"), "c", "1", "3")
	run(t, nil, "mknod", filepath.Join(dir, "loop0"), "b", "7", "0")
	must(os.WriteFile(filepath.Join(dir, "cap"), []byte("x"), 0o755))
	must(syscall.Setxattr(filepath.Join(dir, "cap"), "user.note", []byte("hi"), 0))
	must(os.Chtimes(filepath.Join(dir, "a"), time.Unix(1600000000, 0), time.Unix(1600000000, 0)))
	return run(t, nil, "tar", "--format="+format, "--xattrs", "--xattrs-include=*", "--sort=name", "-cf", "-", "-C", dir, ".")
}

// Compressors, each a real way layers get written.

func gzipLevel(t testing.TB, data []byte, level int) []byte {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, level)
	if err != nil {
		t.Fatal(err)
	}
	zw.Write(data)
	zw.Close()
	return buf.Bytes()
}

// multiMember gzips data in n independent members, as `cat a.gz b.gz` makes.
func multiMember(t testing.TB, data []byte, n int) []byte {
	var out []byte
	step := len(data)/n + 1
	for i := 0; i < len(data); i += step {
		out = append(out, gzipLevel(t, data[i:min(i+step, len(data))], gzip.DefaultCompression)...)
	}
	return out
}

func pigz(t testing.TB, data []byte) []byte {
	needTool(t, "pigz", "pigz")
	return run(t, data, "pigz", "-c", "-6", "-p", "2")
}

func zstdCLI(t testing.TB, data []byte) []byte {
	needTool(t, "zstd", "zstd")
	return run(t, data, "zstd", "-c", "-q", "-3")
}

// zstdFrames writes data as independent zstd frames of frameSize input bytes each, with a
// skippable frame in the middle, as seekable zstd writers do.
func zstdFrames(t testing.TB, data []byte, frameSize int) []byte {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderCRC(true))
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	var out []byte
	for i := 0; i < len(data); i += frameSize {
		out = enc.EncodeAll(data[i:min(i+frameSize, len(data))], out)
		if i == 0 {
			out = append(out, 0x5a, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 'a', 'b', 'c')
		}
	}
	return out
}

// tarEntry is what archive/tar reads of one entry, the reference for the TOC.
type tarEntry struct {
	hdr  *tar.Header
	data []byte
}

func readTar(t testing.TB, data []byte) []tarEntry {
	var out []tarEntry
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("archive/tar: %v", err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("archive/tar: %s: %v", h.Name, err)
		}
		out = append(out, tarEntry{h, body})
	}
}
