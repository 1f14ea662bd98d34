package fs

import (
	"context"
	"errors"
	"io"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/imgfs/imgfs/export"
)

// layerTarNode is layers/N.tar: layer N's uncompressed tar stream, the bytes whose sha256
// is its diffID, read at any offset through the mount's pool of layers.
type layerTarNode struct {
	gofs.Inode
	im    *image
	layer int
	size  int64
	path  string
	mtime time.Time
}

var (
	_ gofs.NodeGetattrer = (*layerTarNode)(nil)
	_ gofs.NodeOpener    = (*layerTarNode)(nil)
	_ gofs.NodeReader    = (*layerTarNode)(nil)
)

// attr gives N.tar the modes export.tar has, for the same reason: under AllowOther it is
// 0400 and the mount owner's, as it holds the bytes of every file of the layer.
func (n *layerTarNode) attr(a *fuse.Attr) {
	fileAttr(a, n.size, 1<<20, n.mtime)
	if f := n.im.fs; f.opts.AllowOther {
		a.Mode = syscall.S_IFREG | 0o400
		a.Uid, a.Gid = f.uid, f.gid
	}
}

func (n *layerTarNode) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.attr(&out.Attr)
	return 0
}

func (n *layerTarNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	return openMadeUp(flags)
}

// Read lends the decoded spans, as export.tar's Read does.
func (n *layerTarNode) Read(ctx context.Context, fh gofs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	f := n.im.fs
	f.opts.ReadAhead.Lower() // the file reading has its read-ahead
	if off >= n.size {
		return fuse.ReadResultData(nil), 0
	}
	dest = dest[:min(int64(len(dest)), n.size-off)]
	fail := func(err error) (fuse.ReadResult, syscall.Errno) {
		f.readFailed(n.im.img.Manifest.Layers[n.layer].Digest, "read failed", "image", n.im.label,
			"path", n.path, "offset", off, "err", err)
		return nil, syscall.EIO
	}
	r, err := n.im.layer(n.layer)
	if err != nil {
		return fail(err)
	}
	if p, ok := r.(export.Pinner); ok {
		res, err := readLent(p, dest, off)
		if err != nil {
			return fail(err)
		}
		return res, 0
	}
	got, err := r.ReadAt(dest, off)
	if err != nil && !(errors.Is(err, io.EOF) && got == len(dest)) {
		return fail(err)
	}
	return fuse.ReadResultData(dest[:got]), 0
}
