// Package erofs writes EROFS file system images: the read-only /usr volume
// (and later container layers) of an osguard image.
//
// An image is built from a Tree, which the caller fills or which
// TreeFromDir (a directory, read with lstat and never following symlinks)
// and TreeFromTar (a plain, gzip, zstd or xz tar stream) produce; one writer,
// Tree.WriteImage, then lays the image out. Because every input goes
// through the same Tree and the writer only looks at the Tree, a directory
// and a tar of it give the same bytes, and the same input always gives the
// same bytes.
//
// # Why our own writer
//
// github.com/erofs/go-erofs v0.3.1 (already in go.mod) has a writer, and
// it was checked against the criteria. It falls short on three:
// the superblock UUID is always zero with no option to set it (patching
// it after the write would work, the checksum being a plain crc32c); it
// cannot make hard links (SetNlink only overrides the count: two paths
// still get two inodes and two copies of the data), which tar streams and
// trees with st_nlink > 1 need; and a tar stream can only go in through
// Writer.Create, which spools every file to a temporary file and copies it
// again at Close. The subset of EROFS an immutable /usr needs is small
// (about 1,400 lines here with both inputs), so this package writes it directly, reusing
// nothing from go-erofs.
//
// # On-disk format
//
// The format follows the Linux kernel's fs/erofs/erofs_fs.h and
// Documentation/filesystems/erofs.rst. Only uncompressed images are
// written:
//
//   - 4 KiB blocks; block 0 holds the superblock at byte 1024, with the
//     crc32c superblock checksum (EROFS_FEATURE_COMPAT_SB_CHKSUM);
//   - the metadata area starts at block 1 (meta_blkaddr = 1) and holds the
//     inodes, 32-byte aligned; inodes are taken in breadth-first order of
//     the tree (children sorted by name), the root first, and each goes
//     into the first of the last 64 partly filled blocks where it fits
//     with its xattrs and inline tail, so that little space is lost;
//   - compact 32-byte inodes when uid, gid and link count fit in 16 bits,
//     the size in 32 bits and the mtime equals the build time, which is all
//     a compact inode can say; extended 64-byte inodes otherwise;
//   - inline xattrs only (no shared xattr area), in the user., trusted.,
//     security. and system.posix_acl_* namespaces, sorted by name;
//   - file, symlink and directory data in whole blocks after the metadata,
//     with the tail (size mod 4096) packed right after the inode
//     (EROFS_INODE_FLAT_INLINE) when inode, xattrs and tail fit in one
//     block, else the tail gets a zero-padded block of its own
//     (EROFS_INODE_FLAT_PLAIN);
//   - directories hold "." and ".." and their entries sorted by name, as
//     the kernel's binary search requires.
//
// File data is streamed from its source into the image (with
// copy_file_range(2) when both are files, so it need not pass through user
// space); only the tail of one file and one directory's entries are held
// in memory at a time.
//
// # Security
//
// TreeFromTar is meant for hostile input: names are cleaned (leading "/"
// removed, ".." refused), hard links must point at an earlier entry,
// sizes are checked against the data actually present, and errors are
// returned, never panics. Nothing is ever written outside the image.
package erofs
