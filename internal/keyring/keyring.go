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

// AddThread adds a key of type "user" to the calling thread's keyring
// (@t), which the kernel searches first. A daemon that creates dm-verity
// devices uses it: a systemd service's session keyring is private and not
// linked to the user keyring, and the process keyring lives in each
// thread's credentials, so a Go program may load the table from a thread
// that does not see it. The caller must hold its OS thread
// (runtime.LockOSThread) from AddThread until the table is loaded, and
// should invalidate the key then.
func AddThread(desc string, payload []byte) (int, error) {
	id, err := unix.AddKey("user", desc, payload, unix.KEY_SPEC_THREAD_KEYRING)
	if err != nil {
		return 0, fmt.Errorf("keyring: add thread key %q: %w", desc, err)
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
