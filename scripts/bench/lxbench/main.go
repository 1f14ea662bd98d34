// Command lxbench measures the layer index on realistic layers: how big an index is, what a
// cold random read costs against a full gunzip, and how much memory indexing takes. It is
// driven by scripts/bench/layerindex.sh; every figure is printed next to its baseline from
// the same run.
package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"syscall"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/imgfs/imgfs/layerindex"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: lxbench mktar|mkmany|index|random|mkoci|floor ...")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "mktar":
		err = mktar(os.Args[2:])
	case "mkmany":
		err = mkmany(os.Args[2:])
	case "index":
		err = index(os.Args[2:])
	case "random":
		err = random(os.Args[2:])
	case "mkoci":
		err = mkoci(os.Args[2:])
	case "floor":
		err = floor(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "lxbench:", err)
		os.Exit(1)
	}
}

// mktar writes a tar of about -size bytes of this machine's own files (/usr/share, /usr/lib,
// GOROOT: text, binaries, images, as a distro layer holds), repeating the tree under new
// prefixes if the machine has too little.
func mktar(args []string) error {
	fl := flag.NewFlagSet("mktar", flag.ExitOnError)
	size := fl.Int64("size", 300<<20, "bytes of file data")
	out := fl.String("o", "layer.tar", "output")
	fl.Parse(args)
	// GOROOT first: its mix of sources, test data and binaries is what application layers
	// hold; then a distro's share and lib trees. Files over 8 MiB (a few huge shared
	// libraries) are left out so the entry count stays realistic (~18k for 300 MB).
	roots := []string{"/usr/local/go", "/usr/share", "/usr/lib"}
	f, err := os.Create(*out)
	if err != nil {
		return err
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	tw := tar.NewWriter(bw)
	var total int64
	files := 0
	for round := 0; total < *size; round++ {
		before := total
		for _, root := range roots {
			filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
				if err != nil || total >= *size {
					return filepath.SkipDir
				}
				info, err := d.Info()
				if err != nil {
					return nil
				}
				name := fmt.Sprintf("r%d%s", round, p)
				h := &tar.Header{Name: name, Mode: int64(info.Mode().Perm()), ModTime: info.ModTime().Truncate(time.Second), Format: tar.FormatPAX}
				switch {
				case d.IsDir():
					h.Typeflag, h.Name = tar.TypeDir, name+"/"
				case d.Type()&fs.ModeSymlink != 0:
					h.Typeflag = tar.TypeSymlink
					h.Linkname, _ = os.Readlink(p)
				case d.Type().IsRegular() && info.Size() <= 8<<20:
					h.Typeflag, h.Size = tar.TypeReg, info.Size()
				default:
					return nil
				}
				var body []byte
				if h.Typeflag == tar.TypeReg {
					if body, err = os.ReadFile(p); err != nil || int64(len(body)) != h.Size {
						return nil
					}
				}
				if err := tw.WriteHeader(h); err != nil {
					return err
				}
				tw.Write(body)
				total += int64(len(body))
				files++
				return nil
			})
		}
		if total == before {
			return fmt.Errorf("no files under %v", roots)
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	fmt.Printf("mktar: %s: %d entries, %d MB of file data\n", *out, files, total>>20)
	return bw.Flush()
}

// mkmany writes a gzip layer of -files small files (a few bytes each), -per to a directory:
// the image of many entries and little data that bounds the memory of the table of contents.
func mkmany(args []string) error {
	fl := flag.NewFlagSet("mkmany", flag.ExitOnError)
	files := fl.Int("files", 1000000, "files")
	per := fl.Int("per", 1000, "files per directory")
	out := fl.String("o", "many.tar.gz", "output")
	fl.Parse(args)
	f, err := os.Create(*out)
	if err != nil {
		return err
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	zw, err := gzip.NewWriterLevel(bw, gzip.DefaultCompression)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(zw)
	mtime := time.Unix(1700000000, 0)
	dirs := 0
	for i := 0; i < *files; i++ {
		if i%*per == 0 {
			h := &tar.Header{Typeflag: tar.TypeDir, Name: fmt.Sprintf("d%04d/", i / *per), Mode: 0o755, ModTime: mtime, Format: tar.FormatUSTAR}
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
			dirs++
		}
		body := []byte(fmt.Sprintf("%d\n", i))
		h := &tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("d%04d/f%05d", i / *per, i), Mode: 0o644,
			Size: int64(len(body)), ModTime: mtime, Format: tar.FormatUSTAR}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if _, err := tw.Write(body); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	fmt.Printf("mkmany: %s: %d files in %d directories\n", *out, *files, dirs)
	return bw.Flush()
}

// index builds the index of a blob and reports its size and the process's peak RSS.
func index(args []string) error {
	fl := flag.NewFlagSet("index", flag.ExitOnError)
	span := fl.Int64("span", layerindex.DefaultSpanSize, "span size")
	fl.Parse(args)
	f, err := os.Open(fl.Arg(0))
	if err != nil {
		return err
	}
	defer f.Close()
	start := time.Now()
	ix, err := layerindex.Build(f, layerindex.BuildOptions{SpanSize: *span})
	if err != nil {
		return err
	}
	took := time.Since(start)
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	peakBuild := ru.Maxrss >> 10
	// What the index itself takes in memory: the live heap once the pass's garbage is gone.
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	live := ms.HeapAlloc >> 20
	enc, err := ix.MarshalBinary()
	if err != nil {
		return err
	}
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	fmt.Printf("index: %s %s: %d MB uncompressed, %d entries, %d checkpoints, built in %.2fs (%.0f MB/s uncompressed)\n",
		filepath.Base(fl.Arg(0)), ix.Compression, ix.Size>>20, ix.TOC.Len(), len(ix.Checkpoints),
		took.Seconds(), float64(ix.Size)/1e6/took.Seconds())
	fmt.Printf("index: file %d bytes = %.3f%% of the uncompressed layer\n", len(enc), 100*float64(len(enc))/float64(ix.Size))
	fmt.Printf("index: peak RSS %d MiB while indexing, of which the index itself (TOC and checkpoints, live heap) %d MiB: %d MiB beyond it; %d MiB peak once encoded\n",
		peakBuild, live, peakBuild-int64(live), ru.Maxrss>>10)
	return nil
}

// floor measures the work a pull cannot leave out, in CPU seconds of this process (all
// its threads): for each gzip layer blob given, the sha256 of the blob (its digest) and
// layerindex.Build of it as a pull runs it (the blob already verified): inflating it, the
// sha256 of the tar (its diffID) and the index. The blobs are read into memory first,
// untimed, and hashed once untimed too (a first pass over fresh memory ran at a third of
// the speed): no disk and no network in the figure. Built with -tags=isal, as imgfs is.
func floor(args []string) error {
	var blobs [][]byte
	var digests []digest.Digest
	for _, name := range args {
		b, err := os.ReadFile(name)
		if err != nil {
			return err
		}
		blobs = append(blobs, b)
		digests = append(digests, digest.FromBytes(b))
	}
	cpu := func() float64 {
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
	}
	var hashing, indexing float64
	for i, b := range blobs {
		c0 := cpu()
		if digest.FromBytes(b) != digests[i] {
			return fmt.Errorf("%s: hashed twice, two digests", args[i])
		}
		c1 := cpu()
		if _, err := layerindex.Build(bytes.NewReader(b), layerindex.BuildOptions{Digest: digests[i], Verified: true}); err != nil {
			return fmt.Errorf("%s: %v", args[i], err)
		}
		c2 := cpu()
		hashing += c1 - c0
		indexing += c2 - c1
	}
	fmt.Printf("floor: %.2f CPU-s (sha256 of the blobs %.2f, inflating, diffIDs and indexes %.2f)\n",
		hashing+indexing, hashing, indexing)
	return nil
}

// random times cold random 4 KiB reads deep in a layer (a fresh cache for each, so each
// decodes its span from the checkpoint before it) against one full gunzip of the blob.
func random(args []string) error {
	fl := flag.NewFlagSet("random", flag.ExitOnError)
	n := fl.Int("n", 100, "reads")
	span := fl.Int64("span", layerindex.DefaultSpanSize, "span size")
	fl.Parse(args)
	blob, err := os.ReadFile(fl.Arg(0))
	if err != nil {
		return err
	}
	ix, err := layerindex.Build(bytes.NewReader(blob), layerindex.BuildOptions{SpanSize: *span})
	if err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var lat []time.Duration
	buf := make([]byte, 4096)
	for i := 0; i < *n; i++ {
		off := ix.Size/2 + rng.Int64N(ix.Size/2-4096)
		r, err := layerindex.NewReader(bytes.NewReader(blob), ix, layerindex.NewCache(0))
		if err != nil {
			return err
		}
		t := time.Now()
		if _, err := r.ReadAt(buf, off); err != nil {
			return err
		}
		lat = append(lat, time.Since(t))
		r.Close()
	}
	slices.Sort(lat)
	var full []time.Duration
	for i := 0; i < 3; i++ {
		t := time.Now()
		zr, err := gzip.NewReader(bytes.NewReader(blob))
		if err != nil {
			return err
		}
		if _, err := io.Copy(io.Discard, zr); err != nil {
			return err
		}
		full = append(full, time.Since(t))
	}
	slices.Sort(full)
	// A sequential reader through the index, 1 MiB reads, cold cache: read-ahead decodes
	// the next spans on the other cores.
	var seq []time.Duration
	for i := 0; i < 3; i++ {
		r, err := layerindex.NewReader(bytes.NewReader(blob), ix, layerindex.NewCache(0))
		if err != nil {
			return err
		}
		t := time.Now()
		if _, err := io.CopyBuffer(io.Discard, io.NewSectionReader(r, 0, r.Size()), make([]byte, 1<<20)); err != nil {
			return err
		}
		seq = append(seq, time.Since(t))
		r.Close()
	}
	slices.Sort(seq)
	med := lat[len(lat)/2]
	fmt.Printf("random: %d cold 4 KiB reads in the second half of %s (span %d MiB): median %v, p90 %v\n",
		*n, filepath.Base(fl.Arg(0)), *span>>20, med.Round(time.Microsecond), lat[len(lat)*9/10].Round(time.Microsecond))
	fmt.Printf("random: full gunzip (klauspost) median %v: a cold read costs %.4f of it (%.0fx faster)\n",
		full[1].Round(time.Millisecond), float64(med)/float64(full[1]), float64(full[1])/float64(med))
	fmt.Printf("sequential: whole stream through the index (1 MiB reads, read-ahead on %d cores) median %v = %.0f MB/s, %.2fx the single-thread gunzip\n",
		runtime.GOMAXPROCS(0), seq[1].Round(time.Millisecond), float64(ix.Size)/1e6/seq[1].Seconds(), float64(full[1])/float64(seq[1]))
	return nil
}

// mkoci writes an OCI image layout holding one image (ref.name busybox-like NAME) whose
// layers are the given gzip blobs, bottom first: the input of the import benchmark.
func mkoci(args []string) error {
	fl := flag.NewFlagSet("mkoci", flag.ExitOnError)
	out := fl.String("o", "layout", "output directory")
	name := fl.String("name", "bench/app:1", "org.opencontainers.image.ref.name")
	fl.Parse(args)
	blobs := filepath.Join(*out, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		return err
	}
	put := func(b []byte) (digest.Digest, error) {
		d := digest.FromBytes(b)
		return d, os.WriteFile(filepath.Join(blobs, d.Encoded()), b, 0o644)
	}
	var layers []ocispec.Descriptor
	var diffIDs []digest.Digest
	for _, path := range fl.Args() {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		blob := digest.SHA256.Digester()
		zr, err := gzip.NewReader(io.TeeReader(f, blob.Hash()))
		if err != nil {
			return err
		}
		diff := digest.SHA256.Digester()
		if _, err := io.Copy(diff.Hash(), zr); err != nil {
			return err
		}
		io.Copy(blob.Hash(), f) // gzip trailer padding, if any
		st, _ := f.Stat()
		f.Close()
		layers = append(layers, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: blob.Digest(), Size: st.Size()})
		diffIDs = append(diffIDs, diff.Digest())
		if err := os.Link(path, filepath.Join(blobs, blob.Digest().Encoded())); err != nil && !os.IsExist(err) {
			return err
		}
	}
	created := time.Unix(1700000000, 0).UTC()
	config, _ := json.Marshal(ocispec.Image{Created: &created, Platform: ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH},
		RootFS: ocispec.RootFS{Type: "layers", DiffIDs: diffIDs}})
	cd, err := put(config)
	if err != nil {
		return err
	}
	manifest, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		Config: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: cd, Size: int64(len(config))}, Layers: layers})
	md, err := put(manifest)
	if err != nil {
		return err
	}
	index, _ := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageManifest, Digest: md, Size: int64(len(manifest)),
			Annotations: map[string]string{ocispec.AnnotationRefName: *name}}}})
	if err := os.WriteFile(filepath.Join(*out, "index.json"), index, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(*out, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
}
