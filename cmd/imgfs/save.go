package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/distribution/reference"
	"github.com/imgfs/imgfs/export"
	"github.com/imgfs/imgfs/store"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

func newSaveCmd(g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "save [flags] REF...",
		Short: "Write images to a docker save archive (tar), to stdout by default",
		Long: `Write images as docker save (Docker Engine 25+) does: the archive docker load, podman
load, skopeo and containerd read. A name without a tag saves every tag of that repository;
an image ID saves the image untagged. The archive is streamed from the stored layers, with
no temporary copy; with -o it is written to a temporary file beside FILE and renamed.`,
		Args: minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := g.open()
			if err != nil {
				return err
			}
			var imgs []store.Image
			for _, ref := range args {
				found, err := saveRefs(s, ref)
				if err != nil {
					return err
				}
				imgs = append(imgs, found...)
			}
			out := cmd.OutOrStdout()
			if output == "" {
				if f, ok := out.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
					return errors.New("cowardly refusing to save to a terminal. Use the -o flag or redirect")
				}
			}
			layers := s.NewLayers(nil, 0)
			defer layers.Close()
			a, err := export.New(s, imgs, layers)
			if err != nil {
				return err
			}
			if output == "" {
				_, err := a.WriteTo(withProgress(cmd.ErrOrStderr(), out, a.Size()))
				return err
			}
			return writeFileAtomic(output, func(w io.Writer) error {
				_, err := a.WriteTo(withProgress(cmd.ErrOrStderr(), w, a.Size()))
				return err
			})
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "write to FILE instead of stdout")
	return cmd
}

// saveRefs finds what ref names for save, as docker save does: a repository name without
// a tag is every tag of it; a name with a tag is that name; anything else (an ID, a
// digest) is the image without a name.
func saveRefs(s *store.Store, ref string) ([]store.Image, error) {
	if named, err := reference.ParseNormalizedNamed(ref); err == nil && reference.IsNameOnly(named) {
		all, err := s.Images()
		if err != nil && len(all) == 0 {
			return nil, err
		}
		var imgs []store.Image
		for _, img := range all {
			if t, ok := img.Name.(reference.Tagged); ok && img.Name.Name() == named.Name() && t.Tag() != "" {
				imgs = append(imgs, img)
			}
		}
		if len(imgs) > 0 {
			return imgs, nil
		}
	}
	img, err := s.Resolve(ref)
	if err != nil {
		return nil, err
	}
	named, err := reference.ParseDockerRef(ref)
	if err != nil || img.Name == nil || named.String() != img.Name.String() {
		img.Name = nil // an ID or a digest: saved untagged, as docker does
	} else if _, ok := named.(reference.Tagged); !ok {
		img.Name = nil
	}
	return []store.Image{img}, nil
}

// withProgress shows a bar for the size bytes written through w when errOut is a terminal.
func withProgress(errOut io.Writer, w io.Writer, size int64) io.Writer {
	p := newProgress(errOut, "Saving")
	if !p.d.terminal() {
		return w
	}
	p.Start("export", "", size)
	return &progressWriter{w: w, p: p, total: size}
}

type progressWriter struct {
	w     io.Writer
	p     *blobProgress
	n     int64
	total int64
}

func (pw *progressWriter) Write(b []byte) (int, error) {
	n, err := pw.w.Write(b)
	pw.p.Add("export", int64(n))
	if pw.n += int64(n); pw.n >= pw.total || err != nil {
		pw.p.Done("export", err)
		pw.p.Wait()
	}
	return n, err
}

// writeFileAtomic writes path through a temporary file in its directory, synced and
// renamed over path once write succeeds; on failure nothing is left behind.
func writeFileAtomic(path string, write func(io.Writer) error) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := write(tmp); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
