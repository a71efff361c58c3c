// Package initrd builds the osguard initramfs: a reproducible newc cpio
// archive, compressed with zstd or xz so that the kernel's own decompressors
// read it, holding osguard-init as /init, the kernel modules it needs, the
// signed IPE policy, an optional SELinux binary policy and the build-time
// configuration of the init (initrd/bootconfig).
//
// It reads a Debian kernel package directly (ReadDeb: the ar container and
// its data.tar.xz, .zst or .gz) or an unpacked tree (OpenDir). The .deb ships
// no modules.dep, and the host's depmod may be older than the kernel, so the
// dependency closure is computed from each module's own ELF .modinfo section
// ("depends=" and "softdep=", see include/linux/module.h and
// scripts/mod/modpost.c), which is the data depmod reads to write modules.dep.
// Compressed modules (.ko.xz, .ko.zst, .ko.gz) are decompressed at build time
// so that the init loads them with a plain finit_module(2); the module
// signature is appended to the uncompressed ELF and stays valid.
//
// The cpio writer is our own (about a hundred lines): the newc format
// (cpio(5), "New ASCII Format"; the kernel's reader is init/initramfs.c) with
// sorted names, inode numbers counted from 1, uid/gid 0 and one fixed mtime,
// so the same inputs always give the same bytes. Compression uses
// github.com/klauspost/compress/zstd (single-threaded, so deterministic) and
// github.com/ulikunitz/xz with a CRC32 check, the only checks the kernel's
// xz decoder (lib/xz) accepts besides none.
//
// # Security
//
// The inputs (the kernel package, the policies) come from the image's author
// and are trusted; parsers still bound their allocations and return wrapped
// errors instead of panicking on malformed archives or ELF files.
package initrd
