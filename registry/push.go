package registry

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/oci"
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
// directory layoutDir (see resolveLayoutRef: "" names the only image) to
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
	idx, err := readIndexFile(layoutDir)
	if err != nil {
		return nil, err
	}
	src, err := oci.NewFromFS(ctx, os.DirFS(layoutDir))
	if err != nil {
		return nil, fmt.Errorf("OCI layout %s: %w", layoutDir, err)
	}
	head := func(d ocispec.Descriptor) (*manifestHead, error) {
		b, err := content.FetchAll(ctx, src, d)
		if err != nil {
			return nil, fmt.Errorf("OCI layout %s: manifest %s: %w", layoutDir, d.Digest, err)
		}
		h, err := parseManifestHead(b)
		if err != nil {
			return nil, fmt.Errorf("OCI layout %s: manifest %s: %w", layoutDir, d.Digest, err)
		}
		return h, nil
	}
	root, err := resolveLayoutRef(idx, layoutRef, func(d ocispec.Descriptor) (bool, error) {
		h, err := head(d)
		return err == nil && h.Subject != nil, err
	})
	if err != nil {
		return nil, fmt.Errorf("OCI layout %s: %w", layoutDir, err)
	}
	subjects := []ocispec.Descriptor{root}
	if isIndex(root.MediaType) {
		b, err := content.FetchAll(ctx, src, root)
		if err != nil {
			return nil, fmt.Errorf("OCI layout %s: index %s: %w", layoutDir, root.Digest, err)
		}
		child, err := parseIndex(b)
		if err != nil {
			return nil, fmt.Errorf("OCI layout %s: index %s: %w", layoutDir, root.Digest, err)
		}
		subjects = append(subjects, child.Manifests...)
	}
	// The layout's referrers of the image, then of those, breadth first.
	var referrers []ocispec.Descriptor
	seen := map[string]bool{}
	for depth := 0; depth < maxReferrerDepth && len(subjects) > 0; depth++ {
		var next []ocispec.Descriptor
		for _, s := range subjects {
			preds, err := src.Predecessors(ctx, s)
			if err != nil {
				return nil, fmt.Errorf("OCI layout %s: referrers of %s: %w", layoutDir, s.Digest, err)
			}
			for _, p := range preds {
				if seen[p.Digest.String()] || !isManifest(p.MediaType) && !isIndex(p.MediaType) {
					continue
				}
				h, err := head(p)
				if err != nil {
					return nil, err
				}
				if h.Subject == nil || h.Subject.Digest != s.Digest {
					continue // e.g. an index that lists the manifest
				}
				seen[p.Digest.String()] = true
				p.ArtifactType = h.artifactType()
				referrers = append(referrers, p)
				next = append(next, p)
				if len(referrers) > opts.maxReferrers() {
					return nil, fmt.Errorf("OCI layout %s: more than %d referrers", layoutDir, opts.maxReferrers())
				}
			}
		}
		subjects = next
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
