// Package layer turns an OCI image layer (a tar, plain, gzip or zstd) into
// what the node mounts: an EROFS image followed by its dm-verity hash tree,
// and tells the tree's root hash, which the publisher signs.
//
// The conversion is deterministic: the same uncompressed tar always gives
// the same bytes, because the EROFS writer (package erofs) is reproducible,
// its UUID and build time are fixed by the layer's DiffID (sha256 of the
// uncompressed tar), and so is the verity salt. That is what lets the
// publisher ship only signatures: the node re-derives the image from the
// layer it pulls, and the kernel's signature check on the verity device
// fails if a single byte differs.
//
// OCI whiteouts become overlayfs ones, as containerd's overlay and erofs
// snapshotters make them: a ".wh.NAME" entry becomes a character device
// 0:0 named NAME, and ".wh..wh..opq" in a directory sets
// trusted.overlay.opaque="y" on it. Other ".wh..wh." names (aufs
// metadata) are dropped. trusted.overlay.* xattrs that the tar itself
// carries are dropped too: only this conversion decides what overlayfs
// sees as whiteouts, opaque directories or redirects.
//
// Layer tars are hostile input. Names are cleaned and may not leave the
// root (erofs.TreeFromTar), sizes are checked against the data present,
// symlink targets are kept as they are (they are resolved inside the
// container), and device nodes are kept as EROFS device inodes: they are
// inert unless the container may open devices, as with any snapshotter.
// Errors are returned, never panics.
package layer
