// Package e2e holds end-to-end tests that boot osguard's artifacts under
// QEMU, OVMF (Secure Boot firmware) and swtpm. It has no code of its own.
package e2e
