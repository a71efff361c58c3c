// Package oci reads and writes OCI image layouts (image-spec 1.1): a
// directory, as skopeo, umoci or buildah write it, or a tar of one (an OCI
// archive, read in place through an io.ReaderAt, so a block device works
// too). It resolves references (org.opencontainers.image.ref.name),
// walks indexes to their image manifests, opens blobs with their digest
// and size checked while they are read, finds OCI 1.1 referrers of a
// manifest, and adds blobs and referrer manifests to a directory layout
// (index.json is replaced atomically; existing entries are kept).
//
// Layouts are untrusted input: every JSON document is read with a size
// bound, names inside a directory layout are opened through os.Root (a
// symlink cannot lead out of it), archives are indexed without following
// links, and a blob whose bytes do not match its descriptor is an error.
// Errors are returned, never panics; the parsers are fuzzed.
package oci
