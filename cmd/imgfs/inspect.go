package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/distribution/reference"
	"github.com/imgfs/imgfs/store"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/cobra"
)

// inspectOut is what `imgfs inspect` prints.
type inspectOut struct {
	Name     string        `json:"name,omitempty"` // the name REF found, familiar
	RepoTags []string      `json:"repoTags"`       // every name of the image, familiar
	ID       digest.Digest `json:"id"`
	// Digest is the image manifest's; IndexDigest that of the image index (multi-arch
	// image) it was picked from for this platform, if any.
	Digest      digest.Digest     `json:"digest"`
	IndexDigest digest.Digest     `json:"indexDigest,omitempty"`
	MediaType   string            `json:"mediaType"`
	Platform    ocispec.Platform  `json:"platform"`
	Created     time.Time         `json:"created,omitzero"`
	Size        int64             `json:"size"` // as imgfs ls shows it
	Compressed  int64             `json:"compressedSize"`
	Annotations map[string]string `json:"annotations,omitempty"` // the manifest's
	Config      json.RawMessage   `json:"config"`                // as stored
	Layers      []inspectLayer    `json:"layers"`
}

type inspectLayer struct {
	Digest    digest.Digest `json:"digest"`
	Size      int64         `json:"size"`
	MediaType string        `json:"mediaType"`
	DiffID    digest.Digest `json:"diffID,omitempty"` // from the config
	Index     inspectIndex  `json:"index"`
}

// inspectIndex is what the layer index stored for a layer says, if one is.
type inspectIndex struct {
	State       string `json:"state"` // built, missing, stale or corrupt
	Size        int64  `json:"size,omitempty"`
	Compression string `json:"compression,omitempty"`
	Entries     int    `json:"entries,omitempty"`
	Checkpoints int    `json:"checkpoints,omitempty"`
	// DiffIDMismatch is set when the layer's content does not hash to the config's diffID.
	DiffIDMismatch digest.Digest `json:"diffIDMismatch,omitempty"`
}

func newInspectCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect REF",
		Short: "Show an image's manifest, config and layers as JSON",
		Long: `Show an image as JSON: its names, IDs, platform, config (as stored) and layers, with the
state of each layer's index (built, missing, stale, corrupt: all but built are built on
first use). Inspecting never reads a layer.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := g.open()
			if err != nil {
				return err
			}
			img, err := s.Resolve(args[0])
			if err != nil {
				return err
			}
			out, err := inspect(s, img)
			if err != nil {
				return err
			}
			data, err := json.MarshalIndent(out, "", "  ")
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s\n", data)
			return err
		},
	}
}

func inspect(s *store.Store, img store.Image) (*inspectOut, error) {
	raw, cfg, err := s.ReadConfig(img.ID)
	if err != nil {
		return nil, fmt.Errorf("image %s: config: %w", img.ID, err)
	}
	out := &inspectOut{
		RepoTags:    []string{},
		ID:          img.ID,
		Digest:      img.Descriptor.Digest,
		MediaType:   img.Descriptor.MediaType,
		Platform:    cfg.Platform,
		Created:     store.Created(cfg),
		Annotations: img.Manifest.Annotations,
		Config:      raw,
	}
	if out.MediaType == "" {
		out.MediaType = img.Manifest.MediaType
	}
	if img.Target.Digest != img.Descriptor.Digest {
		out.IndexDigest = img.Target.Digest
	}
	if img.Name != nil {
		out.Name = reference.FamiliarString(img.Name)
	}
	imgs, _ := s.Images()
	for _, i := range imgs {
		if i.ID == img.ID && i.Name != nil {
			out.RepoTags = append(out.RepoTags, reference.FamiliarString(i.Name))
		}
	}
	slices.Sort(out.RepoTags)
	out.RepoTags = slices.Compact(out.RepoTags)
	out.Size, out.Compressed, _ = newSizer(s).size(img)

	out.Layers = []inspectLayer{}
	for i, l := range img.Manifest.Layers {
		il := inspectLayer{Digest: l.Digest, Size: l.Size, MediaType: l.MediaType}
		if i < len(cfg.RootFS.DiffIDs) {
			il.DiffID = cfg.RootFS.DiffIDs[i]
		}
		ix, state := s.StoredIndex(l)
		il.Index.State = string(state)
		if ix != nil {
			il.Index.Size = ix.Size
			il.Index.Compression = ix.Compression.String()
			il.Index.Entries = ix.TOC.Len()
			il.Index.Checkpoints = len(ix.Checkpoints)
			if il.DiffID != "" && ix.DiffID != il.DiffID {
				il.Index.DiffIDMismatch = ix.DiffID
			}
		}
		out.Layers = append(out.Layers, il)
	}
	return out, nil
}
