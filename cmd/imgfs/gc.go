package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
)

func newGCCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "gc",
		Short: "Delete the blobs no image needs",
		Long: `Delete the blobs no name or image ID in the store reaches any more (after imgfs rm), their
layer indexes, the blobs failed pulls kept for the next, and leftovers of interrupted
imports. It waits for the imports running in
the store to finish, and says so when that takes more than a second.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := g.open()
			if err != nil {
				return err
			}
			s.GCWaiting = func(pids []int) { sayWaiting(cmd.ErrOrStderr(), pids) }
			removed, freed, err := s.GC()
			if removed > 0 || err == nil {
				fmt.Fprintf(cmd.OutOrStdout(), "Removed %d %s, freed %s\n", removed, plural(removed, "blob"), humanSize(freed))
			}
			return err
		},
	}
}

// sayWaiting tells that gc waits for imports, and which processes they are when known.
func sayWaiting(w io.Writer, pids []int) {
	what := "an import running in this store"
	if len(pids) > 1 {
		what = "imports running in this store"
	}
	if len(pids) > 0 {
		ids := make([]string, len(pids))
		for i, p := range pids {
			ids[i] = strconv.Itoa(p)
		}
		what += fmt.Sprintf(" (%s %s)", plural(len(pids), "pid"), strings.Join(ids, ", "))
	}
	fmt.Fprintf(w, "imgfs gc: waiting for %s to finish\n", what)
}
