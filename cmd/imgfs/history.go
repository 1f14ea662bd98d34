package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/imgfs/imgfs/layerindex/overlay"
	"github.com/imgfs/imgfs/store"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/cobra"
)

// missing is docker history's IMAGE for the rows below the image itself: their images are
// not in the store, only their history.
const missing = "<missing>"

// historyRow is one row of `imgfs history`, its JSON that of `docker history --format
// '{{json .}}'`.
type historyRow struct {
	Comment      string
	CreatedAt    string
	CreatedBy    string
	CreatedSince string
	ID           string
	Size         string
}

func newHistoryCmd(g *globals) *cobra.Command {
	var format string
	var quiet, noTrunc bool
	cmd := &cobra.Command{
		Use:   "history [flags] REF",
		Short: "Show the history of an image",
		Long: `Show the history of an image as docker history does: the config's history, newest first,
with the size of the layer each step made (the sizes of its files, as docker counts them; 0B
for steps that made no layer). The image's ID is on the top row, <missing> below it. The
sizes come from the layers' indexes, built first where missing; no file is read.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if format != "" && format != "table" && format != "json" {
				return usageError{fmt.Errorf("invalid --format %q: want table or json", format)}
			}
			s, err := g.open()
			if err != nil {
				return err
			}
			img, err := s.Resolve(args[0])
			if err != nil {
				return err
			}
			rows, err := history(s, img, time.Now(), !noTrunc)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			switch {
			case quiet:
				for _, r := range rows {
					fmt.Fprintln(out, r.ID)
				}
			case format == "json":
				enc := json.NewEncoder(out)
				for _, r := range rows {
					if err := enc.Encode(r); err != nil {
						return err
					}
				}
			default:
				tw := tabwriter.NewWriter(out, 10, 1, 3, ' ', 0)
				fmt.Fprintln(tw, "IMAGE\tCREATED\tCREATED BY\tSIZE\tCOMMENT")
				for _, r := range rows {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.ID, r.CreatedSince, r.CreatedBy, r.Size, r.Comment)
				}
				return tw.Flush()
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&format, "format", "table", "output format: table or json (a JSON object per row)")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "only print image IDs")
	cmd.Flags().BoolVar(&noTrunc, "no-trunc", false, "do not truncate IDs and CREATED BY")
	return cmd
}

// createdByWidth is where docker history cuts CREATED BY unless --no-trunc.
const createdByWidth = 45

// history makes the rows of img's history, newest first, as the docker daemon and CLI do:
// each entry of the config's history is a row, and each one without empty_layer takes the
// next layer, whose size it shows.
func history(s *store.Store, img store.Image, now time.Time, trunc bool) ([]historyRow, error) {
	_, cfg, err := s.ReadConfig(img.ID)
	if err != nil {
		return nil, fmt.Errorf("image %s: config: %w", img.ID, err)
	}
	if cfg == nil {
		return nil, fmt.Errorf("image %s: config does not parse", img.ID)
	}
	layers := img.Manifest.Layers
	var rows []historyRow
	next := 0
	for _, h := range cfg.History {
		var size int64
		if !h.EmptyLayer {
			if next >= len(layers) {
				return nil, fmt.Errorf("image %s: config: more history entries with a layer than the %d layers", img.ID, len(layers))
			}
			if size, err = diffSize(s, layers[next]); err != nil {
				return nil, err
			}
			next++
		}
		// Tabs would break the table's columns: docker shows them as spaces, in JSON too.
		r := historyRow{Comment: h.Comment, CreatedBy: strings.ReplaceAll(h.CreatedBy, "\t", " "), ID: missing, Size: humanSize(size)}
		var created time.Time
		if h.Created != nil {
			created = *h.Created
		}
		// docker keeps Unix seconds and shows them in local time. An entry without a date is
		// "N/A" CREATED, as docker's CLI says from version 23 (older ones say "292 years ago").
		r.CreatedAt = time.Unix(created.Unix(), 0).Format(time.RFC3339)
		r.CreatedSince = createdSince(time.Unix(created.Unix(), 0), now)
		if trunc {
			r.CreatedBy = ellipsis(r.CreatedBy, createdByWidth)
		}
		rows = append(rows, r)
	}
	if len(rows) > 0 {
		// Newest first; the newest row is the image.
		for i, j := 0, len(rows)-1; i < j; i, j = i+1, j-1 {
			rows[i], rows[j] = rows[j], rows[i]
		}
		rows[0].ID = img.ID.String()
		if trunc {
			rows[0].ID = shortID(img.ID)
		}
	}
	return rows, nil
}

// diffSize is the size docker shows for layer desc, from its index.
func diffSize(s *store.Store, desc ocispec.Descriptor) (int64, error) {
	ix, err := s.LayerIndex(desc)
	if err != nil {
		return 0, fmt.Errorf("layer %s: %w", desc.Digest, err)
	}
	return overlay.DiffSize(ix), nil
}

// ellipsis cuts s to width runes, its last one "…", as docker's CLI cuts its columns.
func ellipsis(s string, width int) string {
	if utf8.RuneCountInString(s) <= width {
		return s
	}
	return string([]rune(s)[:width-1]) + "…"
}
