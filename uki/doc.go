// Package uki assembles and inspects Unified Kernel Images: a systemd-stub
// PE binary with the kernel, initrd, command line and os-release appended
// as PE sections, as defined by the UAPI Group's UKI specification
// (https://uapi-group.org/specifications/specs/unified_kernel_image/).
//
// Build follows systemd 257's ukify (make_uki and pe_add_sections) so that
// the same inputs give the same section layout: sections are added in the
// order .osrel .cmdline .uname .linux .initrd after the stub's own sections;
// several initrds are concatenated, each padded to 4 bytes; the .sbat
// section of the stub is replaced in place by the merge of the stub's, the
// kernel's and the caller's SBAT entries; and if the kernel is not
// NX_COMPAT, the UKI drops NX_COMPAT too. Unlike ukify, Build also writes
// the PE CheckSum (ukify leaves it 0). The PE work itself is in package pe;
// signing is in package secureboot.
package uki
