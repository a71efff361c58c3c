// Package bootconfig is the contract between the initramfs builder (package
// initrd) and osguard-init: where the builder puts things in the initramfs
// and the build-time configuration it writes to /etc/osguard/init.json. It
// has no dependencies beyond the standard library, so the init stays small.
package bootconfig

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// Paths inside the initramfs.
const (
	Path              = "/etc/osguard/init.json"
	IPEPolicyPath     = "/etc/osguard/ipe.policy.p7s"
	SELinuxPolicyPath = "/etc/osguard/selinux.policy"
	// SELinuxFileContextsPath holds the file contexts osguard-init labels
	// the tmpfs root with (file_contexts(5); .subs_dist beside it).
	SELinuxFileContextsPath = "/etc/osguard/selinux.file_contexts"
	ModulesDir              = "/lib/modules" // then <kernel version>/<name>.ko
)

// The trial-boot marker: a UEFI variable (non-volatile, boot service and
// runtime access) that `osguard update apply` sets to the little-endian u16
// number of the Boot#### entry of the slot it wrote, next to BootNext. When
// BootCurrent equals it, the boot is that slot's one trial, and osguard-init
// reboots on a failure instead of powering off, so that the firmware goes
// back to BootOrder, the old slot. The node deletes it when it commits the
// slot or records the rollback.
const (
	TrialVarName = "OsguardTrial"
	TrialVarGUID = "5f1e1c3a-7b2d-4e8f-9a6c-0d3b2e4f6a81"
)

// The watchdog marker, a UEFI variable with the trial marker's GUID and
// attributes: osguard-init sets it on a trial boot just before switch_root,
// to the little-endian u32 number of seconds of the watchdog it armed for
// the trial. On the old slot after a failed trial, `osguard update
// check-boot` reads it to tell a trial whose userland started (and was
// then reset by the watchdog, or panicked) from one that never got that
// far. It is deleted with the trial marker.
const WatchdogVarName = "OsguardTrialWatchdog"

// Modes. The command line (osguard.ipe=, osguard.selinux=,
// osguard.verity.on_corruption=) overrides the build's choice.
const (
	IPEEnforce = "enforce"
	IPEAudit   = "audit"

	SELinuxOff        = "off"
	SELinuxPermissive = "permissive"
	SELinuxEnforcing  = "enforcing"

	CorruptionEIO     = "eio" // the read fails with EIO (dm-verity's default)
	CorruptionRestart = "restart"
	CorruptionPanic   = "panic"

	DefaultInit = "/sbin/init"
)

// Module is one kernel module to load, in Config.Modules order.
type Module struct {
	Name   string `json:"name"`             // kernel name, e.g. dm_verity
	Path   string `json:"path"`             // uncompressed .ko inside the initramfs
	Params string `json:"params,omitempty"` // e.g. require_signatures=1
}

// Config is the build-time configuration of osguard-init.
type Config struct {
	KernelVersion      string   `json:"kernelVersion"`
	Modules            []Module `json:"modules"`
	IPE                string   `json:"ipe"`                     // enforce or audit
	IPEPolicyName      string   `json:"ipePolicyName,omitempty"` // empty: no policy in this initramfs
	SELinux            string   `json:"selinux"`                 // off, permissive or enforcing
	VerityOnCorruption string   `json:"verityOnCorruption"`      // eio, restart or panic
	Init               string   `json:"init"`                    // the userland's init
}

// Defaults fills the empty fields with the defaults: IPE enforce, SELinux
// off, dm-verity EIO on corruption, /sbin/init.
func (c *Config) Defaults() {
	if c.IPE == "" {
		c.IPE = IPEEnforce
	}
	if c.SELinux == "" {
		c.SELinux = SELinuxOff
	}
	if c.VerityOnCorruption == "" {
		c.VerityOnCorruption = CorruptionEIO
	}
	if c.Init == "" {
		c.Init = DefaultInit
	}
}

// Validate checks the mode fields.
func (c *Config) Validate() error {
	if err := CheckIPE(c.IPE); err != nil {
		return err
	}
	if err := CheckSELinux(c.SELinux); err != nil {
		return err
	}
	if err := CheckCorruption(c.VerityOnCorruption); err != nil {
		return err
	}
	if len(c.Init) == 0 || c.Init[0] != '/' {
		return fmt.Errorf("bootconfig: init %q is not an absolute path", c.Init)
	}
	return nil
}

// CheckIPE validates an IPE mode.
func CheckIPE(s string) error {
	if s != IPEEnforce && s != IPEAudit {
		return fmt.Errorf("bootconfig: ipe mode %q: want enforce or audit", s)
	}
	return nil
}

// CheckSELinux validates an SELinux mode.
func CheckSELinux(s string) error {
	if s != SELinuxOff && s != SELinuxPermissive && s != SELinuxEnforcing {
		return fmt.Errorf("bootconfig: selinux mode %q: want off, permissive or enforcing", s)
	}
	return nil
}

// CheckCorruption validates a dm-verity corruption mode.
func CheckCorruption(s string) error {
	if s != CorruptionEIO && s != CorruptionRestart && s != CorruptionPanic {
		return fmt.Errorf("bootconfig: verity on_corruption %q: want eio, restart or panic", s)
	}
	return nil
}

// Parse decodes and validates init.json; unknown fields are errors.
func Parse(b []byte) (*Config, error) {
	var c Config
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("bootconfig: %w", err)
	}
	c.Defaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}
