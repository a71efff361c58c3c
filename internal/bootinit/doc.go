// Package bootinit holds the steps of osguard-init, the PID 1 of the osguard
// initramfs, and the one function, Run, that shows their order: mount the
// API filesystems and load the modules; check Secure Boot; find the usr
// partitions of the Discoverable Partitions Specification
// (https://uapi-group.org/specifications/specs/discoverable_partitions_specification/)
// by type and by the halves of usrhash=; hand the root-hash signature to the
// kernel as a user key and create the dm-verity device with
// root_hash_sig_key_desc so that the kernel checks it
// (Documentation/admin-guide/device-mapper/verity.rst); mount /usr and a
// tmpfs root; load and activate the signed IPE policy
// (Documentation/admin-guide/LSM/ipe.rst); load the SELinux policy; and
// switch_root.
//
// Device-mapper and keyrings go through the small internal/dm and
// internal/keyring packages (plain syscalls via golang.org/x/sys/unix); the
// GPT is read with a small reader here, because the kernel does not export
// partition type GUIDs in sysfs.
//
// # Security
//
// Everything read from disks (GPT, verity superblock, signature JSON) is
// untrusted: it only selects what to ask the kernel for. The kernel checks
// the root-hash signature against its .platform keyring and dm-verity
// checks every block against the root hash from the signed UKI command line.
// The init never goes on with an unverified /usr: every error ends in
// power-off, or in a shell only with osguard.debug=1.
package bootinit
