package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"

	"github.com/distribution/reference"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/imgfs/imgfs/store"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// DefaultConcurrency is how many layers a pull downloads at a time, as docker does.
const DefaultConcurrency = 3

// PullOptions say how to pull.
type PullOptions struct {
	Concurrency int // layers downloaded at a time; 0 means DefaultConcurrency
	// Status hears each layer's progress in docker's words: id is the layer's short
	// digest ("" for the image), msg "Pulling fs layer", "Already exists", "Download
	// complete", "Pull complete". It may be called from several goroutines, never at once.
	Status func(id, msg string)
	// Progress hears how many bytes of a layer (id, its short digest) have arrived, of
	// total, while it downloads. It may be called from several goroutines at once.
	Progress func(id string, current, total int64)
}

// PullResult is what a pull did.
type PullResult struct {
	Name     reference.Named // the name in the store: tagged, or digested for a pull by digest
	Digest   digest.Digest   // the manifest's, or the image index's
	UpToDate bool            // the store had the image under that name already: nothing changed
}

// Pull brings the image ref names into s as it is in the registry: its manifest (and
// image index with the manifest for s's platform), config and compressed layers, with the
// same digests. Layers download opts.Concurrency at a time; each blob is verified, staged
// and (a layer) indexed in one pass as it downloads, and each layer's diffID is checked
// against the config. Blobs s has already are not fetched. index.json changes only at the
// end; a failed pull leaves s as it was.
func (c *Client) Pull(ctx context.Context, s *store.Store, refStr string, opts PullOptions) (*PullResult, error) {
	status := opts.Status
	if status == nil {
		status = func(string, string) {}
	}
	var mu sync.Mutex
	say := func(id, msg string) {
		mu.Lock()
		defer mu.Unlock()
		status(id, msg)
	}
	ref, err := c.ParseReference(refStr)
	if err != nil {
		return nil, err
	}
	named, err := reference.ParseNormalizedNamed(refStr)
	if err != nil {
		return nil, fmt.Errorf("invalid reference %q: %v", refStr, err)
	}
	named = reference.TagNameOnly(named)
	repo := ref.Context()
	where := func(d digest.Digest) string {
		return fmt.Sprintf("registry %s, repository %s, blob %s", repo.RegistryStr(), repo.RepositoryStr(), d)
	}

	raw, top, mt, err := c.Manifest(ctx, ref)
	if err != nil {
		return nil, err
	}
	say(ref.Identifier(), "Pulling from "+reference.Path(named))

	st, err := s.Stage()
	if err != nil {
		return nil, err
	}
	defer st.Close()
	fetched := false
	putSmall := func(data []byte, desc ocispec.Descriptor) error {
		if s.HasBlob(desc.Digest) {
			return nil
		}
		fetched = true
		if err := st.Blob(bytes.NewReader(data), desc); err != nil {
			return fmt.Errorf("%s: %w", where(desc.Digest), err)
		}
		return nil
	}

	var shape struct {
		MediaType string               `json:"mediaType"`
		Manifests []ocispec.Descriptor `json:"manifests"`
		Config    ocispec.Descriptor   `json:"config"`
		Layers    []ocispec.Descriptor `json:"layers"`
	}
	if err := json.Unmarshal(raw, &shape); err != nil {
		return nil, fmt.Errorf("%s: manifest %s: %v", ref, top, err)
	}
	if shape.MediaType != "" {
		mt = shape.MediaType
	}
	target := ocispec.Descriptor{MediaType: mt, Digest: top, Size: int64(len(raw))}
	manifest := raw
	mdigest := top
	if shape.Manifests != nil && shape.Config.Digest == "" {
		// An image index: the manifest for the platform.
		pick, err := s.PickPlatform(shape.Manifests)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", ref, err)
		}
		if err := putSmall(raw, target); err != nil {
			return nil, err
		}
		manifest, mdigest, _, err = c.Manifest(ctx, repo.Digest(pick.Digest.String()))
		if err != nil {
			return nil, err
		}
		if mdigest != pick.Digest {
			return nil, fmt.Errorf("%s: manifest hashes to %s", where(pick.Digest), mdigest)
		}
		shape.Config, shape.Layers = ocispec.Descriptor{}, nil
		if err := json.Unmarshal(manifest, &shape); err != nil {
			return nil, fmt.Errorf("%s: manifest %s: %v", ref, mdigest, err)
		}
		if err := putSmall(manifest, pick); err != nil {
			return nil, err
		}
	} else if err := putSmall(raw, target); err != nil {
		return nil, err
	}
	if shape.Config.Digest == "" {
		return nil, fmt.Errorf("%s: manifest %s has no config", ref, mdigest)
	}

	// The config: its diffIDs check the layers.
	var cfgData []byte
	if s.HasBlob(shape.Config.Digest) {
		if cfgData, _, err = s.ReadConfig(shape.Config.Digest); err != nil {
			return nil, err
		}
	} else {
		rc, err := c.Blob(ctx, repo, shape.Config.Digest)
		if err != nil {
			return nil, err
		}
		cfgData, err = io.ReadAll(io.LimitReader(rc, store.MaxConfigSize+1))
		rc.Close()
		if err != nil {
			return nil, err
		}
		if len(cfgData) > store.MaxConfigSize {
			return nil, fmt.Errorf("%s: config larger than %d bytes", where(shape.Config.Digest), store.MaxConfigSize)
		}
		if err := putSmall(cfgData, shape.Config); err != nil {
			return nil, err
		}
	}
	var cfg ocispec.Image
	if err := json.Unmarshal(cfgData, &cfg); err != nil {
		return nil, fmt.Errorf("%s: config: %v", where(shape.Config.Digest), err)
	}
	diffIDs := cfg.RootFS.DiffIDs
	if len(diffIDs) > 0 && len(diffIDs) != len(shape.Layers) {
		return nil, fmt.Errorf("%s: config %s lists %d layers (rootfs.diff_ids), manifest %s %d",
			ref, shape.Config.Digest, len(diffIDs), mdigest, len(shape.Layers))
	}

	// The layers, each once.
	type job struct {
		desc ocispec.Descriptor
		at   []int // where in the manifest
	}
	var jobs []*job
	byDigest := map[digest.Digest]*job{}
	for i, l := range shape.Layers {
		if j, ok := byDigest[l.Digest]; ok {
			j.at = append(j.at, i)
			continue
		}
		j := &job{desc: l, at: []int{i}}
		byDigest[l.Digest] = j
		jobs = append(jobs, j)
	}
	for _, j := range jobs {
		if s.HasBlob(j.desc.Digest) {
			say(short(j.desc.Digest), "Already exists")
		} else {
			fetched = true
			say(short(j.desc.Digest), "Pulling fs layer")
		}
	}
	checkDiff := func(j *job, got digest.Digest) error {
		for _, i := range j.at {
			if len(diffIDs) > 0 && diffIDs[i] != got {
				return fmt.Errorf("%s: diffID %s differs from the config's rootfs.diff_ids[%d] %s",
					where(j.desc.Digest), got, i, diffIDs[i])
			}
		}
		return nil
	}
	n := opts.Concurrency
	if n <= 0 {
		n = DefaultConcurrency
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, n)
	var wg sync.WaitGroup
	var errMu sync.Mutex
	var firstErr error
	fail := func(err error) {
		errMu.Lock()
		if firstErr == nil {
			firstErr = err
			cancel()
		}
		errMu.Unlock()
	}
	for _, j := range jobs {
		if s.HasBlob(j.desc.Digest) {
			ix, err := s.LayerIndex(ocispec.Descriptor{MediaType: j.desc.MediaType, Digest: j.desc.Digest, Size: j.desc.Size})
			if err != nil {
				return nil, err
			}
			if err := checkDiff(j, ix.DiffID); err != nil {
				return nil, err
			}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-sem }()
			rc, err := c.Blob(ctx, repo, j.desc.Digest)
			if err != nil {
				fail(err)
				return
			}
			defer rc.Close()
			ix, err := st.Layer(rc, j.desc)
			if err != nil {
				fail(fmt.Errorf("%s: %w", where(j.desc.Digest), err))
				return
			}
			say(short(j.desc.Digest), "Download complete")
			if err := checkDiff(j, ix.DiffID); err != nil {
				fail(err)
				return
			}
			say(short(j.desc.Digest), "Pull complete")
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	res := &PullResult{Name: named, Digest: top}
	if _, ok := ref.(name.Digest); ok {
		// By digest: kept untagged (reachable by ID), as docker keeps it by digest.
		res.UpToDate = !fetched
		return res, st.Commit(nil, target)
	}
	if !fetched {
		if img, err := s.Resolve(named.String()); err == nil && img.Target.Digest == top {
			res.UpToDate = true
			return res, nil
		}
	}
	return res, st.Commit(named, target)
}

// short is docker's short form of a layer digest: 12 hex digits.
func short(d digest.Digest) string {
	e := d.Encoded()
	if len(e) > 12 {
		e = e[:12]
	}
	return e
}
