package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/distribution/reference"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Environment of the helper process TestTagParallel starts.
const (
	helperEnvRoot     = "IMGFS_STORE_TEST_HELPER_ROOT"
	helperEnvPrefix   = "IMGFS_STORE_TEST_HELPER_PREFIX"
	helperEnvManifest = "IMGFS_STORE_TEST_HELPER_MANIFEST"
	namesPerTagger    = 5
)

// tagHelper is the other process of TestTagParallel (the test binary run again, TestMain
// dispatching here): it tags names into the same store.
func tagHelper(root string) error {
	s, err := Open(root)
	if err != nil {
		return err
	}
	var desc ocispec.Descriptor
	if err := json.Unmarshal([]byte(os.Getenv(helperEnvManifest)), &desc); err != nil {
		return err
	}
	return tagMany(s, os.Getenv(helperEnvPrefix), desc)
}

func tagMany(s *Store, prefix string, desc ocispec.Descriptor) error {
	var errs []error
	for i := range namesPerTagger {
		name, err := reference.ParseNormalizedNamed(fmt.Sprintf("%s:%d", prefix, i))
		if err == nil {
			err = s.Tag(name, desc)
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Taggers in 8 goroutines and 2 other processes at once: every name lands.
func TestTagParallel(t *testing.T) {
	s := openStore(t)
	img := writeImage(t, s, imageOpts{})
	descJSON, _ := json.Marshal(img.Manifest)

	var prefixes []string
	var wg sync.WaitGroup
	var procs []*exec.Cmd
	var outs []*bytes.Buffer
	for p := range 2 {
		prefix := fmt.Sprintf("proc%d", p)
		prefixes = append(prefixes, prefix)
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), helperEnvRoot+"="+s.Root(), helperEnvPrefix+"="+prefix, helperEnvManifest+"="+string(descJSON))
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procs, outs = append(procs, cmd), append(outs, &out)
	}
	for g := range 8 {
		prefix := fmt.Sprintf("goroutine%d", g)
		prefixes = append(prefixes, prefix)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := tagMany(s, prefix, img.Manifest); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	for i, cmd := range procs {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("helper process: %v\n%s", err, outs[i])
		}
	}

	have := imageNames(t, s)
	for _, p := range prefixes {
		for i := range namesPerTagger {
			if n := fmt.Sprintf("docker.io/library/%s:%d", p, i); !have[n] {
				t.Errorf("%s lost", n)
			}
		}
	}
	if want := len(prefixes) * namesPerTagger; len(have) != want {
		t.Errorf("%d images, want %d", len(have), want)
	}
	assertTmpEmpty(t, s)
}

// Imports through four Stores at once (four open file descriptions, whose flocks conflict
// as those of four processes do) while another goroutine keeps deleting what is in .imgfs/
// but the temp files of writes in progress: every name an import reported lands.
func TestImportWhileImgfsDeleted(t *testing.T) {
	layout, _ := testLayout(t, nil)
	root := t.TempDir()
	if _, err := Open(root); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	deleted := make(chan int)
	go func() {
		n := 0
		defer func() { deleted <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			ents, _ := os.ReadDir(filepath.Join(root, ".imgfs"))
			for _, e := range ents {
				if e.Name() != "tmp" && os.RemoveAll(filepath.Join(root, ".imgfs", e.Name())) == nil {
					n++
				}
			}
			time.Sleep(50 * time.Microsecond)
		}
	}()
	const importers, imports = 4, 15
	var mu sync.Mutex
	var landed []string
	var wg sync.WaitGroup
	for g := range importers {
		s, err := Open(root)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			for i := range imports {
				name := fmt.Sprintf("example.com/g%d:%d", g, i)
				if _, err := s.Import(layout, ImportOptions{Name: mustName(t, name)}); err != nil {
					t.Errorf("import %s: %v", name, err)
					continue
				}
				mu.Lock()
				landed = append(landed, name)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(stop)
	t.Logf("%d imports, %d entries of .imgfs/ deleted meanwhile", len(landed), <-deleted)

	s, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	have := imageNames(t, s)
	lost := 0
	for _, n := range landed {
		if !have[n] {
			lost++
		}
	}
	if lost > 0 {
		t.Errorf("%d of %d names lost", lost, len(landed))
	}
}

// imageNames is the set of names the store has.
func imageNames(t *testing.T, s *Store) map[string]bool {
	t.Helper()
	imgs, err := s.Images()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, img := range imgs {
		have[img.Name.String()] = true
	}
	return have
}
