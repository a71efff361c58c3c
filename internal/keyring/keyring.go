// Package keyring adds keys to the kernel's key retention service
// (keyrings(7), add_key(2)) through golang.org/x/sys/unix. osguard-init uses
// it to hand the dm-verity root-hash signature to the kernel: dm-verity looks
// the PKCS#7 up as a "user" key by its description (root_hash_sig_key_desc,
// Documentation/admin-guide/device-mapper/verity.rst).
package keyring

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// AddUser adds a key of type "user" with description desc and the payload
// to the user keyring (@u), which the kernel searches when the calling
// process (or its children) creates the dm-verity table. It returns the key
// serial.
func AddUser(desc string, payload []byte) (int, error) {
	id, err := unix.AddKey("user", desc, payload, unix.KEY_SPEC_USER_KEYRING)
	if err != nil {
		return 0, fmt.Errorf("keyring: add user key %q: %w", desc, err)
	}
	return id, nil
}

// AddProcess adds a key of type "user" to the calling process's keyring
// (@p), which the kernel searches for that process only. A daemon that
// creates dm-verity devices uses it: a systemd service's session keyring
// is private and not linked to the user keyring, but the process keyring is
// always searched. Invalidate the key once the table is loaded.
func AddProcess(desc string, payload []byte) (int, error) {
	id, err := unix.AddKey("user", desc, payload, unix.KEY_SPEC_PROCESS_KEYRING)
	if err != nil {
		return 0, fmt.Errorf("keyring: add process key %q: %w", desc, err)
	}
	return id, nil
}

// Invalidate removes key id from every keyring at once (KEYCTL_INVALIDATE).
func Invalidate(id int) error {
	if _, err := unix.KeyctlInt(unix.KEYCTL_INVALIDATE, id, 0, 0, 0); err != nil {
		return fmt.Errorf("keyring: invalidate key %d: %w", id, err)
	}
	return nil
}
