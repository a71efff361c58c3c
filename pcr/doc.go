// Package pcr predicts TPM PCR values of a measured boot in the sha256
// bank: PCR 11 as systemd-stub 257 and systemd-pcrphase extend it for a
// Unified Kernel Image, and PCR 4 and PCR 7 as edk2 firmware (OVMF) extends
// them when it boots that UKI with Secure Boot (firmware.go: the boot
// application's Authenticode digest, the Secure Boot variables and the db
// entry that verified the UKI, as TCG PC Client PFP 1.05 event types). A
// verifier needs all three to tell whether a node booted what was built:
// PCR 4 names the UKI, PCR 7 the keys that allowed it, PCR 11 its sections.
//
// The PCR 4 and 7 predictions are checked against swtpm after an OVMF boot
// in vm_test.go (TPM PCRs and the replayed event log).
//
// PCR 11:
// The rules, from systemd 257 (src/fundamental/uki.h, src/boot/stub.c
// measure_sections, src/boot/pe.c, docs/TPM2_PCR_MEASUREMENTS.md and
// systemd-measure(1)):
//
//   - PCR 11 starts at 32 zero bytes; nothing before systemd-stub extends it.
//   - Extending a PCR with data d sets PCR = sha256(PCR || sha256(d)).
//   - systemd-stub looks up the UKI sections in its canonical order
//     .linux .osrel .cmdline .initrd .ucode .splash .dtb .uname .sbat
//     .pcrsig .pcrpkey .profile (257 then .dtbauto .hwids), the order of the
//     UnifiedSection enum, NOT the order of the section table. .pcrsig is
//     never measured (it signs the result). For each present section it
//     extends the section name in ASCII including its trailing NUL
//     (".linux\0"), then the section content.
//   - A section is matched on its 8-byte header name; the first matching
//     section table entry wins. The content is what the loader mapped:
//     VirtualSize bytes at VirtualAddress, i.e. the raw data, zero-filled
//     past SizeOfRawData, and cut at VirtualSize (never the FileAlignment
//     padding). Sections with VirtualSize 0 count as absent.
//   - Only the base profile is supported: a UKI with .profile sections is
//     refused rather than predicted wrongly, and so is one with .dtbauto
//     sections (the stub picks one by the machine's hardware IDs).
//   - The .sbat section is measured; in a UKI it is the stub's own .sbat,
//     rewritten by the builder.
//   - After the stub, systemd-pcrphase extends PCR 11 with the phase
//     strings in UTF-8 without a NUL: "enter-initrd" (initrd start),
//     "leave-initrd" (before switch-root), "sysinit", "ready". The values
//     reported per phase are those of systemd-measure calculate's default
//     phase paths: enter-initrd, enter-initrd:leave-initrd,
//     enter-initrd:leave-initrd:sysinit, enter-initrd:leave-initrd:sysinit:ready.
//
// The package uses only crypto/sha256 and package pe; no Go library
// predicts systemd's measurements.
package pcr
