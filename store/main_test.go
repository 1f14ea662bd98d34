package store

import (
	"fmt"
	"os"
	"testing"
)

// TestMain runs the test binary as one of the helper processes that TestTagParallel and
// TestImportKill start, when their environment says so; else the tests.
func TestMain(m *testing.M) {
	helper := func(run func(string) error, root string) {
		if err := run(root); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if root := os.Getenv(helperEnvRoot); root != "" {
		helper(tagHelper, root)
	}
	if root := os.Getenv(importEnvRoot); root != "" {
		helper(importHelper, root)
	}
	os.Exit(m.Run())
}
