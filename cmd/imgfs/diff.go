package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"

	"github.com/imgfs/imgfs/layerindex"
	"github.com/imgfs/imgfs/layerindex/overlay"
	"github.com/imgfs/imgfs/store"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/cobra"
)

// diffRow is one line of `imgfs diff --format json`.
type diffRow struct {
	Kind string `json:"kind"` // A, C or D
	Path string `json:"path"`
	Size int64  `json:"size"` // of the file in REF (in BASE for D); 0 for a directory
}

func newDiffCmd(g *globals) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "diff [flags] [BASE] REF",
		Short: "List what an image's rootfs adds, changes and deletes relative to another's",
		Long: `List what REF's rootfs/ adds (A), changes (C) and deletes (D) relative to BASE's, one path
a line, sorted, in docker diff's format. With REF alone, BASE is REF's parent: the same image
without its top layer, so the list is what the top layer did, as docker diff lists what a
container did. Everything below an added directory is listed; below a deleted one, only the
directory. A path changes when its type, mode, owner, size, link target, device numbers,
extended attributes or contents differ. Contents are read only where all the rest is equal
and the two files come from different layers: what both images take from one layer is
equal unread.`,
		Args: rangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if format != "" && format != "table" && format != "json" {
				return usageError{fmt.Errorf("invalid --format %q: want table or json", format)}
			}
			s, err := g.open()
			if err != nil {
				return err
			}
			ref, err := s.Resolve(args[len(args)-1])
			if err != nil {
				return err
			}
			newLayers := ref.Manifest.Layers
			var oldLayers []ocispec.Descriptor
			if len(args) == 2 {
				base, err := s.Resolve(args[0])
				if err != nil {
					return err
				}
				oldLayers = base.Manifest.Layers
			} else if len(newLayers) > 0 {
				oldLayers = newLayers[:len(newLayers)-1]
			}
			changes, old, new, err := diffImages(s, oldLayers, newLayers)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if format == "json" {
				rows := make([]diffRow, 0, len(changes))
				for _, c := range changes {
					t := new
					if c.Kind == 'D' {
						t = old
					}
					r := diffRow{Kind: string(c.Kind), Path: c.Path}
					if !t.IsDir(c.Node) {
						_, e := t.Entry(c.Node)
						r.Size = e.Size
					}
					rows = append(rows, r)
				}
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(rows)
			}
			for _, c := range changes {
				if _, err := fmt.Fprintf(out, "%c %s\n", c.Kind, c.Path); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&format, "format", "table", "output format: table or json (with sizes)")
	return cmd
}

// diffImages compares the rootfs trees of two lists of layers, reading the contents of
// files only where the trees cannot tell them equal.
func diffImages(s *store.Store, oldLayers, newLayers []ocispec.Descriptor) ([]overlay.Change, *overlay.Tree, *overlay.Tree, error) {
	old, err := mergeLayers(s, oldLayers)
	if err != nil {
		return nil, nil, nil, err
	}
	new, err := mergeLayers(s, newLayers)
	if err != nil {
		return nil, nil, nil, err
	}
	pool := s.NewLayers(nil, 0)
	defer pool.Close()
	same := func(ol int, o layerindex.Entry, nl int, n layerindex.Entry) (bool, error) {
		a, _, err := pool.Layer(oldLayers[ol])
		if err != nil {
			return false, err
		}
		b, _, err := pool.Layer(newLayers[nl])
		if err != nil {
			return false, err
		}
		// As a mount reads a file: only from where its own tar header says it is.
		if err := layerindex.CheckHeader(a, o); err != nil {
			return false, fmt.Errorf("layer %s: %w", oldLayers[ol].Digest, err)
		}
		if err := layerindex.CheckHeader(b, n); err != nil {
			return false, fmt.Errorf("layer %s: %w", newLayers[nl].Digest, err)
		}
		return sameBytes(io.NewSectionReader(a, o.Offset, o.Size), io.NewSectionReader(b, n.Offset, n.Size))
	}
	changes, err := overlay.Diff(old, new, same)
	return changes, old, new, err
}

// mergeLayers builds the rootfs tree of layers from their indexes (built where missing).
func mergeLayers(s *store.Store, layers []ocispec.Descriptor) (*overlay.Tree, error) {
	ixs := make([]*layerindex.Index, len(layers))
	for i, l := range layers {
		ix, err := s.LayerIndex(l)
		if err != nil {
			return nil, fmt.Errorf("layer %s: %w", l.Digest, err)
		}
		ixs[i] = ix
	}
	return overlay.Merge(ixs)
}

// sameBytes says whether a and b, of equal length, hold the same bytes.
func sameBytes(a, b io.Reader) (bool, error) {
	const chunk = 256 << 10
	ba, bb := make([]byte, chunk), make([]byte, chunk)
	for {
		na, ea := io.ReadFull(a, ba)
		nb, eb := io.ReadFull(b, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			return false, nil
		}
		if ea == io.EOF || ea == io.ErrUnexpectedEOF {
			return eb == io.EOF || eb == io.ErrUnexpectedEOF, nil
		}
		if ea != nil {
			return false, ea
		}
		if eb != nil && eb != io.EOF && eb != io.ErrUnexpectedEOF {
			return false, eb
		}
	}
}
