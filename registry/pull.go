package registry

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/oci"
)

// PullResult says what Pull wrote.
type PullResult struct {
	Layout string `json:"layout"` // the layout directory written
	// Refs are the full image references the layout names, one per image
	// (io.containerd.image.name of its index.json entry): the node imports
	// them under these names.
	Refs []string `json:"refs"`
	// RefName is the image's org.opencontainers.image.ref.name in the
	// layout (the tag; empty for a pull by digest), as in oci:LAYOUT:RefName.
	RefName   string               `json:"refName"`
	Image     ocispec.Descriptor   `json:"image"`     // the image entry of index.json
	Referrers []ocispec.Descriptor `json:"referrers"` // the referrer entries of index.json (artifactType set), subjects first
	Bytes     int64                `json:"bytes"`     // bytes downloaded
	Duration  time.Duration        `json:"durationNs"`
}

// DefaultPlatform is the platform Pull selects from an index by default.
var DefaultPlatform = ocispec.Platform{OS: "linux", Architecture: "amd64"}

// Pull fetches source "HOST[:PORT]/REPO:TAG" (or @sha256:HEX), for
// opts.Platform (default linux/amd64) when it is an index unless
// opts.AllPlatforms, with its referrers (referrers API when the registry
// has one, else the referrers tag schema), and writes an OCI image layout
// at layoutDir, which must not exist or be an empty directory. The layout
// is assembled in a temporary directory beside layoutDir and renamed into
// place, so on error nothing is left at layoutDir.
func Pull(ctx context.Context, source, layoutDir string, opts Options) (*PullResult, error) {
	start := time.Now()
	ref, err := ParseRef(source)
	if err != nil {
		return nil, err
	}
	layoutDir = filepath.Clean(layoutDir)
	if err := checkEmptyOrAbsent(layoutDir); err != nil {
		return nil, err
	}
	repo, err := opts.repository(ref)
	if err != nil {
		return nil, err
	}
	platform := DefaultPlatform
	if opts.Platform != nil {
		platform = *opts.Platform
	}

	opts.progress("resolving %s", ref)
	root, err := repo.Resolve(ctx, ref.reference())
	if err != nil {
		return nil, explain(err, ref)
	}
	if err := checkDescriptor(root); err != nil {
		return nil, explain(fmt.Errorf("resolved to %w", err), ref)
	}
	if ref.Digest != "" && root.Digest.String() != ref.Digest {
		return nil, fmt.Errorf("%s: the registry resolved it to %s: digest mismatch", ref, root.Digest)
	}

	tmp, err := os.MkdirTemp(filepath.Dir(layoutDir), "."+filepath.Base(layoutDir)+".pull-")
	if err != nil {
		return nil, fmt.Errorf("pull %s: %w", ref, err)
	}
	done := false
	defer func() {
		if !done {
			os.RemoveAll(tmp)
		}
	}()
	store, err := oci.NewWithContext(ctx, tmp)
	if err != nil {
		return nil, fmt.Errorf("pull %s: %w", ref, err)
	}
	store.AutoSaveIndex = false

	res := &PullResult{Layout: layoutDir}
	copts := oras.DefaultCopyGraphOptions
	copts.PreCopy, copts.PostCopy, copts.OnCopySkipped = opts.copyHooks("fetched", &res.Bytes)

	image := root
	subjects := []ocispec.Descriptor{root}
	if isIndex(root.MediaType) {
		b, err := content.FetchAll(ctx, repo, root)
		if err != nil {
			return nil, explain(fmt.Errorf("index %s: %w", root.Digest, err), ref)
		}
		idx, err := parseIndex(b)
		if err != nil {
			return nil, fmt.Errorf("%s: index %s: %w", ref, root.Digest, err)
		}
		if opts.AllPlatforms {
			subjects = append(subjects, idx.Manifests...)
		} else {
			if image, err = selectPlatform(idx, platform); err != nil {
				return nil, fmt.Errorf("%s: %w", ref, err)
			}
			subjects = []ocispec.Descriptor{image}
			opts.progress("selected %s for %s", image.Digest, platformString(platform))
		}
	}
	if err := oras.CopyGraph(ctx, repo, checkedStore{store}, image, copts); err != nil {
		return nil, explain(err, ref)
	}

	// Referrers, breadth first, each checked to name its subject.
	seen := map[string]bool{}
	for depth := 0; depth < maxReferrerDepth && len(subjects) > 0; depth++ {
		var next []ocispec.Descriptor
		for _, s := range subjects {
			var found []ocispec.Descriptor
			err := repo.Referrers(ctx, s, "", func(rs []ocispec.Descriptor) error {
				found = append(found, rs...)
				if len(found) > opts.maxReferrers() {
					return fmt.Errorf("more than %d referrers", opts.maxReferrers())
				}
				return nil
			})
			if err != nil {
				return nil, explain(fmt.Errorf("referrers of %s: %w", s.Digest, err), ref)
			}
			for _, r := range found {
				if seen[r.Digest.String()] {
					continue
				}
				if err := checkDescriptor(r); err != nil {
					return nil, fmt.Errorf("%s: referrer of %s: %w", ref, s.Digest, err)
				}
				seen[r.Digest.String()] = true
				if err := oras.CopyGraph(ctx, repo, checkedStore{store}, r, copts); err != nil {
					return nil, explain(fmt.Errorf("referrer %s: %w", r.Digest, err), ref)
				}
				b, err := content.FetchAll(ctx, store, r)
				if err != nil {
					return nil, fmt.Errorf("%s: referrer %s: %w", ref, r.Digest, err)
				}
				h, err := parseManifestHead(b)
				if err != nil {
					return nil, fmt.Errorf("%s: referrer %s: %w", ref, r.Digest, err)
				}
				if h.Subject == nil || h.Subject.Digest != s.Digest {
					return nil, fmt.Errorf("%s: the registry lists %s as a referrer of %s, but its subject is %v", ref, r.Digest, s.Digest, subjectDigest(h))
				}
				entry := ocispec.Descriptor{
					MediaType:    r.MediaType,
					Digest:       r.Digest,
					Size:         r.Size,
					ArtifactType: h.artifactType(),
					Annotations:  r.Annotations,
				}
				res.Referrers = append(res.Referrers, entry)
				next = append(next, r)
				if len(res.Referrers) > opts.maxReferrers() {
					return nil, fmt.Errorf("%s: more than %d referrers", ref, opts.maxReferrers())
				}
			}
		}
		subjects = next
	}

	res.Image = ocispec.Descriptor{MediaType: image.MediaType, Digest: image.Digest, Size: image.Size, Platform: image.Platform}
	name := ref.Registry + "/" + ref.Repository
	if ref.Tag != "" {
		name += ":" + ref.Tag
		res.RefName = ref.Tag
	}
	if image.Digest != root.Digest || ref.Tag == "" {
		name += "@" + image.Digest.String()
	}
	res.Image.Annotations = map[string]string{AnnotationImageName: name}
	if res.RefName != "" {
		res.Image.Annotations[ocispec.AnnotationRefName] = res.RefName
	}
	res.Refs = []string{name}
	if err := writeIndexFile(tmp, append([]ocispec.Descriptor{res.Image}, res.Referrers...)); err != nil {
		return nil, fmt.Errorf("pull %s: %w", ref, err)
	}
	// oras's store stages blobs in ingest/; it is empty once all arrived.
	if err := os.Remove(filepath.Join(tmp, "ingest")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("pull %s: %w", ref, err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return nil, fmt.Errorf("pull %s: %w", ref, err)
	}
	if err := os.Rename(tmp, layoutDir); err != nil {
		return nil, fmt.Errorf("pull %s: writing %s: %w", ref, layoutDir, err)
	}
	done = true
	res.Duration = time.Since(start)
	opts.progress("pulled %s into %s with %d referrer(s), %d bytes in %v", name, layoutDir, len(res.Referrers), res.Bytes, res.Duration.Round(time.Millisecond))
	return res, nil
}

func subjectDigest(h *manifestHead) string {
	if h.Subject == nil {
		return "none"
	}
	return h.Subject.Digest.String()
}

// checkEmptyOrAbsent refuses a destination that holds anything.
func checkEmptyOrAbsent(dir string) error {
	ents, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("layout destination %s: %w", dir, err)
	case len(ents) > 0:
		return fmt.Errorf("layout destination %s exists and is not empty", dir)
	}
	return nil
}
