// Package imagesig signs and verifies the layers of the container images
// in an OCI image layout, for the node's kernel to check.
//
// Sign converts every layer of every image manifest (an index stands for
// its manifests) with package layer, checks the DiffID against the image
// config, signs each dm-verity root hash with the containers key, and
// stores one layersig document per manifest as an OCI 1.1 referrer in the
// layout. Verify re-derives every layer the same way and checks that a
// referrer holds a signature by the given certificate over exactly that
// root hash: what the kernel will check on the node, checked on the build
// host first.
//
// Signing is all or nothing: every layer is converted and signed before
// anything is written, and the referrers enter index.json in one atomic
// update. Re-signing with the same certificate replaces that
// certificate's referrer (found by its sha256 fingerprint annotation)
// instead of adding a second one.
package imagesig
