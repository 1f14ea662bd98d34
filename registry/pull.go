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
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/imgfs/imgfs/layerindex"
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
	// digest ("" for the image), msg "Pulling fs layer", "Already exists", "Waiting" (for
	// one of the Concurrency downloads), "Downloading" (its first bytes came), "Verifying
	// Checksum" (its last did), "Download complete", "Pull complete". It may be called from
	// several goroutines, never at once.
	Status func(id, msg string)
	// Progress hears how many bytes of a layer (id, its short digest) have arrived, of
	// total, while it downloads: every progressStep bytes or so, and at its end. It may be
	// called from several goroutines at once.
	Progress func(id string, current, total int64)
	// AllPlatforms pulls every manifest of an image index, with their configs and
	// layers, not only the platform's: what pushing the image needs.
	AllPlatforms bool
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
// against the config. Blobs s has already are not fetched, nor those an earlier pull that
// failed kept in staging (store.Staging); a download that breaks resumes where it broke.
// index.json and blobs/ change only at the end; a failed pull leaves them as they were.
func (c *Client) Pull(ctx context.Context, s *store.Store, refStr string, opts PullOptions) (*PullResult, error) {
	say := serialized(opts.Status)
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
	p := &imagePuller{c: c, s: s, st: st, repo: repo, ref: ref, opts: opts, say: say, where: where,
		small: map[digest.Digest][]byte{}, other: map[digest.Digest]bool{}, diffIDs: map[digest.Digest]digest.Digest{},
		// The blobs' client, made (a ping, maybe a token) only if a blob is to be fetched.
		fetcher: sync.OnceValues(func() (*repoClient, error) { return c.repoClient(ctx, repo, transport.PullScope) })}
	target := ocispec.Descriptor{MediaType: mt, Digest: top, Size: int64(len(raw))}
	if err := p.manifest(ctx, raw, target, 0); err != nil {
		return nil, err
	}
	fetched := p.fetched

	// Where the blobs are, for pushes to mount them from.
	locs := loadLocations(s)
	defer locs.save()
	for _, d := range p.blobs {
		locs.add(d, repo)
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

// imagePuller is one pull's state across the manifests it brings: an image index's (all
// of them with AllPlatforms) share it, so that a blob two of them name is fetched once.
type imagePuller struct {
	c       *Client
	s       *store.Store
	st      *store.Staging
	repo    name.Repository
	ref     name.Reference
	opts    PullOptions
	say     func(id, msg string)
	where   func(d digest.Digest) string
	fetcher func() (*repoClient, error)

	fetched bool                     // something was staged
	blobs   []digest.Digest          // the configs and layers of the manifests pulled
	small   map[digest.Digest][]byte // the manifests and configs staged
	other   map[digest.Digest]bool   // the blobs staged that are neither those nor layers
	mu      sync.Mutex
	diffIDs map[digest.Digest]digest.Digest // the layers staged, by their diffIDs
}

// putSmall stages a manifest, index or config unless the store has it or it is staged.
func (p *imagePuller) putSmall(data []byte, desc ocispec.Descriptor) error {
	if _, ok := p.small[desc.Digest]; ok || p.s.HasBlob(desc.Digest) {
		return nil
	}
	p.fetched = true
	if err := p.st.Blob(bytes.NewReader(data), desc); err != nil {
		return fmt.Errorf("%s: %w", p.where(desc.Digest), err)
	}
	p.small[desc.Digest] = data
	return nil
}

// manifest pulls the manifest or image index desc describes, raw its bytes (verified):
// of an index, the manifest for the store's platform, or every manifest with
// AllPlatforms.
func (p *imagePuller) manifest(ctx context.Context, raw []byte, desc ocispec.Descriptor, depth int) error {
	if depth > 4 {
		return fmt.Errorf("%s: image index %s: nested too deep", p.ref, desc.Digest)
	}
	var shape manifestShape
	if err := json.Unmarshal(raw, &shape); err != nil {
		return fmt.Errorf("%s: manifest %s: %v", p.ref, desc.Digest, err)
	}
	if shape.MediaType != "" {
		desc.MediaType = shape.MediaType
	}
	if err := p.putSmall(raw, desc); err != nil {
		return err
	}
	if !shape.isIndex() {
		return p.image(ctx, desc.Digest, shape.Config, shape.Layers)
	}
	children := shape.Manifests
	if !p.opts.AllPlatforms {
		pick, err := p.s.PickPlatform(shape.Manifests)
		if err != nil {
			return fmt.Errorf("%s: %v", p.ref, err)
		}
		children = []ocispec.Descriptor{pick}
	}
	for _, child := range children {
		craw, got, _, err := p.c.Manifest(ctx, p.repo.Digest(child.Digest.String()))
		if err != nil {
			return err
		}
		if got != child.Digest {
			return fmt.Errorf("%s: manifest hashes to %s", p.where(child.Digest), got)
		}
		if err := p.manifest(ctx, craw, child, depth+1); err != nil {
			return err
		}
	}
	return nil
}

// image pulls the config and layers of image manifest mdigest: layers that are tars
// download opts.Concurrency at a time, each verified, staged and indexed in one pass,
// its diffID checked against the config's; blobs that say they are something else (an
// attestation's) are staged as they are.
func (p *imagePuller) image(ctx context.Context, mdigest digest.Digest, config ocispec.Descriptor, layers []ocispec.Descriptor) error {
	s, st, ref, say, where := p.s, p.st, p.ref, p.say, p.where
	if config.Digest == "" {
		return fmt.Errorf("%s: manifest %s has no config", ref, mdigest)
	}
	p.blobs = append(p.blobs, config.Digest)
	for _, l := range layers {
		p.blobs = append(p.blobs, l.Digest)
	}

	// The config: its diffIDs check the layers.
	cfgData, cfgStaged := p.small[config.Digest]
	if !cfgStaged && s.HasBlob(config.Digest) {
		var err error
		if cfgData, _, err = s.ReadConfig(config.Digest); err != nil {
			return err
		}
	} else if data, ok := st.AdoptBlob(config, store.MaxConfigSize); !cfgStaged && ok {
		cfgData, p.fetched = data, true
		p.small[config.Digest] = data
	} else if !cfgStaged {
		rc, err := p.fetcher()
		if err != nil {
			return err
		}
		body := rc.blob(ctx, config.Digest, config.Size)
		cfgData, err = io.ReadAll(io.LimitReader(body, store.MaxConfigSize+1))
		body.Close()
		if err != nil {
			return err
		}
		if len(cfgData) > store.MaxConfigSize {
			return fmt.Errorf("%s: config larger than %d bytes", where(config.Digest), store.MaxConfigSize)
		}
		if err := p.putSmall(cfgData, config); err != nil {
			return err
		}
	}
	var cfg ocispec.Image
	if err := json.Unmarshal(cfgData, &cfg); err != nil {
		return fmt.Errorf("%s: config: %v", where(config.Digest), err)
	}
	diffIDs := cfg.RootFS.DiffIDs
	if len(diffIDs) > 0 && len(diffIDs) != len(layers) {
		return fmt.Errorf("%s: config %s lists %d layers (rootfs.diff_ids), manifest %s %d",
			ref, config.Digest, len(diffIDs), mdigest, len(layers))
	}

	// The layers, each once.
	type job struct {
		desc ocispec.Descriptor
		at   []int             // where in the manifest
		kept *layerindex.Index // the index of the blob an earlier pull kept, adopted
	}
	var jobs []*job
	byDigest := map[digest.Digest]*job{}
	for i, l := range layers {
		if !isTarLayer(l.MediaType) {
			if err := p.putArtifactBlob(ctx, l); err != nil {
				return err
			}
			continue
		}
		if j, ok := byDigest[l.Digest]; ok {
			j.at = append(j.at, i)
			continue
		}
		j := &job{desc: l, at: []int{i}}
		byDigest[l.Digest] = j
		jobs = append(jobs, j)
	}
	staged := func(j *job) (digest.Digest, bool) {
		p.mu.Lock()
		defer p.mu.Unlock()
		d, ok := p.diffIDs[j.desc.Digest]
		return d, ok
	}
	for _, j := range jobs {
		if s.HasBlob(j.desc.Digest) {
			say(short(j.desc.Digest), "Already exists")
		} else if _, ok := staged(j); !ok {
			p.fetched = true
			say(short(j.desc.Digest), "Pulling fs layer")
			j.kept, _ = st.AdoptLayer(j.desc)
		}
	}
	checkDiff := func(j *job, got digest.Digest) error {
		// Another manifest of the pull with this layer checks it against its config.
		p.mu.Lock()
		p.diffIDs[j.desc.Digest] = got
		p.mu.Unlock()
		for _, i := range j.at {
			if len(diffIDs) > 0 && diffIDs[i] != got {
				return fmt.Errorf("%s: diffID %s differs from the config's rootfs.diff_ids[%d] %s",
					where(j.desc.Digest), got, i, diffIDs[i])
			}
		}
		return nil
	}
	w := newWorkers(ctx, p.opts.Concurrency)
	ctx, fail := w.ctx, w.fail
	// A failure here goes through fail too, and the loop stops: the downloads started must
	// end (w.wait) before the staging closes.
	for _, j := range jobs {
		if d, ok := staged(j); ok {
			if err := checkDiff(j, d); err != nil {
				fail(err)
				break
			}
			continue
		}
		if s.HasBlob(j.desc.Digest) {
			ix, err := s.LayerIndex(ocispec.Descriptor{MediaType: j.desc.MediaType, Digest: j.desc.Digest, Size: j.desc.Size})
			if err == nil {
				err = checkDiff(j, ix.DiffID)
			}
			if err != nil {
				fail(err)
				break
			}
			continue
		}
		id := short(j.desc.Digest)
		if j.kept != nil {
			say(id, "Download complete")
			if err := checkDiff(j, j.kept.DiffID); err != nil {
				fail(err)
				break
			}
			say(id, "Pull complete")
			continue
		}
		w.start(func() {
			if !w.acquire(func() { say(id, "Waiting") }) {
				return
			}
			defer w.release()
			rc, err := p.fetcher()
			if err != nil {
				fail(err)
				return
			}
			body := &progressReader{r: rc.blob(ctx, j.desc.Digest, j.desc.Size),
				first: func() { say(id, "Downloading") },
				last:  func() { say(id, "Verifying Checksum") },
			}
			if p.opts.Progress != nil {
				body.progress = func(n int64) { p.opts.Progress(id, n, j.desc.Size) }
			}
			defer body.Close()
			ix, err := st.Layer(body, j.desc)
			if body.err != nil {
				fail(body.err) // the registry's fault, said in its words
				return
			}
			if err != nil {
				fail(fmt.Errorf("%s: %w", where(j.desc.Digest), err))
				return
			}
			say(id, "Download complete")
			if err := checkDiff(j, ix.DiffID); err != nil {
				fail(err)
				return
			}
			say(id, "Pull complete")
		})
	}
	return w.wait()
}

// isTarLayer says whether a manifest's layer of media type mt is pulled as a layer
// (indexed, its diffID checked): unless its media type says it is something else, as an
// attestation's or a signature's JSON does.
func isTarLayer(mt string) bool {
	return store.IsTarLayerType(mt) || mt == "" || mt == "application/octet-stream"
}

// putArtifactBlob stages a blob a manifest lists as a layer that is not a tar (an
// attestation's) as it is, unless the store has it or it is staged.
func (p *imagePuller) putArtifactBlob(ctx context.Context, desc ocispec.Descriptor) error {
	if p.s.HasBlob(desc.Digest) || p.other[desc.Digest] {
		return nil
	}
	rc, err := p.fetcher()
	if err != nil {
		return err
	}
	body := rc.blob(ctx, desc.Digest, desc.Size)
	defer body.Close()
	p.fetched = true
	if err := p.st.Blob(body, desc); err != nil {
		return fmt.Errorf("%s: %w", p.where(desc.Digest), err)
	}
	p.other[desc.Digest] = true
	return nil
}

// serialized returns status called by one goroutine at a time, or a no-op for nil: the
// Status callbacks of pull, push and index push hear from their workers one at a time.
func serialized(status func(id, msg string)) func(id, msg string) {
	if status == nil {
		return func(string, string) {}
	}
	var mu sync.Mutex
	return func(id, msg string) {
		mu.Lock()
		defer mu.Unlock()
		status(id, msg)
	}
}

// manifestShape is what push and pull read of a manifest or image index: a manifest has
// a config, an image index manifests and no config.
type manifestShape struct {
	MediaType string               `json:"mediaType"`
	Manifests []ocispec.Descriptor `json:"manifests"`
	Config    ocispec.Descriptor   `json:"config"`
	Layers    []ocispec.Descriptor `json:"layers"`
}

func (m *manifestShape) isIndex() bool { return m.Manifests != nil && m.Config.Digest == "" }

// short is docker's short form of a layer digest: 12 hex digits.
func short(d digest.Digest) string {
	e := d.Encoded()
	if len(e) > 12 {
		e = e[:12]
	}
	return e
}

// progressStep is about how many bytes of a layer arrive between two Progress calls.
const progressStep = 64 << 10

// progressReader tells how a blob's transfer goes: first (if set) when its first bytes
// pass, progress (if set) every progressStep bytes and at the end, last (if set) at the end.
type progressReader struct {
	r           io.ReadCloser
	n, reported int64
	first, last func()
	progress    func(n int64)
	err         error // what reading r failed with, if it did
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 && p.n == 0 && p.first != nil {
		p.first()
	}
	p.n += int64(n)
	if p.progress != nil && (p.n-p.reported >= progressStep || (err == io.EOF && p.n > p.reported)) {
		p.reported = p.n
		p.progress(p.n)
	}
	switch {
	case err == io.EOF:
		if p.last != nil {
			p.last()
		}
	case err != nil:
		p.err = err
	}
	return n, err
}

func (p *progressReader) Close() error { return p.r.Close() }
