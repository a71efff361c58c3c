// Package pe reads the headers of PE/COFF images (UEFI applications) and
// appends or replaces sections in them, which is what assembling a Unified
// Kernel Image needs. It writes the section table, SizeOfImage,
// SizeOfInitializedData and the optional-header CheckSum itself; no objcopy.
//
// The layout rules are those of the Microsoft PE/COFF specification
// (https://learn.microsoft.com/en-us/windows/win32/debug/pe-format):
// raw data is aligned to FileAlignment, virtual addresses to
// SectionAlignment, section headers must fit in SizeOfHeaders, and
// SizeOfImage is the end of the last section rounded up to
// SectionAlignment. New sections follow the rules of systemd's ukify
// (systemd 257, pe_add_sections), so a UKI built here has the same section
// layout as one built by ukify from the same inputs.
//
// The package only writes images without an Authenticode signature:
// appending to a signed image would invalidate it, so Append refuses.
// Signing is package secureboot's job.
//
// # Security
//
// Parse is meant for hostile input: every offset and size read from the file
// is checked against the file length before use, and errors say where.
package pe
