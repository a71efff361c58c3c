// Package secureboot implements UEFI Secure Boot with the user's own keys:
// the PK → KEK → db key hierarchy, EFI signature lists, time-based
// authenticated variables (EFI_VARIABLE_AUTHENTICATION_2), enrollment
// through Linux efivarfs, an offline writer for edk2 (OVMF) variable store
// files, and Authenticode signing and verification of PE/COFF images.
//
// Specifications: UEFI 2.10 sections 8.2 (variables, authenticated
// writes), 32.4 (signature database); the Microsoft "Windows Authenticode
// Portable Executable Signature Format" and PE/COFF specifications;
// RFC 2315 (PKCS#7); edk2 PiFirmwareVolume.h and VariableFormat.h for the
// VARS file. The byte layouts are also written down, with the firmware's
// pitfalls, in the project's prototype notes.
//
// # Libraries
//
// Only the standard library (encoding/asn1, crypto/x509) and
// internal/keyfile are used. github.com/foxboron/go-uefi, the obvious
// candidate, was read and rejected for each part:
//   - its pkcs7.SignPKCS7 puts a signingTime of time.Now() into signatures
//     with authenticated attributes (output not reproducible), and
//     SignEFIVariable also takes the clock for the EFI_TIME;
//   - its PKCS7.Verify checks the signature over the authenticated
//     attributes but not that their messageDigest matches the content, and
//     dereferences nil for a signature without attributes;
//   - authenticode.Parse panics on a certificate directory larger than the
//     file (negative bytes.Buffer.Truncate), and never updates the PE
//     CheckSum;
//   - its signature list and WIN_CERTIFICATE readers call log.Fatal on
//     malformed input, and its efivarfs layer needs afero.
//
// smallstep/pkcs7 (used by internal/p7) cannot carry Authenticode's
// SpcIndirectDataContent as a SEQUENCE, and adds signingTime as well. The
// PKCS#7 written here therefore is plain DER built by hand (pkcs7.go):
// Authenticode signatures carry the contentType and messageDigest
// attributes, like sbsign's minus the time; authenticated variables carry
// none and are the bare SignedData (no ContentInfo) that edk2 requires,
// byte for byte what efitools' sign-efi-sig-list writes.
//
// Key generation uses RSA-2048, self-signed certificates valid until
// 9999-12-31, and reads no clock: the caller passes the validity start.
//
// # Security
//
// The parsers (PE headers and certificate table, PKCS#7, signature lists,
// authenticated variables, VARS files, efivarfs contents) are meant for
// hostile input: every size is checked against the buffer before use and
// errors are returned, never panics. They are fuzzed (fuzz_test.go).
// VerifyPE accepts only a signature made by the given certificate itself;
// certificate chains are not followed.
package secureboot
