// Package verity builds and verifies dm-verity hash trees, byte for byte
// in the layout cryptsetup's veritysetup writes, and signs their root hashes
// the way the kernel checks them (root_hash_sig_key_desc).
//
// The tree is the one described in the kernel's
// Documentation/admin-guide/device-mapper/verity.rst and written by
// cryptsetup's lib/verity/verity_hash.c: level 0 holds the digests of the
// data blocks, each level above holds the digests of the hash blocks below,
// and the top level is a single block whose digest is the root hash. The
// levels are stored top first after an optional 512-byte v1 superblock
// (lib/verity/verity.c, struct verity_sb). Hash format 1 salts before the
// block and pads every digest to a power of two; format 0 (Chrome OS) salts
// after the block and packs the digests.
//
// The package writes its own tree instead of using a library: the engine
// must be at least twice as fast as veritysetup, so level 0 is hashed in
// parallel chunks read with large ReadAt calls, and the upper levels are
// built while streaming, so memory stays bounded whatever the data size.
// Hashing uses crypto/sha256, crypto/sha512 and crypto/sha1 (SHA-NI on amd64).
// Root hash signatures are detached PKCS#7 (internal/p7, over
// github.com/smallstep/pkcs7). The signature partition format is the
// Discoverable Partitions Specification's usr-verity-sig JSON
// (https://uapi-group.org/specifications/specs/discoverable_partitions_specification/).
//
// # Security
//
// Superblocks, signature JSON and hash devices are meant to be read from
// hostile input: parsers bound every size before use, return wrapped errors
// and do not panic; they are fuzzed (testdata/fuzz).
package verity
