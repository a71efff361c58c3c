package registry

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// MaxManifestSize bounds index.json, manifests, indexes and referrers
// indexes (the limit distribution itself uses for manifests).
const MaxManifestSize = 4 << 20

// AnnotationImageName is containerd's annotation for the full image name in
// an exported layout; containerd's importer uses it before ref.name.
const AnnotationImageName = "io.containerd.image.name"

// parseIndex parses an image index (index.json, or an index manifest) and
// checks what the rest of this package relies on: schemaVersion 2, known
// manifest media types, valid sha256 digests and sane sizes.
func parseIndex(b []byte) (*ocispec.Index, error) {
	if len(b) > MaxManifestSize {
		return nil, fmt.Errorf("larger than %d bytes", MaxManifestSize)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, fmt.Errorf("not an OCI image index: %w", err)
	}
	if idx.SchemaVersion != 2 {
		return nil, fmt.Errorf("schemaVersion %d, want 2", idx.SchemaVersion)
	}
	if idx.MediaType != "" && idx.MediaType != ocispec.MediaTypeImageIndex && idx.MediaType != mediaTypeDockerList {
		return nil, fmt.Errorf("mediaType %q is not an image index", idx.MediaType)
	}
	for i, d := range idx.Manifests {
		if err := checkDescriptor(d); err != nil {
			return nil, fmt.Errorf("manifests[%d]: %w", i, err)
		}
	}
	return &idx, nil
}

const (
	mediaTypeDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	mediaTypeDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
)

func isManifest(mt string) bool {
	return mt == ocispec.MediaTypeImageManifest || mt == mediaTypeDockerManifest
}

func isIndex(mt string) bool {
	return mt == ocispec.MediaTypeImageIndex || mt == mediaTypeDockerList
}

func checkDescriptor(d ocispec.Descriptor) error {
	if !isManifest(d.MediaType) && !isIndex(d.MediaType) {
		return fmt.Errorf("mediaType %q is not an image manifest or index", d.MediaType)
	}
	if err := d.Digest.Validate(); err != nil {
		return fmt.Errorf("digest %q: %w", d.Digest, err)
	}
	if d.Digest.Algorithm() != digest.SHA256 {
		return fmt.Errorf("digest %s: only sha256 is supported", d.Digest)
	}
	if d.Size <= 0 || d.Size > MaxManifestSize {
		return fmt.Errorf("%s: size %d out of range (1..%d)", d.Digest, d.Size, MaxManifestSize)
	}
	return nil
}

// manifestHead is what this package reads of a manifest or index.
type manifestHead struct {
	MediaType    string              `json:"mediaType"`
	ArtifactType string              `json:"artifactType"`
	Config       *ocispec.Descriptor `json:"config"`
	Subject      *ocispec.Descriptor `json:"subject"`
}

// parseManifestHead reads the mediaType, artifactType and subject of a
// manifest or index.
func parseManifestHead(b []byte) (*manifestHead, error) {
	if len(b) > MaxManifestSize {
		return nil, fmt.Errorf("manifest larger than %d bytes", MaxManifestSize)
	}
	var m manifestHead
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("not a manifest: %w", err)
	}
	if m.Subject != nil {
		if err := m.Subject.Digest.Validate(); err != nil {
			return nil, fmt.Errorf("subject digest %q: %w", m.Subject.Digest, err)
		}
	}
	return &m, nil
}

// artifactType is the artifact type of a manifest as the referrers API
// reports it: artifactType, else the config's media type.
func (m *manifestHead) artifactType() string {
	if m.ArtifactType != "" {
		return m.ArtifactType
	}
	if m.Config != nil {
		return m.Config.MediaType
	}
	return ""
}

// selectPlatform picks the manifest for platform p from an index's
// manifests: os and architecture must match, and the variant too when p
// names one. The first match wins, as in containerd.
func selectPlatform(idx *ocispec.Index, p ocispec.Platform) (ocispec.Descriptor, error) {
	var seen []string
	for _, d := range idx.Manifests {
		if d.Platform == nil {
			continue
		}
		seen = append(seen, platformString(*d.Platform))
		if !isManifest(d.MediaType) {
			continue
		}
		if d.Platform.OS == p.OS && d.Platform.Architecture == p.Architecture &&
			(p.Variant == "" || d.Platform.Variant == p.Variant) {
			return d, nil
		}
	}
	return ocispec.Descriptor{}, fmt.Errorf("no image for %s in the index (it has: %s)", platformString(p), listNames(seen))
}

func platformString(p ocispec.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// ParsePlatform parses "OS/ARCH[/VARIANT]".
func ParsePlatform(s string) (ocispec.Platform, error) {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" || (len(parts) == 3 && parts[2] == "") {
		return ocispec.Platform{}, fmt.Errorf("platform %q: want OS/ARCH[/VARIANT]", s)
	}
	p := ocispec.Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return p, nil
}

// writeIndexFile writes index.json (and oci-layout) of a layout directory.
func writeIndexFile(dir string, manifests []ocispec.Descriptor) error {
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: manifests}
	idx.SchemaVersion = 2
	b, err := json.Marshal(idx)
	if err != nil {
		return err
	}
	if _, err := parseIndex(b); err != nil {
		return fmt.Errorf("index.json to write: %w", err)
	}
	layout, _ := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	if err := writeSynced(filepath.Join(dir, ocispec.ImageLayoutFile), layout); err != nil {
		return err
	}
	return writeSynced(filepath.Join(dir, ocispec.ImageIndexFile), append(b, '\n'))
}

func writeSynced(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, bytes.NewReader(b))
	if serr := f.Sync(); err == nil {
		err = serr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// listNames joins names for an error message, the first ten of them.
func listNames(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	if len(names) > 10 {
		return strings.Join(names[:10], ", ") + fmt.Sprintf(" and %d more", len(names)-10)
	}
	return strings.Join(names, ", ")
}
