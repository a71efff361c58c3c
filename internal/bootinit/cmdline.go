package bootinit

import (
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/osguard/osguard/initrd/bootconfig"
)

// Cmdline holds the options osguard-init reads from the kernel command
// line. Empty strings mean "not given": the build's config applies.
type Cmdline struct {
	UsrHash      []byte // usrhash=<hex>: the dm-verity root hash of /usr
	IPE          string // osguard.ipe=enforce|audit
	SELinux      string // osguard.selinux=off|permissive|enforcing
	OnCorruption string // osguard.verity.on_corruption=eio|restart|panic
	Debug        bool   // osguard.debug=1: a shell instead of power-off on failure
	Insecure     bool   // osguard.insecure=1: trust .platform without Secure Boot
	Init         string // osguard.init=/path: the userland's init
	// UpdateTimeout (osguard.update.timeout=90s) is how long an update's
	// trial boot has to become healthy; `osguard update check-boot` reads
	// it, the init only checks it.
	UpdateTimeout time.Duration
	// Unknown lists osguard.* options this init does not know (logged).
	Unknown []string
}

// ParseCmdline parses /proc/cmdline. Words are separated by spaces; a value
// may be double-quoted, as the kernel allows (lib/cmdline.c, next_arg).
// Options other than usrhash= and osguard.* are ignored. A bad value of a
// known option is an error: a typo must not silently weaken the boot.
func ParseCmdline(s string) (*Cmdline, error) {
	c := &Cmdline{}
	for _, w := range splitCmdline(s) {
		key, val, hasVal := strings.Cut(w, "=")
		if key != "usrhash" && !strings.HasPrefix(key, "osguard.") {
			continue
		}
		var err error
		switch key {
		case "usrhash":
			c.UsrHash, err = hex.DecodeString(val)
			if err == nil && (len(c.UsrHash) < 32 || len(c.UsrHash) > 64) {
				err = fmt.Errorf("%d bytes, want 32 to 64", len(c.UsrHash))
			}
			if err == nil && val != strings.ToLower(val) {
				err = fmt.Errorf("not lowercase hex")
			}
		case "osguard.ipe":
			c.IPE, err = val, bootconfig.CheckIPE(val)
		case "osguard.selinux":
			c.SELinux, err = val, bootconfig.CheckSELinux(val)
		case "osguard.verity.on_corruption":
			c.OnCorruption, err = val, bootconfig.CheckCorruption(val)
		case "osguard.debug":
			c.Debug, err = parseBool(val, hasVal)
		case "osguard.insecure":
			c.Insecure, err = parseBool(val, hasVal)
		case "osguard.update.timeout":
			c.UpdateTimeout, err = time.ParseDuration(val)
			if err == nil && c.UpdateTimeout <= 0 {
				err = fmt.Errorf("must be positive")
			}
		case "osguard.init":
			c.Init = val
			if !strings.HasPrefix(val, "/") {
				err = fmt.Errorf("not an absolute path")
			}
		default:
			c.Unknown = append(c.Unknown, w)
		}
		if err != nil {
			return nil, fmt.Errorf("bootinit: command line %s: %w", w, err)
		}
	}
	return c, nil
}

// parseBool accepts the spellings of the kernel's kstrtobool; a bare flag
// means true.
func parseBool(v string, hasVal bool) (bool, error) {
	if !hasVal {
		return true, nil
	}
	switch strings.ToLower(v) {
	case "1", "y", "yes", "on", "true":
		return true, nil
	case "0", "n", "no", "off", "false":
		return false, nil
	}
	return false, fmt.Errorf("not a boolean")
}

func splitCmdline(s string) []string {
	var words []string
	var cur strings.Builder
	inQuote, have := false, false
	for _, r := range s {
		switch {
		case r == '"':
			inQuote = !inQuote
			have = true
		case !inQuote && (r == ' ' || r == '\t' || r == '\n'):
			if have {
				words = append(words, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteRune(r)
			have = true
		}
	}
	if have {
		words = append(words, cur.String())
	}
	return words
}

// Settings are the effective choices: the build's config overridden by the
// command line.
type Settings struct {
	UsrHash      []byte
	IPE          string
	IPEPolicy    string // policy name; empty: no policy in the initramfs
	SELinux      string
	OnCorruption string
	Debug        bool
	Insecure     bool
	Init         string
}

// Merge applies the command line over the build's config.
func Merge(cfg *bootconfig.Config, c *Cmdline) Settings {
	s := Settings{UsrHash: c.UsrHash, IPE: cfg.IPE, IPEPolicy: cfg.IPEPolicyName, SELinux: cfg.SELinux,
		OnCorruption: cfg.VerityOnCorruption, Debug: c.Debug, Insecure: c.Insecure, Init: cfg.Init}
	if c.IPE != "" {
		s.IPE = c.IPE
	}
	if c.SELinux != "" {
		s.SELinux = c.SELinux
	}
	if c.OnCorruption != "" {
		s.OnCorruption = c.OnCorruption
	}
	if c.Init != "" {
		s.Init = c.Init
	}
	return s
}
