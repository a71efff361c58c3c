// Package image is osguard's orchestrator: it turns an osguard.yaml (or the
// embedded default profile) into a bootable OS Guard disk and its evidence,
// and boots the result under QEMU.
//
// Build runs, in order: keys (PK, KEK, db; created when missing); the
// kernel (a Debian .deb, an unpacked package, or a vmlinuz with its modules);
// the SELinux policy and file contexts (files the config names, or Debian's
// reference policy compiled with osguard's module, image/selinux/osguard.cil,
// by package sepolicy and cached in .cache/selinux); the rootfs (directory, tar, or OCI image layout with whiteouts) reduced to
// /usr plus /etc as /usr/share/factory/etc; /usr as EROFS with SELinux
// labels; its dm-verity tree, root hash and DPS signature JSON; the IPE
// policy (generated or given) signed by db; the initramfs with osguard-init;
// the UKI on systemd-stub, signed by db; PCR 11 and Authenticode predictions;
// the GPT disk (ESP, usr A/B with verity and signature partitions, var); the
// OVMF VARS file with the keys enrolled; and SPDX and CycloneDX SBOMs.
//
// Everything that could vary between two builds of the same inputs is
// derived: UUIDs, salts and the FAT volume ID come from a seed over the
// /usr tree's content and the config, times from the build's epoch
// (SOURCE_DATE_EPOCH). Outputs are made in a staging directory inside the
// output directory and renamed into place at the end, so a failed build
// leaves nothing behind.
//
// The pieces are the project's own packages (erofs, verity, secureboot, uki,
// pcr, initrd, ipe, disk, sbom); the only outside tool is mkfs.ext4 from
// e2fsprogs, for the empty /var file system.
package image
