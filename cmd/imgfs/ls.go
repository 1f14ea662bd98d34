package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/distribution/reference"
	"github.com/imgfs/imgfs/store"
	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"
)

const none = "<none>"

// lsRow is one line of `imgfs ls`: one name of an image (or an image without name).
type lsRow struct {
	Repository string        `json:"repository"` // familiar name ("busybox"), or <none>
	Tag        string        `json:"tag"`        // or <none>
	Name       string        `json:"name,omitempty"`
	ID         digest.Digest `json:"id"`     // config digest
	Digest     digest.Digest `json:"digest"` // of the manifest or image index index.json names
	Created    time.Time     `json:"created,omitzero"`
	// Size is docker's: the layers' uncompressed sizes added up, when every layer has
	// been indexed; else CompressedSize (reading the layers to find out is not worth it).
	Size           int64 `json:"size"`
	CompressedSize int64 `json:"compressedSize"`
}

func newLsCmd(g *globals) *cobra.Command {
	var format string
	var quiet bool
	cmd := &cobra.Command{
		Use:     "ls [flags] [REPOSITORY[:TAG]]",
		Aliases: []string{"images", "list"},
		Short:   "List the images in the store",
		Long: `List the images in the store, newest first, as docker images does: one line per name,
<none> for an image without one. SIZE is the sum of the layers' uncompressed sizes once their
indexes are built (at import, or on first use), else of their compressed sizes.`,
		Args: maxArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if format != "" && format != "table" && format != "json" {
				return usageError{fmt.Errorf("invalid --format %q: want table or json", format)}
			}
			var filter reference.Named
			if len(args) == 1 {
				n, err := reference.ParseNormalizedNamed(args[0])
				if err != nil {
					return fmt.Errorf("invalid reference %q: %v", args[0], err)
				}
				filter = n
			}
			s, err := g.open()
			if err != nil {
				return err
			}
			imgs, listErr := s.Images()
			rows := lsRows(s, imgs, filter)
			out := cmd.OutOrStdout()
			switch {
			case quiet:
				seen := map[digest.Digest]bool{}
				for _, r := range rows {
					if !seen[r.ID] {
						seen[r.ID] = true
						fmt.Fprintln(out, shortID(r.ID))
					}
				}
			case format == "json":
				if rows == nil {
					rows = []lsRow{}
				}
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(rows); err != nil {
					return err
				}
			default:
				tw := tabwriter.NewWriter(out, 10, 1, 3, ' ', 0)
				fmt.Fprintln(tw, "REPOSITORY\tTAG\tIMAGE ID\tCREATED\tSIZE")
				now := time.Now()
				for _, r := range rows {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Repository, r.Tag, shortID(r.ID),
						createdSince(r.Created, now), humanSize(r.Size))
				}
				if err := tw.Flush(); err != nil {
					return err
				}
			}
			// Images lists what it could; say what it could not.
			return listErr
		},
	}
	cmd.Flags().StringVar(&format, "format", "table", "output format: table or json")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "only print image IDs")
	return cmd
}

// lsRows makes the rows for imgs, those filter names only if it is set, newest first.
func lsRows(s *store.Store, imgs []store.Image, filter reference.Named) []lsRow {
	z := newSizer(s)
	createdOf := map[digest.Digest]time.Time{}
	var rows []lsRow
	for _, img := range imgs {
		if filter != nil && !nameMatches(img.Name, filter) {
			continue
		}
		r := lsRow{Repository: none, Tag: none, ID: img.ID, Digest: img.Target.Digest}
		if img.Name != nil {
			r.Name = img.Name.String()
			r.Repository = reference.FamiliarName(img.Name)
			if t, ok := img.Name.(reference.Tagged); ok {
				r.Tag = t.Tag()
			}
		}
		c, ok := createdOf[img.ID]
		if !ok {
			_, cfg, _ := s.ReadConfig(img.ID) // an unreadable config shows as N/A
			c = store.Created(cfg)
			createdOf[img.ID] = c
		}
		r.Created = c
		r.Size, r.CompressedSize, _ = z.size(img)
		rows = append(rows, r)
	}
	slices.SortStableFunc(rows, func(a, b lsRow) int {
		return cmp.Or(
			b.Created.Compare(a.Created),
			cmp.Compare(a.Repository, b.Repository),
			cmp.Compare(a.Tag, b.Tag),
			cmp.Compare(a.ID, b.ID),
		)
	})
	return rows
}

// nameMatches says whether name is what `imgfs ls filter` asks for: the repository, or
// with a tag that exact name.
func nameMatches(name, filter reference.Named) bool {
	if name == nil {
		return false
	}
	if reference.IsNameOnly(filter) {
		return name.Name() == filter.Name()
	}
	return name.String() == filter.String()
}

// shortID is docker's short image ID: the first 12 hex digits.
func shortID(id digest.Digest) string {
	hex := id.Encoded()
	if len(hex) > 12 {
		hex = hex[:12]
	}
	return hex
}
