package registry

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/osguard/osguard/oci"
	"oras.land/oras-go/v2"
	orasoci "oras.land/oras-go/v2/content/oci"
	"oras.land/oras-go/v2/registry/remote"
)

// PushResult says what Push sent.
type PushResult struct {
	Target    string               `json:"target"`    // the reference pushed to, canonical
	Image     ocispec.Descriptor   `json:"image"`     // the image manifest or index the tag names
	Referrers []ocispec.Descriptor `json:"referrers"` // referrers pushed (artifactType set), subjects first
	Bytes     int64                `json:"bytes"`     // bytes uploaded (blobs already present not counted)
	Duration  time.Duration        `json:"durationNs"`
}

// Push pushes the image that layoutRef names in the OCI image layout
// directory layoutDir (as oci.Layout.Resolve reads it: "" names the only
// image) to
// target "HOST[:PORT]/REPO:TAG", with every referrer of it that the layout
// holds. A registry without the referrers API gets the referrers tag
// schema's index ("sha256-<hex>").
func Push(ctx context.Context, layoutDir, layoutRef, target string, opts Options) (*PushResult, error) {
	start := time.Now()
	ref, err := ParseRef(target)
	if err != nil {
		return nil, err
	}
	if ref.Tag == "" || ref.Digest != "" {
		return nil, fmt.Errorf("push target %s: want HOST[:PORT]/REPO:TAG (a tag, no digest)", ref)
	}
	layout, err := oci.Open(layoutDir)
	if err != nil {
		return nil, fmt.Errorf("OCI layout %s: %w", layoutDir, err)
	}
	defer layout.Close()
	root, err := layout.Resolve(layoutRef)
	if err != nil {
		return nil, fmt.Errorf("OCI layout %s: %w", layoutDir, err)
	}
	root.Annotations = nil
	subjects := []ocispec.Descriptor{root}
	if isIndex(root.MediaType) {
		images, err := layout.Images(root)
		if err != nil {
			return nil, fmt.Errorf("OCI layout %s: %w", layoutDir, err)
		}
		for _, im := range images {
			subjects = append(subjects, im.Descriptor)
		}
	}
	// The layout's referrers of the image, then of those, breadth first.
	var referrers []ocispec.Descriptor
	seen := map[string]bool{}
	for depth := 0; depth < maxReferrerDepth && len(subjects) > 0; depth++ {
		var next []ocispec.Descriptor
		for _, s := range subjects {
			rs, err := layout.Referrers(s.Digest, "")
			if err != nil {
				return nil, fmt.Errorf("OCI layout %s: referrers of %s: %w", layoutDir, s.Digest, err)
			}
			for _, r := range rs {
				if seen[r.Digest.String()] {
					continue
				}
				seen[r.Digest.String()] = true
				referrers = append(referrers, r)
				next = append(next, r)
				if len(referrers) > opts.maxReferrers() {
					return nil, fmt.Errorf("OCI layout %s: more than %d referrers", layoutDir, opts.maxReferrers())
				}
			}
		}
		subjects = next
	}
	// oras copies from its own read-only view of the same directory.
	src, err := orasoci.NewFromFS(ctx, os.DirFS(layoutDir))
	if err != nil {
		return nil, fmt.Errorf("OCI layout %s: %w", layoutDir, err)
	}

	repo, err := opts.repository(ref)
	if err != nil {
		return nil, err
	}
	res := &PushResult{Target: ref.String(), Image: root}
	copts := oras.DefaultCopyGraphOptions
	copts.PreCopy, copts.PostCopy, copts.OnCopySkipped = opts.copyHooks("pushed", &res.Bytes)
	opts.progress("pushing %s (%s) to %s", root.Digest, kind(root), ref)
	if _, err := oras.Copy(ctx, src, root.Digest.String(), repo, ref.Tag, oras.CopyOptions{CopyGraphOptions: copts}); err != nil {
		return nil, explain(err, ref)
	}
	for _, r := range referrers {
		opts.progress("pushing referrer %s (%s)", r.Digest, r.ArtifactType)
		if err := oras.CopyGraph(ctx, src, repo, r, copts); err != nil {
			var rerr *remote.ReferrersError
			if !errors.As(err, &rerr) || !rerr.IsReferrersIndexDelete() {
				return nil, explain(fmt.Errorf("referrer %s: %w", r.Digest, err), ref)
			}
			// The new referrers index is in place; only the old one could
			// not be deleted (a registry with deletes disabled keeps it).
			opts.progress("warning: old referrers index of %s left in the registry: %v", r.Digest, err)
		}
		res.Referrers = append(res.Referrers, r)
	}
	res.Duration = time.Since(start)
	opts.progress("pushed %s with %d referrer(s), %d bytes in %v", ref, len(res.Referrers), res.Bytes, res.Duration.Round(time.Millisecond))
	return res, nil
}
