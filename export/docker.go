package export

import (
	"bytes"
	"encoding/json"
	"time"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/imgfs/imgfs/store"
)

// This file holds the JSON documents of a docker save archive, each encoded the way the
// Docker Engine (classic image store, daemon/internal/image/tarexport/save.go) encodes it:
// same Go types, same field order, same encoder, so the bytes are docker's.

// ociLayout is docker's oci-layout file, space included, no newline.
const ociLayout = `{"imageLayoutVersion": "` + ocispec.ImageLayoutVersion + `"}`

// manifestItem is one entry of manifest.json (docker's tarexport.manifestItem). Parent is
// only set by docker for images built locally with a parent; a store has none.
type manifestItem struct {
	Config       string
	RepoTags     []string
	Layers       []string
	LayerSources map[digest.Digest]layerSource `json:",omitempty"`
}

// layerSource is docker/distribution's Descriptor as manifest.json carries it.
type layerSource struct {
	MediaType string        `json:"mediaType,omitempty"`
	Size      int64         `json:"size,omitempty"`
	Digest    digest.Digest `json:"digest,omitempty"`
}

// encodeLine encodes v as json.Encoder does: HTML-safe, with a newline at the end
// (docker writes manifest.json and repositories so).
func encodeLine(v any) ([]byte, error) {
	var b bytes.Buffer
	if err := json.NewEncoder(&b).Encode(v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// ociManifest is the OCI manifest docker writes for an image: the config, and every layer
// uncompressed as an application/vnd.oci.image.layer.v1.tar named by its diffID. Since
// Docker 25.0.5/26.0.1 the config descriptor has no platform (moby#47661).
func ociManifest(id digest.Digest, configSize int64, diffIDs []digest.Digest, sizes []int64) ([]byte, error) {
	m := ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config: ocispec.Descriptor{
			MediaType: ocispec.MediaTypeImageConfig,
			Digest:    id,
			Size:      configSize,
		},
		Layers: make([]ocispec.Descriptor, len(diffIDs)),
	}
	for i, d := range diffIDs {
		m.Layers[i] = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: d, Size: sizes[i]}
	}
	return json.Marshal(m)
}

// reusable reports whether a stored manifest is already the one docker would put in the
// archive (an image imported from a docker save): an OCI manifest of this config whose
// layers are the uncompressed layers named by diffID. Its bytes then go in as they are,
// so the image keeps its manifest digest.
func reusable(e store.Image, configSize int64, diffIDs []digest.Digest, sizes []int64) bool {
	m := e.Manifest
	if e.Descriptor.MediaType != ocispec.MediaTypeImageManifest || m.MediaType != ocispec.MediaTypeImageManifest ||
		m.Config.MediaType != ocispec.MediaTypeImageConfig || m.Config.Digest != e.ID || m.Config.Size != configSize ||
		len(m.Layers) != len(diffIDs) {
		return false
	}
	for i, l := range m.Layers {
		if l.MediaType != ocispec.MediaTypeImageLayer || l.Digest != diffIDs[i] || l.Size != sizes[i] {
			return false
		}
	}
	return true
}

// indexJSON is docker's index.json: one descriptor of the OCI manifest per tag, annotated
// with the full name and the tag; an image without tags gets one bare descriptor.
func indexJSON(images []*image) ([]byte, error) {
	descs := []ocispec.Descriptor{}
	for _, im := range images {
		d := ocispec.Descriptor{
			MediaType: ocispec.MediaTypeImageManifest,
			Digest:    digest.FromBytes(im.manifest),
			Size:      int64(len(im.manifest)),
		}
		if len(im.refs) == 0 {
			descs = append(descs, d)
		}
		for _, ref := range im.refs {
			t := d
			t.Annotations = map[string]string{
				store.AnnotationImageName: ref.String(),
				store.AnnotationRefName:   ref.Tag(),
			}
			descs = append(descs, t)
		}
	}
	return json.Marshal(ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: descs,
	})
}

// manifestJSON is docker's manifest.json, which docker load reads.
func manifestJSON(images []*image) ([]byte, error) {
	items := make([]manifestItem, len(images))
	for i, im := range images {
		it := manifestItem{
			Config:       blobPath(im.id),
			LayerSources: map[digest.Digest]layerSource{},
		}
		for _, ref := range im.refs {
			it.RepoTags = append(it.RepoTags, reference.FamiliarString(ref))
		}
		for j, d := range im.diffIDs {
			it.Layers = append(it.Layers, blobPath(d))
			it.LayerSources[d] = layerSource{MediaType: ocispec.MediaTypeImageLayer, Size: im.sizes[j], Digest: d}
		}
		items[i] = it
	}
	return encodeLine(items)
}

// repositoriesJSON is the legacy repositories file: familiar name → tag → top layer's
// diffID (hex). Nil when no image is tagged: docker then writes no file.
func repositoriesJSON(images []*image) ([]byte, error) {
	repos := map[string]map[string]string{}
	for _, im := range images {
		for _, ref := range im.refs {
			name := reference.FamiliarName(ref)
			if repos[name] == nil {
				repos[name] = map[string]string{}
			}
			repos[name][ref.Tag()] = im.diffIDs[len(im.diffIDs)-1].Encoded()
		}
	}
	if len(repos) == 0 {
		return nil, nil
	}
	return encodeLine(repos)
}

func blobPath(d digest.Digest) string {
	return "blobs/" + d.Algorithm().String() + "/" + d.Encoded()
}

// chainIDs returns the chain ID of each layer: the diffID of the first, then
// sha256("<parent chain ID> <diffID>").
func chainIDs(diffIDs []digest.Digest) []digest.Digest {
	out := make([]digest.Digest, len(diffIDs))
	for i, d := range diffIDs {
		if i == 0 {
			out[i] = d
			continue
		}
		out[i] = digest.FromString(out[i-1].String() + " " + d.String())
	}
	return out
}

// The legacy v1 image JSON docker still writes for each layer (blobs/sha256/<hex>,
// referenced by nothing: pre-1.10 clients read it). The types mirror docker's
// image.V1Image and container.Config; a config is decoded into them and encoded again,
// dropping what they do not know, as docker does.
//
// container.Config is that of API 1.44–1.51 (Docker 25–28): OnBuild is written even when
// empty, Cmd and Entrypoint take a string or a list. API 1.52 (Docker 29) omits an empty
// OnBuild, which changes the v1 IDs; see the package documentation.

type v1Image struct {
	ID              string           `json:"id,omitempty"`
	Parent          string           `json:"parent,omitempty"`
	Comment         string           `json:"comment,omitempty"`
	Created         *time.Time       `json:"created"`
	Container       string           `json:"container,omitempty"`
	ContainerConfig containerConfig  `json:"container_config,omitempty"`
	DockerVersion   string           `json:"docker_version,omitempty"`
	Author          string           `json:"author,omitempty"`
	Config          *containerConfig `json:"config,omitempty"`
	Architecture    string           `json:"architecture,omitempty"`
	Variant         string           `json:"variant,omitempty"`
	OS              string           `json:"os,omitempty"`
	Size            int64            `json:",omitempty"`
}

// imageJSON is an image config as docker's image.Image decodes it. Its own "parent" hides
// the embedded v1Image's, so that one is always empty.
type imageJSON struct {
	v1Image
	Parent string `json:"parent,omitempty"`
	RootFS *struct {
		DiffIDs []digest.Digest `json:"diff_ids"`
	} `json:"rootfs"`
}

type containerConfig struct {
	Hostname        string
	Domainname      string
	User            string
	AttachStdin     bool
	AttachStdout    bool
	AttachStderr    bool
	ExposedPorts    map[string]struct{} `json:",omitempty"`
	Tty             bool
	OpenStdin       bool
	StdinOnce       bool
	Env             []string
	Cmd             strSlice
	Healthcheck     *healthConfig `json:",omitempty"`
	ArgsEscaped     bool          `json:",omitempty"`
	Image           string
	Volumes         map[string]struct{}
	WorkingDir      string
	Entrypoint      strSlice
	NetworkDisabled bool   `json:",omitempty"`
	MacAddress      string `json:",omitempty"`
	OnBuild         []string
	Labels          map[string]string
	StopSignal      string   `json:",omitempty"`
	StopTimeout     *int     `json:",omitempty"`
	Shell           strSlice `json:",omitempty"`
}

type healthConfig struct {
	Test          []string      `json:",omitempty"`
	Interval      time.Duration `json:",omitempty"`
	Timeout       time.Duration `json:",omitempty"`
	StartPeriod   time.Duration `json:",omitempty"`
	StartInterval time.Duration `json:",omitempty"`
	Retries       int           `json:",omitempty"`
}

// strSlice is a list of strings that decodes from a single string too (docker's
// strslice.StrSlice).
type strSlice []string

func (s *strSlice) UnmarshalJSON(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	p := make([]string, 0, 1)
	if err := json.Unmarshal(b, &p); err != nil {
		var one string
		if err := json.Unmarshal(b, &one); err != nil {
			return err
		}
		p = append(p, one)
	}
	*s = p
	return nil
}

// v1ID is docker's v1.CreateID: the digest of the v1 JSON without its id, with the layer's
// chain ID as "layer_id" and the parent's v1 ID (if any) as "parent", keys sorted.
func v1ID(v v1Image, chainID, parent digest.Digest) (digest.Digest, error) {
	v.ID = ""
	data, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	var m map[string]*json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return "", err
	}
	m["layer_id"] = rawJSON(chainID)
	if parent != "" {
		m["parent"] = rawJSON(parent)
	}
	data, err = json.Marshal(m)
	if err != nil {
		return "", err
	}
	return digest.FromBytes(data), nil
}

func rawJSON(d digest.Digest) *json.RawMessage {
	b, _ := json.Marshal(d)
	return (*json.RawMessage)(&b)
}

// v1Layers returns the legacy v1 JSON of each layer of an image, bottom first. Only the top
// one carries the image's config; the others are empty but for their id, parent, os and a
// creation time of 0. Docker writes that time in the daemon's local zone; this is UTC, so
// the bytes do not depend on the machine.
func v1Layers(img *imageJSON, diffIDs []digest.Digest) ([][]byte, error) {
	out := make([][]byte, len(diffIDs))
	chains := chainIDs(diffIDs)
	var parent digest.Digest
	for i := range diffIDs {
		epoch := time.Unix(0, 0).UTC()
		v := v1Image{Created: &epoch}
		if i == len(diffIDs)-1 {
			v = img.v1Image
		}
		id, err := v1ID(v, chains[i], parent)
		if err != nil {
			return nil, err
		}
		v.ID = id.Encoded()
		if parent != "" {
			v.Parent = parent.Encoded()
		}
		v.OS = img.OS
		if out[i], err = json.Marshal(v); err != nil {
			return nil, err
		}
		parent = id
	}
	return out, nil
}
