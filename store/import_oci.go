package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strings"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/imgfs/imgfs/internal/par"
)

// planOCI checks the images an OCI layout's index.json lists, with everything they reach
// (every platform of an image index), and returns their names.
func (im *importer) planOCI(data []byte) ([]tagOp, error) {
	layout, ok := im.meta[ocispec.ImageLayoutFile]
	if !ok {
		return nil, errors.New("index.json without oci-layout: not an OCI image layout")
	}
	var l ocispec.ImageLayout
	if err := json.Unmarshal(layout, &l); err != nil {
		return nil, fmt.Errorf("oci-layout: %v", err)
	}
	if l.Version != ocispec.ImageLayoutVersion {
		return nil, fmt.Errorf("oci-layout: %w %q (want %q)", ErrLayoutVersion, l.Version, ocispec.ImageLayoutVersion)
	}
	var idx struct {
		Manifests []ocispec.Descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(data, &idx); err != nil {
		return nil, fmt.Errorf("index.json: %v", err)
	}
	var images []ocispec.Descriptor
	distinct := map[string]bool{}
	for _, d := range idx.Manifests {
		if isImageEntry(d) {
			images = append(images, d)
			distinct[d.Digest.String()] = true
		}
	}
	if len(images) == 0 {
		return nil, errors.New("index.json lists no images")
	}
	if im.opts.Name != nil && len(distinct) > 1 {
		return nil, fmt.Errorf("--name %s: the archive holds %d images, not one", im.opts.Name, len(distinct))
	}
	for _, d := range images {
		if err := im.walk(d, 0); err != nil {
			return nil, err
		}
	}
	var ops []tagOp
	for _, d := range images {
		var names []reference.NamedTagged
		n := entryName(d)
		if n != nil {
			// A name with a digest only (containerd's, after a pull by digest) is no tag.
			if t, err := tagName(n); err == nil {
				names = append(names, t)
			}
		}
		if im.opts.Name != nil {
			bare := ""
			if n == nil {
				bare = d.Annotations[AnnotationRefName]
			}
			names = append(names, withBareTag(im.opts.Name, bare))
		}
		if len(names) == 0 {
			ops = append(ops, tagOp{desc: d})
		}
		for _, n := range names {
			ops = append(ops, tagOp{name: n, desc: d})
		}
	}
	return ops, nil
}

// withBareTag is --name for an image whose ref.name is the bare tag ref (or ""): name as
// given if it has a tag, else name:ref when ref is a valid tag, else name:latest.
func withBareTag(name reference.Named, ref string) reference.NamedTagged {
	tagged, _ := tagName(name) // checked by runImport
	if _, ok := name.(reference.Tagged); ok || ref == "" {
		return tagged
	}
	if t, err := reference.WithTag(reference.TrimNamed(tagged), ref); err == nil {
		return t
	}
	return tagged
}

// isTarLayerType reports the media types of layers that are tars (of any compression),
// as opposed to artifacts' blobs (attestations, signatures) listed as layers.
func isTarLayerType(mt string) bool {
	return strings.HasPrefix(mt, "application/vnd.oci.image.layer.") ||
		strings.HasPrefix(mt, "application/vnd.docker.image.rootfs.")
}

// isConfigType reports image config media types, whose rootfs.diff_ids a manifest's
// layers must match.
func isConfigType(mt string) bool {
	return mt == ocispec.MediaTypeImageConfig || mt == MediaTypeDockerConfig
}

// walk stores and verifies the manifest or image index d and everything it reaches.
func (im *importer) walk(d ocispec.Descriptor, depth int) error {
	if im.seen[d.Digest] {
		return nil
	}
	if depth > 8 {
		return fmt.Errorf("image index %s: nested too deep", d.Digest)
	}
	st, err := im.blob(d, kindBlob)
	if err != nil {
		return err
	}
	if st.desc.Size > MaxManifestSize {
		return fmt.Errorf("manifest %s: larger than %d bytes", d.Digest, MaxManifestSize)
	}
	data, err := im.readBlob(d.Digest, MaxManifestSize)
	if err != nil {
		return wrapf(err, "manifest %s: ", d.Digest)
	}
	var m struct {
		SchemaVersion int                  `json:"schemaVersion"`
		MediaType     string               `json:"mediaType"`
		Config        *ocispec.Descriptor  `json:"config"`
		Layers        []ocispec.Descriptor `json:"layers"`
		Manifests     []ocispec.Descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return fmt.Errorf("manifest %s: %v", d.Digest, err)
	}
	if m.SchemaVersion != 2 {
		return fmt.Errorf("manifest %s: schema version %d not supported", d.Digest, m.SchemaVersion)
	}
	im.seen[d.Digest] = true
	mt := d.MediaType
	if mt == "" {
		mt = m.MediaType
	}
	switch {
	case isIndexType(mt), mt == "" && m.Config == nil && m.Manifests != nil:
		for _, c := range m.Manifests {
			if c.MediaType == "" || isManifestType(c.MediaType) || isIndexType(c.MediaType) {
				if err := im.walk(c, depth+1); err != nil {
					return err
				}
			} else if _, err := im.blob(c, kindSniff); err != nil {
				return fmt.Errorf("image index %s: %w", d.Digest, err)
			}
		}
		return nil
	case isManifestType(mt), mt == "" && m.Config != nil:
		return im.walkManifest(d, m.Config, m.Layers)
	}
	return fmt.Errorf("%s (%s) is neither an image manifest nor an image index", d.Digest, mt)
}

// walkManifest stores and verifies an image manifest's config and layers, indexing the
// layers, and checks their diffIDs against the config's. A layer is checked whatever its
// media type says: the mount and export tell a layer by its bytes, so an
// application/octet-stream gzip tar is served as one, and must be what the config says.
func (im *importer) walkManifest(d ocispec.Descriptor, config *ocispec.Descriptor, layers []ocispec.Descriptor) error {
	if config == nil {
		return fmt.Errorf("manifest %s has no config", d.Digest)
	}
	cst, err := im.blob(*config, kindBlob)
	if err != nil {
		return fmt.Errorf("manifest %s: config: %w", d.Digest, err)
	}
	im.prefetchLayers(layers)
	got := make([]layerDiffID, len(layers))
	anyTar := false
	for i, l := range layers {
		if !isTarLayerType(l.MediaType) {
			st, err := im.blob(l, kindSniff)
			if err != nil {
				return fmt.Errorf("manifest %s: %w", d.Digest, err)
			}
			got[i] = untypedDiffID(st)
			anyTar = anyTar || st.ix != nil
			continue
		}
		st, err := im.blob(l, kindLayer)
		if err != nil {
			return fmt.Errorf("manifest %s: layer %w", d.Digest, err)
		}
		ix, err := im.layer(st)
		if err != nil {
			return err
		}
		got[i] = layerDiffID{d: ix.DiffID}
		anyTar = true
	}
	want, err := im.configDiffIDs(*config, cst)
	if err != nil {
		return err
	}
	if want == nil && !(isConfigType(config.MediaType) && anyTar) {
		return nil // an artifact's config, claiming no diffIDs: nothing to check them by
	}
	if len(want) != len(layers) {
		return fmt.Errorf("manifest %s has %d layers, its config %s lists %d (rootfs.diff_ids)",
			d.Digest, len(layers), config.Digest, len(want))
	}
	for i, l := range layers {
		if got[i].d == "" {
			why := strings.TrimPrefix(got[i].why.Error(), "layer "+l.Digest.String()+": ")
			return fmt.Errorf("layer %s (%s): its diffID cannot be checked against the config's rootfs.diff_ids[%d] %s: not a tar: %s",
				l.Digest, l.MediaType, i, want[i], why)
		}
		if err := checkDiffID(l.Digest.String(), i, got[i].d, want[i]); err != nil {
			return err
		}
	}
	return nil
}

// layerDiffID is what a layer's diffID is found to be: d, or "" and why it is unknown.
type layerDiffID struct {
	d   digest.Digest
	why error
}

// untypedDiffID is the diffID of a blob listed as a layer under a media type that says
// nothing of tars, from its bytes: a tar's (compressed or not) when it indexed as one; its
// own digest when its first bytes are neither compressed nor a tar (an attestation's
// JSON: its bytes are their own uncompressed stream); unknown when it looked like a layer
// but does not index as one.
func untypedDiffID(st *stored) layerDiffID {
	switch {
	case st.ix != nil:
		return layerDiffID{d: st.ix.DiffID}
	case st.ixErr != nil:
		return layerDiffID{why: st.ixErr}
	}
	return layerDiffID{d: st.desc.Digest}
}

// configDiffIDs returns the rootfs.diff_ids of a manifest's config, stored as st. An image
// config must parse; a config of another media type (a vendor's, an artifact's) that does
// not parse as JSON with rootfs.diff_ids claims none (nil), as it does when it has none.
func (im *importer) configDiffIDs(config ocispec.Descriptor, st *stored) ([]digest.Digest, error) {
	if isConfigType(config.MediaType) {
		cfg, err := im.readConfig(config.Digest, config.Digest.String())
		if err != nil {
			return nil, err
		}
		return cfg.RootFS.DiffIDs, nil
	}
	if st.desc.Size > MaxConfigSize {
		return nil, nil
	}
	data, err := im.readBlob(config.Digest, MaxConfigSize)
	if err != nil {
		return nil, wrapf(err, "config %s: ", config.Digest)
	}
	var cfg imageConfig
	if json.Unmarshal(data, &cfg) != nil {
		return nil, nil
	}
	return cfg.RootFS.DiffIDs, nil
}

// prefetchLayers stores and indexes a directory's tar layers in parallel, one per core:
// decompressing and indexing is what an import spends its time on, and the layers of a
// layout are independent files. Errors are left for the caller's own pass over the layers
// to report in order; an archive's members come one after another and are not prefetched.
func (im *importer) prefetchLayers(layers []ocispec.Descriptor) {
	if im.dir == nil || len(layers) < 2 {
		return
	}
	var todo []ocispec.Descriptor
	seen := map[digest.Digest]bool{}
	for _, l := range layers {
		if isTarLayerType(l.MediaType) && !seen[l.Digest] {
			seen[l.Digest] = true
			todo = append(todo, l)
		}
	}
	par.Do(len(todo), runtime.GOMAXPROCS(0), func(i int) { im.blob(todo[i], kindLayer) })
}

// IsTarLayerType reports the media types of layers that are tars (of any compression),
// as opposed to artifacts' blobs (attestations, signatures) listed as layers.
func IsTarLayerType(mt string) bool { return isTarLayerType(mt) }
