//go:build !isal || !cgo

package layerindex

import (
	"io"

	"github.com/imgfs/imgfs/layerindex/internal/inflate"
)

// haveISAL is false: built without the isal tag (or without cgo), every span goes through
// our inflater.
const haveISAL = false

func inflateSpan(blob io.ReaderAt, in section, bit uint8, window []byte, member bool, out []byte) error {
	panic("layerindex: built without ISA-L")
}

func newISALGzip(r io.Reader, span int64, onCP func(inflate.Checkpoint)) (io.ReadCloser, error) {
	panic("layerindex: built without ISA-L")
}

func inflateWindow(comp []byte, n int) ([]byte, error) {
	panic("layerindex: built without ISA-L")
}
