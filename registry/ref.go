package registry

import (
	"fmt"
	"net"
	"strings"

	orasreg "oras.land/oras-go/v2/registry"
)

// Ref is a parsed registry reference "HOST[:PORT]/REPO:TAG" or
// "HOST[:PORT]/REPO@sha256:HEX".
type Ref struct {
	Registry   string // "HOST[:PORT]"
	Repository string // "REPO" (may contain slashes)
	Tag        string // empty for a digest reference
	Digest     string // "sha256:HEX" for a digest reference (also set for TAG@DIGEST)
}

// String returns the reference in its canonical form.
func (r Ref) String() string {
	s := r.Registry + "/" + r.Repository
	if r.Tag != "" {
		s += ":" + r.Tag
	}
	if r.Digest != "" {
		s += "@" + r.Digest
	}
	return s
}

// reference returns what the distribution API names the object by: the
// digest when there is one, else the tag.
func (r Ref) reference() string {
	if r.Digest != "" {
		return r.Digest
	}
	return r.Tag
}

// Loopback reports whether the registry host is a loopback address
// (127.0.0.0/8, ::1 or localhost), where plain HTTP is used by default.
func (r Ref) Loopback() bool {
	host := r.Registry
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// maxRefLen bounds a reference; the distribution spec's longest names are
// far shorter.
const maxRefLen = 4096

// ParseRef parses "HOST[:PORT]/REPO:TAG", "HOST[:PORT]/REPO@sha256:HEX" or
// "HOST[:PORT]/REPO:TAG@sha256:HEX". The host is required (there is no
// default registry) and so is a tag or a digest (there is no default tag).
func ParseRef(s string) (Ref, error) {
	if len(s) > maxRefLen {
		return Ref{}, fmt.Errorf("registry reference longer than %d bytes", maxRefLen)
	}
	host, _, ok := strings.Cut(s, "/")
	if !ok || host == "" {
		return Ref{}, fmt.Errorf("registry reference %q: want HOST[:PORT]/REPO:TAG", s)
	}
	if !strings.ContainsAny(host, ".:") && host != "localhost" {
		return Ref{}, fmt.Errorf("registry reference %q: %q is not a registry host (no default registry; write HOST[:PORT]/REPO:TAG)", s, host)
	}
	r, err := orasreg.ParseReference(s)
	if err != nil {
		return Ref{}, fmt.Errorf("registry reference %q: %w", s, err)
	}
	out := Ref{Registry: r.Registry, Repository: r.Repository}
	// oras keeps only the digest of TAG@DIGEST; recover the tag for names.
	rest := strings.TrimPrefix(s, r.Registry+"/"+r.Repository)
	tagPart, digestPart, hasDigest := strings.Cut(rest, "@")
	if strings.HasPrefix(tagPart, ":") {
		out.Tag = tagPart[1:]
	}
	if hasDigest {
		if _, err := r.Digest(); err != nil {
			return Ref{}, fmt.Errorf("registry reference %q: %w", s, err)
		}
		out.Digest = digestPart
		if !strings.HasPrefix(digestPart, "sha256:") {
			return Ref{}, fmt.Errorf("registry reference %q: only sha256 digests are supported", s)
		}
	}
	if out.Tag == "" && out.Digest == "" {
		return Ref{}, fmt.Errorf("registry reference %q: no tag or digest (write HOST[:PORT]/REPO:TAG)", s)
	}
	if out.Tag != "" {
		tr := orasreg.Reference{Registry: out.Registry, Repository: out.Repository, Reference: out.Tag}
		if err := tr.ValidateReferenceAsTag(); err != nil {
			return Ref{}, fmt.Errorf("registry reference %q: %w", s, err)
		}
	}
	return out, nil
}
