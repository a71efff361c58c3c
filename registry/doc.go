// Package registry pushes OCI images with their referrers (osguard's layer
// signature artifact among them) to an OCI registry, and pulls them back
// into an OCI image layout directory that the node then imports.
//
// # What travels
//
// Push sends the image (an image manifest or an index with all its
// manifests), its config and layers, and every referrer of it found in the
// layout: a manifest whose subject is the image manifest (or the index, or
// one of the index's manifests), e.g. the artifact of type
// application/vnd.osguard.layer-signatures.v1+json, and referrers of those
// in turn. Pull fetches the image (for one platform, linux/amd64 by
// default, or the whole index) and its referrers, and writes a layout whose
// index.json names the image (annotations org.opencontainers.image.ref.name
// = the tag, io.containerd.image.name = the full reference) and lists each
// referrer with its artifactType.
//
// # Referrers without a referrers API
//
// Debian's docker-registry (distribution 2.8) predates OCI 1.1 and has no
// referrers API (GET /v2/NAME/referrers/DIGEST answers 404). OCI 1.1
// defines a fallback that works on any registry: the referrers tag schema,
// a tag "sha256-<hex of the subject digest>" holding an image index that
// lists the referrers. oras-go maintains it on push: when a manifest with a
// subject is pushed and the registry does not answer with an OCI-Subject
// header, it fetches the tag's index, adds the referrer, pushes the new
// index, moves the tag and deletes the old index (so the registry needs
// deletes enabled, or old indexes stay behind, unreferenced). On pull,
// oras-go probes the referrers API once and falls back to the tag. Either
// way, Pull checks that every referrer it was told about really names the
// image as its subject before it writes it.
//
// # oras-go pieces
//
// oras.land/oras-go/v2: content/oci (a read-only store over the source
// layout for push; a writable store for the blobs of a pull, with digests
// and sizes checked as they are written), registry/remote (the
// distribution API client, with the referrers capability auto-detected),
// registry/remote/auth (anonymous token flow only; no credentials are
// read), and oras.Copy/oras.CopyGraph for the transfer. index.json of a
// pulled layout is written here, not by oras, so that its order is
// deterministic and it lists the image and its referrers only.
//
// # Security stance
//
// HTTPS with certificate checks is the default. Plain HTTP is used only for
// loopback registries (127.0.0.0/8, ::1, localhost: the test registry and
// the node's forward to it) or when the caller asks for it (--plain-http).
// Every blob is checked against its digest and size before it lands in a
// layout; manifests and indexes are read with a size bound, and the number
// of referrers is bounded. A pull writes its layout in a temporary
// directory next to the destination and renames it into place only when
// everything arrived and checked out, so a failed pull leaves nothing
// behind. A registry is a transport, not a trust anchor: the node checks
// the layer signatures in the kernel, whatever the registry served.
// Tests talk only to a docker-registry on 127.0.0.1 (internal/registrytest).
package registry
