// Package update makes and applies osguard's signed A/B update bundles.
//
// An osguard disk has two usr slots (A and B: usr, usr-verity and
// usr-verity-sig partitions of the Discoverable Partitions Specification).
// The running slot is the one whose partition UUIDs are the halves of
// usrhash= in the booted UKI. An update writes the other slot, puts the new
// UKI on the ESP, and asks the firmware for one trial boot of it (UEFI
// BootNext). The new slot becomes permanent (BootOrder) only when its
// userland finds itself healthy; any failure before that sends the machine
// back to the old slot at the next boot, because BootNext is consumed by the
// firmware before the trial boot starts.
//
// # Why BootNext and not systemd-boot's boot counting
//
// BootNext is the firmware's own once-only choice: nothing on the disk has
// to change for a failed trial to fall back, so a kernel panic, an init that
// is missing, a UKI the firmware refuses, or a power cut in the middle of the
// trial all end in the old slot. Boot counting needs a boot loader (one more
// signed binary in PCR 4, one more thing to keep patched) that renames files
// on a FAT file system at every boot. OVMF and every UEFI server implement
// BootNext; the cost is that `osguard run` must let the firmware keep its
// BootOrder (no QEMU bootindex, see internal/vm).
//
// # Bundle format (version 1)
//
// All integers are big-endian.
//
//	offset   size  field
//	0        14    magic "OSGUARD-UPDATE"
//	14       2     format version (1)
//	16       4     M: manifest area length (at most MaxManifest)
//	20       4     S: signature area length (at most MaxSignatureArea)
//	24       M     manifest: JSON (Manifest), padded with spaces
//	24+M     S     signature area: u32 DER length, then a detached PKCS#7
//	               (sha256, RSA, no signed attributes) over the M manifest
//	               bytes by a db key, then zeros
//	24+M+S   ...   payloads, in manifest order, back to back, each exactly
//	               its manifest size; bytes after the last payload are
//	               ignored (a bundle may sit on a block device)
//
// The manifest names the image (name, version), the architecture, the IPE
// policy name and version, the usr root hash and the DPS partition UUIDs it
// implies, the disk layout the image was built for, and for each payload
// its name, size, sha256 and the sha256 of each ChunkSize chunk. The
// payloads are, in this order: measurements.json, usr-verity-sig (the DPS
// signature JSON), usr (the EROFS image), usr-verity (superblock and hash
// tree), uki.efi.
//
// A reader checks the magic, the bounds and the signature against the db
// certificates before it returns the manifest, and checks payload bytes
// chunk by chunk as they stream. The signed chunk hashes cover every byte,
// so the payload's whole sha256 is for people and tools (sha256sum) and is
// not recomputed on the node.
//
// # Two passes: nothing is written for a bundle that is not intact
//
// Apply reads the bundle twice. The verification pass checks the
// manifest's signature, the architecture, the disk layout and the
// versions, then reads every payload to its end against its chunk hashes
// and checks the root-hash signature JSON; it writes nothing to a
// partition, the ESP or a UEFI variable, so a bundle with one flipped byte
// anywhere (even in the last chunk of the UKI) leaves the node exactly as
// it was. The write pass reads the bundle again from its first byte and
// checks every chunk again before it writes it: a file, a block device or
// a spool can change between the passes. Should it, the write stops at the
// first chunk that differs, with the slot's signature partition still
// cleared and no boot entry, trial marker or BootNext for it, so nothing
// boots the half-written slot (osguard-init needs the signed root hash);
// the error says so, and a second apply starts over.
//
// A bundle file or block device is read in place by both passes. A URL (or
// a pipe) cannot be read twice, so the verification pass copies it as it
// reads it to an unlinked file in ApplyOptions.SpoolDir (default
// /var/tmp, on the node's var partition when it has one, else on the
// tmpfs root), and the write pass reads that copy. Verifying while
// spooling downloads the bundle once (a second download would cost the
// network again, and a server could send other bytes the second time,
// which the write pass would find only after it began to write);
// the unlinked file is gone when apply ends or the node loses power. Apply
// refuses up front when Content-Length says the spool directory has no room.
//
// The price is a second read and a second sha256 of every byte. Both are
// cheap next to the write on real hardware; under QEMU's TCG, which
// emulates sha256, they dominate (see BenchmarkApplyVM).
//
// Apply writes in an order that keeps every partial state unbootable: the
// inactive slot's signature partition is cleared first and written last
// (after the slot's partition UUIDs are set in both GPTs and the UKI and
// the slot's measurements are on the ESP), and then the boot entry, the
// trial marker (bootconfig.TrialVarName, read by osguard-init) and BootNext
// are set. `osguard update check-boot`, run at every boot, commits a
// healthy trial boot or records the rollback; its decisions are the
// node's update state, /osguard/update.json on the ESP, which `osguard
// status` reports as update.lastResult.
//
// # A trial that hangs
//
// A trial boot that ends, however it ends, is followed by the old slot. One
// that hangs does not end by itself, so osguard-init arms a watchdog on the
// trial boot (softdog, for osguard.update.timeout plus 30 s) and leaves it
// running through switch_root; check-boot re-arms it for its own timeout
// and stops it when it commits. The old slot's check-boot names the
// watchdog in the rollback's reason when osguard-init handed the trial over
// to its userland (internal/bootinit/watchdog.go).
package update
