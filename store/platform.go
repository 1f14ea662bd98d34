package store

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// platform returns the platform to pick from image indexes: s.Platform, else the host's.
func (s *Store) platform() ocispec.Platform {
	if s.Platform != nil {
		p := *s.Platform
		p.OS = strings.ToLower(p.OS)
		p.Architecture, p.Variant = normalizeArch(strings.ToLower(p.Architecture), strings.ToLower(p.Variant))
		return p
	}
	return hostPlatform
}

// hostPlatform is the platform this program runs on. For arm the variant is the GOARM
// the program was built for: the machine may do more, never less.
var hostPlatform = func() ocispec.Platform {
	p := ocispec.Platform{OS: runtime.GOOS, Architecture: runtime.GOARCH}
	if p.Architecture == "arm" {
		p.Variant = "v7"
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, kv := range bi.Settings {
				if kv.Key == "GOARM" && kv.Value != "" {
					p.Variant = "v" + kv.Value[:1] // "7" or "6,softfloat"
				}
			}
		}
	}
	p.Architecture, p.Variant = normalizeArch(p.Architecture, p.Variant)
	return p
}()

// normalizeArch maps the architecture names and variants images use to Go's, with the
// variants that mean "the default" made empty, so equal platforms compare equal.
func normalizeArch(arch, variant string) (string, string) {
	switch arch {
	case "x86_64", "x86-64", "amd64":
		arch = "amd64"
		if variant == "v1" {
			variant = ""
		}
	case "i386", "i686", "386":
		arch = "386"
	case "aarch64", "arm64":
		arch = "arm64"
		if variant == "v8" {
			variant = ""
		}
	case "armhf":
		arch, variant = "arm", "v7"
	case "armel":
		arch, variant = "arm", "v6"
	case "arm":
		if variant == "" {
			variant = "v7"
		}
		if variant == "8" || variant == "7" || variant == "6" || variant == "5" {
			variant = "v" + variant
		}
	}
	return arch, variant
}

// platformRank says how well an image index entry's platform p suits want: -1 not at
// all, else lower is better. An entry without platform suits anything, last.
func platformRank(want ocispec.Platform, p *ocispec.Platform) int {
	if p == nil {
		return 1000
	}
	arch, variant := normalizeArch(strings.ToLower(p.Architecture), strings.ToLower(p.Variant))
	if strings.ToLower(p.OS) != want.OS || arch != want.Architecture {
		return -1
	}
	switch {
	case variant == want.Variant:
		return 0
	case want.Variant == "":
		// No variant asked for (or the default one): any will do, the default first.
		return 1 + variantLevel(variant)
	case arch == "arm":
		// An armv7 machine runs v6 and v5 code too, preferring the closest.
		w, v := variantLevel(want.Variant), variantLevel(variant)
		if v > 0 && v < w {
			return w - v
		}
	}
	return -1
}

// variantLevel is N for a variant "vN", 0 for anything else.
func variantLevel(v string) int {
	n, err := strconv.Atoi(strings.TrimPrefix(v, "v"))
	if err != nil || !strings.HasPrefix(v, "v") {
		return 0
	}
	return n
}

// platformString formats a platform as os/arch[/variant].
func platformString(p ocispec.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// ParsePlatform reads a platform as docker's --platform takes it: os/arch[/variant].
func ParsePlatform(s string) (*ocispec.Platform, error) {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" || (len(parts) == 3 && parts[2] == "") {
		return nil, fmt.Errorf("invalid platform %q: want os/arch[/variant], e.g. linux/arm64", s)
	}
	p := &ocispec.Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return p, nil
}
