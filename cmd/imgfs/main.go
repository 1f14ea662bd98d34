// Command imgfs serves container images as a read-only FUSE filesystem.
//
// Exit status: 0 on success, 1 when a command fails (one line on stderr, "imgfs: what and
// why"), 2 on a usage error (unknown command or flag, wrong number of arguments), with a
// hint on where the usage is.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/imgfs/imgfs/store"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/cobra"
)

// version is set at build time by the Makefile (-ldflags -X main.version=...).
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes the command line args and returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	root := newRootCmd()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteC()
	if err == nil {
		return 0
	}
	var ue usageError
	if errors.As(err, &ue) {
		if cmd == nil {
			cmd = root
		}
		use := cmd.UseLine()
		if cmd.HasAvailableSubCommands() {
			use = cmd.CommandPath() + " COMMAND [flags]"
		}
		fmt.Fprintln(stderr, "imgfs:", err)
		fmt.Fprintf(stderr, "Usage: %s\nSee '%s --help'.\n", use, cmd.CommandPath())
		return 2
	}
	var reported alreadyReported
	if !errors.As(err, &reported) {
		fmt.Fprintln(stderr, "imgfs:", oneLine(err.Error()))
	}
	return 1
}

// globals are the flags every command takes.
type globals struct {
	storeDir string
	platform string
}

func newRootCmd() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "imgfs",
		Short:         "Look inside container images through a read-only filesystem",
		SilenceUsage:  true,
		SilenceErrors: true,
		// For unknown commands, "did you mean".
		SuggestionsMinimumDistance: 2,
		// Runnable so that an unknown command reaches Args (a usage error) rather than
		// cobra's own untyped error.
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return nil
			}
			msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
			if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
				msg += fmt.Sprintf(" (did you mean %q?)", s[0])
			}
			return usageError{errors.New(msg)}
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cmd.Help()
		},
	}
	root.PersistentFlags().StringVar(&g.storeDir, "store", store.DefaultRoot(),
		"image store directory (env IMGFS_STORE)")
	root.PersistentFlags().StringVar(&g.platform, "platform", "",
		"os/arch[/variant] to pick from multi-platform images (default: this machine's)")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return usageError{err}
	})
	root.CompletionOptions.HiddenDefaultCmd = true

	root.AddCommand(&cobra.Command{
		Use:   "version",
		Short: "Print the imgfs version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), "imgfs", version)
		},
	})
	root.AddCommand(newImportCmd(g), newLsCmd(g), newRmCmd(g), newInspectCmd(g), newGCCmd(g),
		newMountCmd(g), newUmountCmd(g), newSaveCmd(g), newTagCmd(g), newPullCmd(g), newPushCmd(g), newIndexCmd(), newHistoryCmd(g), newDiffCmd(g))

	// Every argument count error is a usage error.
	for _, c := range root.Commands() {
		if c.Args != nil {
			c.Args = usageArgs(c.Args)
		}
		for _, sub := range c.Commands() {
			if sub.Args != nil {
				sub.Args = usageArgs(sub.Args)
			}
		}
	}
	return root
}

// open opens the store the flags name.
func (g *globals) open() (*store.Store, error) {
	if g.storeDir == "" {
		return nil, errors.New("no store directory: use --store or set IMGFS_STORE")
	}
	var platform *ocispec.Platform
	if g.platform != "" {
		p, err := store.ParsePlatform(g.platform)
		if err != nil {
			return nil, usageError{err}
		}
		platform = p
	}
	s, err := store.Open(g.storeDir)
	if err != nil {
		return nil, err
	}
	s.Platform = platform
	return s, nil
}

// usageError is a mistake in the command line: exit status 2 and a hint.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

// usageArgs makes the errors of an argument validator usage errors.
func usageArgs(v cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := v(cmd, args); err != nil {
			return usageError{err}
		}
		return nil
	}
}

// minArgs and exactArgs are cobra's validators with docker's wording.
func minArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < n {
			return fmt.Errorf("%q requires at least %d %s", cmd.CommandPath(), n, plural(n, "argument"))
		}
		return nil
	}
}

func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return fmt.Errorf("%q requires exactly %d %s", cmd.CommandPath(), n, plural(n, "argument"))
		}
		return nil
	}
}

func maxArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) > n {
			return fmt.Errorf("%q accepts at most %d %s", cmd.CommandPath(), n, plural(n, "argument"))
		}
		return nil
	}
}

func rangeArgs(lo, hi int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < lo || len(args) > hi {
			return fmt.Errorf("%q requires %d to %d arguments", cmd.CommandPath(), lo, hi)
		}
		return nil
	}
}

// alreadyReported is returned by commands that printed their errors themselves (one per
// argument that failed) and only need the exit status set.
type alreadyReported struct{ n int }

func (a alreadyReported) Error() string {
	return fmt.Sprintf("%d %s failed", a.n, plural(a.n, "argument"))
}

// reportf prints one error line the way run does.
func reportf(w io.Writer, format string, args ...any) {
	fmt.Fprintln(w, "imgfs:", oneLine(fmt.Sprintf(format, args...)))
}

// oneLine keeps an error message to one line.
func oneLine(s string) string {
	return strings.ReplaceAll(strings.TrimSpace(s), "\n", "; ")
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}
