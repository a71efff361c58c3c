// Package disk writes GPT disk images whose partitions follow the UAPI
// Group's Discoverable Partitions Specification
// (https://uapi-group.org/specifications/specs/discoverable_partitions_specification/),
// and FAT32 EFI System Partition images, without root, loop devices or
// external tools.
//
// Both writers are our own (GPT: UEFI 2.10 section 5.3; FAT32: Microsoft's
// "FAT: General Overview of On-Disk Format" 1.03), not go-diskfs: go-diskfs
// stamps directory entries with the clock (or SOURCE_DATE_EPOCH from the
// environment) and the volume ID with the clock, and images here must be
// byte-reproducible from their inputs alone. Every GUID (disk, partitions)
// and the FAT volume ID come from the caller; timestamps are the FAT epoch
// 1980-01-01 00:00.
//
// Layout choices: 512-byte sectors; partitions start on 1 MiB boundaries;
// 128 partition entries of 128 bytes (the GPT minimum of 16 KiB), a
// protective MBR, the backup header and entries at the end of the disk.
// The oracles in the tests are sgdisk, fsck.vfat and mtools.
package disk
