package store

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// dockerImage is an entry of a docker save's manifest.json. Paths are relative to the
// archive's root: <hex>.json and <id>/layer.tar up to Docker 24, blobs/sha256/<hex> from
// Docker 25 on. LayerSources (foreign layers; every layer from Docker 25 on) is not needed:
// the layers are in the archive, and their blobs say what they are.
type dockerImage struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// planDocker checks the images a docker save's manifest.json lists and writes an OCI image
// manifest for each. Docker 25's index.json is not relied on: 25.0.0 writes
// "manifests": null.
func (im *importer) planDocker(data []byte) ([]tagOp, error) {
	var entries []dockerImage
	if err := json.Unmarshal(data, &entries); err != nil {
		return nil, fmt.Errorf("manifest.json: %v", err)
	}
	if len(entries) == 0 {
		return nil, errors.New("manifest.json lists no images")
	}
	if im.opts.Name != nil && len(entries) > 1 {
		return nil, fmt.Errorf("--name %s: the archive holds %d images, not one", im.opts.Name, len(entries))
	}
	// Names first: an invalid one fails the import before anything else is done.
	names := make([][]reference.NamedTagged, len(entries))
	for i, e := range entries {
		for _, t := range e.RepoTags {
			n, err := parseRepoTag(t)
			if err != nil {
				return nil, err
			}
			names[i] = append(names[i], n)
		}
		if im.opts.Name != nil {
			n, _ := tagName(im.opts.Name) // checked by runImport
			names[i] = append(names[i], n)
		}
	}
	var ops []tagOp
	for i, e := range entries {
		desc, err := im.dockerImage(e)
		if err != nil {
			return nil, err
		}
		if len(names[i]) == 0 {
			ops = append(ops, tagOp{desc: desc})
		}
		for _, n := range names[i] {
			ops = append(ops, tagOp{name: n, desc: desc})
		}
	}
	return ops, nil
}

// parseRepoTag parses a RepoTag of manifest.json the way docker does ("busybox:latest"
// is docker.io/library/busybox:latest).
func parseRepoTag(t string) (reference.NamedTagged, error) {
	n, err := reference.ParseNormalizedNamed(t)
	if err != nil {
		return nil, fmt.Errorf("manifest.json: invalid RepoTag %q: %v", t, err)
	}
	if _, ok := n.(reference.Digested); ok {
		return nil, fmt.Errorf("manifest.json: invalid RepoTag %q: a digest, not a tag", t)
	}
	tagged, ok := reference.TagNameOnly(n).(reference.NamedTagged)
	if !ok {
		return nil, fmt.Errorf("manifest.json: invalid RepoTag %q", t)
	}
	return tagged, nil
}

// imageConfig is what an import checks of an image config.
type imageConfig struct {
	RootFS struct {
		DiffIDs []digest.Digest `json:"diff_ids"`
	} `json:"rootfs"`
}

func (im *importer) readConfig(d digest.Digest, label string) (*imageConfig, error) {
	data, err := im.readBlob(d, MaxConfigSize)
	if err != nil {
		return nil, wrapf(err, "config %s: ", label)
	}
	c := new(imageConfig)
	if err := json.Unmarshal(data, c); err != nil {
		return nil, fmt.Errorf("config %s: %v", label, err)
	}
	return c, nil
}

// checkDiffID compares a layer's diffID with the config's.
func checkDiffID(layer string, i int, got, want digest.Digest) error {
	if got != want {
		return fmt.Errorf("layer %s: diffID %s differs from the config's rootfs.diff_ids[%d] %s", layer, got, i, want)
	}
	return nil
}

// dockerImage checks one image of manifest.json (config there, each layer's diffID that
// of the config) and returns the descriptor of its OCI manifest, stored: docker's own when
// the archive holds one that fits (Docker 25+), else one written now. The config is stored
// byte for byte, so the image ID stays what it was.
func (im *importer) dockerImage(e dockerImage) (ocispec.Descriptor, error) {
	if e.Config == "" {
		return ocispec.Descriptor{}, errors.New("manifest.json: an image without Config")
	}
	cst, err := im.file(e.Config, kindBlob, "config")
	if err != nil {
		return ocispec.Descriptor{}, wrapf(err, "manifest.json: config ")
	}
	cfg, err := im.readConfig(cst.desc.Digest, e.Config)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	if len(cfg.RootFS.DiffIDs) != len(e.Layers) {
		return ocispec.Descriptor{}, fmt.Errorf("config %s lists %d layers (rootfs.diff_ids), manifest.json %d",
			e.Config, len(cfg.RootFS.DiffIDs), len(e.Layers))
	}
	layers := make([]ocispec.Descriptor, len(e.Layers))
	for i, p := range e.Layers {
		st, err := im.file(p, kindLayer, "layer")
		if err != nil {
			return ocispec.Descriptor{}, wrapf(err, "manifest.json: layer ")
		}
		ix, err := im.layer(st)
		if err != nil {
			return ocispec.Descriptor{}, err
		}
		if err := checkDiffID(p, i, ix.DiffID, cfg.RootFS.DiffIDs[i]); err != nil {
			return ocispec.Descriptor{}, err
		}
		layers[i] = ocispec.Descriptor{MediaType: st.desc.MediaType, Digest: st.desc.Digest, Size: st.desc.Size}
	}
	config := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: cst.desc.Digest, Size: cst.desc.Size}
	if d, ok := im.dockerManifest(config, layers); ok {
		return d, nil
	}
	m := ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    config,
		Layers:    layers,
	}
	data, err := json.Marshal(m)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	st, err := im.putBytes(data)
	if err != nil {
		return ocispec.Descriptor{}, wrapf(err, "manifest of %s: ", e.Config)
	}
	return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: st.desc.Digest, Size: st.desc.Size}, nil
}

// dockerManifest finds, among the JSON blobs of a Docker 25+ save and the manifests its
// index.json names, the OCI manifest docker wrote for an image, so that the image keeps
// its manifest digest too.
func (im *importer) dockerManifest(config ocispec.Descriptor, layers []ocispec.Descriptor) (ocispec.Descriptor, bool) {
	if im.ociManifests == nil {
		im.ociManifests = map[digest.Digest]*ocispec.Manifest{}
		cands := map[digest.Digest]bool{}
		for _, st := range im.jsons {
			cands[st.desc.Digest] = true
		}
		var idx struct {
			Manifests []ocispec.Descriptor `json:"manifests"`
		}
		if json.Unmarshal(im.meta["index.json"], &idx) == nil {
			for _, d := range idx.Manifests {
				if _, ok := im.blobSize(d.Digest); ok && isManifestType(d.MediaType) {
					cands[d.Digest] = true
				}
			}
		}
		for d := range cands {
			data, err := im.readBlob(d, MaxManifestSize)
			if err != nil {
				continue
			}
			m := new(ocispec.Manifest)
			if json.Unmarshal(data, m) == nil && m.SchemaVersion == 2 && m.MediaType == ocispec.MediaTypeImageManifest {
				im.ociManifests[d] = m
			}
		}
	}
	var found digest.Digest
	for d, m := range im.ociManifests {
		if !sameBlob(m.Config, config) || len(m.Layers) != len(layers) || found != "" && found < d {
			continue
		}
		same := true
		for i := range layers {
			same = same && sameBlob(m.Layers[i], layers[i])
		}
		if same {
			found = d // the least digest of several that fit: the same on every import
		}
	}
	if found == "" {
		return ocispec.Descriptor{}, false
	}
	size, ok := im.blobSize(found)
	if !ok {
		return ocispec.Descriptor{}, false
	}
	im.need(found)
	return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: found, Size: size}, true
}

func sameBlob(a, b ocispec.Descriptor) bool {
	return a.MediaType == b.MediaType && a.Digest == b.Digest && a.Size == b.Size
}
