package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"
	orasreg "oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/errcode"
)

// Options configures Push and Pull.
type Options struct {
	// PlainHTTP talks HTTP instead of HTTPS to any registry. Loopback
	// registries (127.0.0.0/8, ::1, localhost) use HTTP without it.
	PlainHTTP bool
	// Progress receives one line per blob or manifest transferred or
	// found present (nil: silent). The CLI passes stderr.
	Progress io.Writer
	// Platform selects the image of an index on Pull (nil: linux/amd64).
	Platform *ocispec.Platform
	// AllPlatforms pulls a whole index instead of one platform's image.
	AllPlatforms bool
	// MaxBlobSize bounds each config and layer blob (0: 64 GiB).
	MaxBlobSize int64
	// MaxReferrers bounds the number of referrers taken along, over all
	// levels (0: 256).
	MaxReferrers int
	// HTTPClient overrides the HTTP client (nil: one with connect and
	// header timeouts and no proxy for loopback registries).
	HTTPClient *http.Client
}

func (o Options) maxBlobSize() int64 {
	if o.MaxBlobSize > 0 {
		return o.MaxBlobSize
	}
	return 64 << 30
}

func (o Options) maxReferrers() int {
	if o.MaxReferrers > 0 {
		return o.MaxReferrers
	}
	return 256
}

// maxReferrerDepth bounds referrers of referrers of ... the image.
const maxReferrerDepth = 4

func (o Options) progress(format string, args ...any) {
	if o.Progress != nil {
		fmt.Fprintf(o.Progress, format+"\n", args...)
	}
}

// repository returns the oras client for ref's repository.
func (o Options) repository(ref Ref) (*remote.Repository, error) {
	hc := o.HTTPClient
	if hc == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
		tr.ResponseHeaderTimeout = 60 * time.Second
		if ref.Loopback() {
			tr.Proxy = nil // a proxy cannot reach the host's loopback
		}
		hc = &http.Client{Transport: tr}
	}
	repo := &remote.Repository{
		Reference:        orasreg.Reference{Registry: ref.Registry, Repository: ref.Repository, Reference: ref.reference()},
		PlainHTTP:        o.PlainHTTP || ref.Loopback(),
		MaxMetadataBytes: MaxManifestSize,
		// Bounds what a hostile registry can make a referrers listing cost.
		ReferrerListMaxPages: 64,
		TagListMaxPages:      64,
		Client: &auth.Client{
			Client: hc,
			Header: http.Header{"User-Agent": {"osguard"}},
			Cache:  auth.NewCache(),
			// No Credential: anonymous access (and anonymous tokens) only.
		},
	}
	if err := repo.Reference.ValidateRepository(); err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	return repo, nil
}

// copyHooks returns the CopyGraph hooks that bound sizes and print progress.
func (o Options) copyHooks(verb string, bytes *int64) (pre, post, skipped func(context.Context, ocispec.Descriptor) error) {
	pre = func(_ context.Context, d ocispec.Descriptor) error {
		if isManifest(d.MediaType) || isIndex(d.MediaType) {
			if d.Size > MaxManifestSize {
				return fmt.Errorf("manifest %s: %d bytes, more than %d", d.Digest, d.Size, MaxManifestSize)
			}
		} else if d.Size > o.maxBlobSize() {
			return fmt.Errorf("blob %s: %d bytes, more than the limit %d", d.Digest, d.Size, o.maxBlobSize())
		}
		if d.Size < 0 {
			return fmt.Errorf("blob %s: negative size %d", d.Digest, d.Size)
		}
		return nil
	}
	post = func(_ context.Context, d ocispec.Descriptor) error {
		*bytes += d.Size
		o.progress("%s %s %s (%d bytes)", verb, short(d.Digest.String()), kind(d), d.Size)
		return nil
	}
	skipped = func(_ context.Context, d ocispec.Descriptor) error {
		o.progress("exists %s %s (%d bytes)", short(d.Digest.String()), kind(d), d.Size)
		return nil
	}
	return
}

func short(dg string) string {
	if len(dg) > 19 {
		return dg[:19]
	}
	return dg
}

// kind names a descriptor for progress lines.
func kind(d ocispec.Descriptor) string {
	switch {
	case isIndex(d.MediaType):
		return "index"
	case isManifest(d.MediaType) && d.ArtifactType != "":
		return "referrer " + d.ArtifactType
	case isManifest(d.MediaType):
		return "manifest"
	case d.MediaType == ocispec.MediaTypeImageConfig || d.MediaType == "application/vnd.docker.container.image.v1+json":
		return "config"
	default:
		return d.MediaType
	}
}

// Errors that callers can test with errors.Is.
var (
	ErrNotFound       = errdef.ErrNotFound          // the reference, a blob or a manifest is not in the registry
	ErrDigestMismatch = content.ErrMismatchedDigest // the registry served other bytes than the digest names
	ErrUnreachable    = errors.New("unreachable")   // no HTTP answer from the registry
)

// checkedStore is the pull destination: it names the blob in errors.
type checkedStore struct{ content.Storage }

func (s checkedStore) Push(ctx context.Context, d ocispec.Descriptor, r io.Reader) error {
	if err := s.Storage.Push(ctx, d, r); err != nil {
		return fmt.Errorf("%s %s: %w", kind(d), d.Digest, err)
	}
	return nil
}

// explain turns transport and oras errors into messages that say what
// happened: registry unreachable, reference unknown, content mismatch.
func explain(err error, ref Ref) error {
	if err == nil {
		return nil
	}
	var ne net.Error
	var ue *url.Error
	var ee *errcode.ErrorResponse
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.Is(err, content.ErrMismatchedDigest):
		return fmt.Errorf("%s: digest mismatch: the registry served content that does not match its digest: %w", ref, err)
	case errors.Is(err, content.ErrTrailingData), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%s: size mismatch: the registry served content of another size than its descriptor: %w", ref, err)
	case errors.Is(err, errdef.ErrNotFound), errors.As(err, &ee) && ee.StatusCode == http.StatusNotFound:
		if strings.HasPrefix(err.Error(), ref.String()+": ") {
			return fmt.Errorf("%w in the registry", err) // oras already names the reference
		}
		return fmt.Errorf("%s: not found in the registry: %w", ref, err)
	case errors.As(err, &ee) && (ee.StatusCode == http.StatusUnauthorized || ee.StatusCode == http.StatusForbidden):
		return fmt.Errorf("%s: access denied (osguard uses anonymous access only): %w", ref, err)
	case errors.As(err, &ne), errors.As(err, &ue):
		return fmt.Errorf("registry %s %w: %w", ref.Registry, ErrUnreachable, err)
	}
	return fmt.Errorf("%s: %w", ref, err)
}
