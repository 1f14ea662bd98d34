package main

import (
	"errors"
	"fmt"

	"github.com/distribution/reference"
	"github.com/spf13/cobra"
)

func newTagCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "tag SOURCE_IMAGE[:TAG] TARGET_IMAGE[:TAG]",
		Short: "Give an image in the store another name",
		Long: `Give the image SOURCE names (a name, an image ID or a prefix of 12 or more hex digits)
the name TARGET as well, as docker tag does. A TARGET without a tag means :latest; a name
TARGET already had moves to this image. Multi-platform images keep every platform.`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := g.open()
			if err != nil {
				return err
			}
			dest, err := reference.ParseNormalizedNamed(args[1])
			if err != nil {
				return fmt.Errorf("invalid reference format: %s: %v", args[1], err)
			}
			if _, ok := dest.(reference.Digested); ok {
				return errors.New("refusing to create a tag with a digest reference")
			}
			img, err := s.Resolve(args[0])
			if err != nil {
				return err
			}
			// The descriptor index.json has for the image: an image index stays one.
			return s.Tag(reference.TagNameOnly(dest), img.Target)
		},
	}
}
