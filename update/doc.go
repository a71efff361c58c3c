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
// # Bundle format (version 2)
//
// All integers are big-endian.
//
//	offset   size  field
//	0        14    magic "OSGUARD-UPDATE"
//	14       2     format version (2)
//	16       4     M: manifest area length (at most MaxManifest)
//	20       4     S: signature area length (at most MaxSignatureArea)
//	24       M     manifest: JSON (Manifest), padded with spaces
//	24+M     S     signature area: u32 DER length, then a detached PKCS#7
//	               (sha256, RSA, no signed attributes) over the M manifest
//	               bytes by a db key, then zeros
//	...      ...   payloads, in manifest order, each exactly its manifest
//	               size and starting at the first multiple of Align (4096)
//	               after what precedes it; the gaps are zeros and are
//	               ignored, as are bytes after the last payload (a bundle
//	               may sit on a block device)
//
// The manifest names the image (name, version), the architecture, the IPE
// policy name and version, the usr root hash and the DPS partition UUIDs it
// implies, the disk layout the image was built for, and each payload's
// name and size. The payloads are, in this order: measurements.json,
// usr-verity-sig (the DPS signature JSON), usr-verity (the dm-verity
// superblock and hash tree), usr (the EROFS image), uki.efi.
//
// Every payload but usr carries in the manifest the sha256 of each
// ChunkSize chunk (and of the whole, for people and tools such as
// sha256sum; it is not recomputed on the node). usr carries no hash of its
// own: usr-verity is its hash. A reader checks the usr-verity payload's
// chunks, then its tree from the signed root hash down (verity.Checker),
// and then every 4 KiB block of usr against the tree's lowest level as
// usr streams past, the check the kernel makes on the node when it reads
// the slot. So pack does not hash the image at all: it copies it (by
// copy_file_range, in the kernel), and the build's tree, made once,
// serves the bundle and the node.
//
// A reader checks the magic, the bounds and the signature against the db
// certificates before it returns the manifest, and checks payload bytes
// chunk by chunk as they stream, on every core when it reads a file or a
// device in place.
//
// # Two passes: nothing is written for a bundle that is not intact
//
// Apply reads the bundle twice. The verification pass checks the
// manifest's signature, the architecture, the disk layout and the
// versions, then reads every payload to its end against the manifest and
// the tree, and checks the root-hash signature JSON; it writes nothing to
// a partition, the ESP or a UEFI variable, so a bundle with one flipped
// byte anywhere (even in the last chunk of the UKI) leaves the node
// exactly as it was. It keeps what is small in memory for the write pass:
// measurements.json, the signature JSON, the tree, and the UKI (up to
// 256 MiB).
//
// The write pass writes those from memory and reads usr again. Whether it
// checks usr again depends on whether the source can change in between:
//   - a read-only block device (a bundle attached read-only, a CD) cannot,
//     and neither can the spool (below), which only apply holds;
//   - a bundle file cannot while apply holds a read lease on it
//     (F_SETLEASE): the kernel refuses the lease while anyone has the
//     file open for writing, and breaks it when anyone opens it for
//     writing or truncates it. Apply checks the lease before the write
//     pass (a broken one stops apply, nothing written) and after usr is
//     written (a broken one stops it with the slot unbootable);
//   - anything else (a writable block device, a file system without
//     leases, a file someone holds open for writing) can, and the write
//     pass checks every block of usr again before it writes it. Should
//     one differ, the write stops at that chunk, with the slot's
//     signature partition still cleared and no boot entry, trial marker
//     or BootNext for it, so nothing boots the half-written slot
//     (osguard-init needs the signed root hash); the error says so, and a
//     second apply starts over.
//
// Whatever happens, the kernel checks every block of the slot against the
// signed root hash again when the node reads it (dm-verity), and a slot
// that fails that fails its trial boot.
//
// Payloads start at multiples of 4096, so apply reads them and writes usr
// with direct I/O (directio.go): under emulation and for a large slot the
// page cache, not the disk, would otherwise be apply's cost.
//
// A URL (or a pipe) cannot be read twice, so the verification pass copies
// it as it reads it to an unlinked file in ApplyOptions.SpoolDir (default
// /var/tmp, on the node's var partition when it has one, else on the
// tmpfs root), and the write pass reads that copy. Verifying while
// spooling downloads the bundle once (a second download would cost the
// network again, and a server could send other bytes the second time);
// the unlinked file is gone when apply ends or the node loses power. Apply
// refuses up front when Content-Length says the spool directory has no
// room.
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
