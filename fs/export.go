package fs

import (
	"context"
	"errors"
	"io"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/imgfs/imgfs/export"
	"github.com/imgfs/imgfs/store"
	"github.com/opencontainers/go-digest"
)

// exportName is the docker save archive in an image directory (that tag), a repository
// directory (every tag) and a sha256:<id> directory (untagged).
const exportName = "export.tar"

// exportPlan is an archive planned on first use and kept: planning reads the manifests,
// configs and layer indexes, never layer contents. A failure is not kept: the next lookup
// plans again.
type exportPlan struct {
	mu sync.Mutex
	a  *export.Archive
}

func (p *exportPlan) get(f *FS, imgs []store.Image) (*export.Archive, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.a == nil {
		a, err := export.New(blobs{f}, imgs, f.layers)
		if err != nil {
			return nil, err
		}
		p.a = a
	}
	return p.a, nil
}

// exportNode is an export.tar: its size is the plan's, its bytes are made as they are read.
type exportNode struct {
	gofs.Inode
	fs    *FS
	a     *export.Archive
	path  string
	mtime time.Time
}

var (
	_ gofs.NodeGetattrer = (*exportNode)(nil)
	_ gofs.NodeOpener    = (*exportNode)(nil)
	_ gofs.NodeReader    = (*exportNode)(nil)
)

// lookupExport makes the node of an export.tar of imgs at path.
func lookupExport(ctx context.Context, parent *gofs.Inode, f *FS, p *exportPlan, imgs []store.Image,
	path string, mtime time.Time, ino uint64, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	a, err := p.get(f, imgs)
	if err != nil {
		f.log.Error("planning export", "path", path, "err", err)
		return nil, syscall.EIO
	}
	n := &exportNode{fs: f, a: a, path: path, mtime: mtime}
	n.attr(&out.Attr)
	// The kernel asks again before every open (an entry cached for 1 ns), and the file
	// opened next reads ahead more: see Options.ReadAhead.
	out.SetEntryTimeout(time.Nanosecond)
	f.opts.ReadAhead.Raise()
	return parent.NewInode(ctx, n, gofs.StableAttr{Mode: syscall.S_IFREG, Ino: ino}), 0
}

// attr gives export.tar mode 0444, or 0400 and the mount owner's uid and gid when other
// users are let in: its bytes are those of every file of its images, 0600 ones included,
// which the kernel would otherwise hand to anyone (see Options.AllowOther).
func (n *exportNode) attr(a *fuse.Attr) {
	fileAttr(a, n.a.Size(), 1<<20, n.mtime)
	if n.fs.opts.AllowOther {
		a.Mode = syscall.S_IFREG | 0o400
		a.Uid, a.Gid = n.fs.uid, n.fs.gid
	}
}

func (n *exportNode) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.attr(&out.Attr)
	return 0
}

func (n *exportNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	return openMadeUp(flags)
}

// Read answers with the decoded spans themselves, not a copy (and with dest for plain
// layers): go-fuse writes them to the kernel with one writev and then calls Done, which
// gives them back to the cache.
func (n *exportNode) Read(ctx context.Context, fh gofs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	n.fs.opts.ReadAhead.Lower() // the file reading has its read-ahead
	res, err := readLent(n.a, dest, off)
	if err != nil {
		var layer digest.Digest
		if le := (*export.LayerError)(nil); errors.As(err, &le) {
			layer = le.Layer
		}
		n.fs.readFailed(layer, "reading export", "path", n.path, "offset", off, "err", err)
		return nil, syscall.EIO
	}
	return res, 0
}

// readLent reads len(dest) bytes at off from p (fewer at its end), answering with the
// slices p lends, given back when go-fuse is done with them.
func readLent(p export.Pinner, dest []byte, off int64) (fuse.ReadResult, error) {
	bufs, release, err := p.ReadPinned(dest, off)
	if err != nil && !errors.Is(err, io.EOF) {
		release()
		return nil, err
	}
	return &lentResult{bufs: bufs, release: release}, nil
}

// lentResult is a read reply made of borrowed slices. go-fuse sends a result that has a
// Slices method with writev and calls Done after the write.
type lentResult struct {
	bufs    [][]byte
	release func()
}

func (r *lentResult) Slices() ([][]byte, fuse.Status) { return r.bufs, fuse.OK }

func (r *lentResult) Size() int {
	n := 0
	for _, b := range r.bufs {
		n += len(b)
	}
	return n
}

func (r *lentResult) Bytes(buf []byte) ([]byte, fuse.Status) {
	buf = buf[:0]
	for _, b := range r.bufs {
		buf = append(buf, b...)
	}
	return buf, fuse.OK
}

func (r *lentResult) Done() { r.release() }
