// Package node inspects the security state of a running osguard node, as the
// kernel and the firmware report it: Secure Boot and setup mode (efivarfs),
// the device-mapper table under /usr (DM ioctls), the active IPE policy
// (securityfs), SELinux (selinuxfs) and PCR 11 (the TPM's sysfs files). It
// compares them with measurements.json, which the build put on the ESP,
// and with usrhash= on the kernel command line.
//
// Reading the dm table on every call matters: root can reload the /usr
// device's table as dm-linear (GHSA-6vq3-w69p-w63m) and the kernel allows
// it; the mount stays, but verity is gone. Status then reports /usr as no
// longer verified.
package node

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/osguard/osguard/image"
	"github.com/osguard/osguard/internal/dm"
	"github.com/osguard/osguard/internal/esp"
	"github.com/osguard/osguard/secureboot"
)

// Check is one guarantee and whether it holds.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// Status is what `osguard status` reports.
type Status struct {
	// DebugConsole lists the root shells found on console terminals.
	DebugConsole []string `json:"debugConsole"`
	SecureBoot   struct {
		Enabled   bool     `json:"enabled"`
		SetupMode bool     `json:"setupMode"`
		DB        []string `json:"db"`
	} `json:"secureBoot"`
	Usr struct {
		Device     string `json:"device"`
		Target     string `json:"target"` // dm target type; "verity" when intact
		RootHash   string `json:"rootHash,omitempty"`
		Signed     bool   `json:"signatureVerifiedByKernel"`
		SigKeyDesc string `json:"sigKeyDesc,omitempty"`
		Health     string `json:"health,omitempty"` // dm-verity status: V verified, C corruption seen
		ReadOnly   bool   `json:"readOnly"`
		Cmdline    string `json:"usrhash"`
	} `json:"usr"`
	IPE struct {
		Policy  string `json:"policy"`
		Version string `json:"version"`
		Enforce bool   `json:"enforce"`
	} `json:"ipe"`
	SELinux struct {
		Running   bool `json:"running"`
		Enforcing bool `json:"enforcing"`
	} `json:"selinux"`
	PCR11 struct {
		Value    string `json:"value"`
		Expected string `json:"expected"`
	} `json:"pcr11"`
	// Image is the running image; Name, Version, Profile and Flavour come
	// from its measurements.json, Slot from the usr partition it booted.
	Image struct {
		Name    string `json:"name"`
		Version string `json:"version"`
		Profile string `json:"profile"`
		Flavour string `json:"flavour,omitempty"`
		Slot    string `json:"slot"`
	} `json:"image"`
	Update struct {
		LastResult string `json:"lastResult"`
		Reason     string `json:"reason,omitempty"`
	} `json:"update"`
	Measurements string  `json:"measurementsFrom"`
	Checks       []Check `json:"checks"`
	expected     *image.Measurements
}

// OK reports whether every check holds.
func (s *Status) OK() bool {
	return len(s.Checks) > 0 && len(s.Failed()) == 0
}

// CheckDebugConsole names the check that fails on a node with a root shell
// on its console.
const CheckDebugConsole = "debug-console"

// Failed returns the checks that do not hold, leaving out the named ones.
func (s *Status) Failed(except ...string) []Check {
	var bad []Check
	for _, c := range s.Checks {
		if !c.OK && !slices.Contains(except, c.Name) {
			bad = append(bad, c)
		}
	}
	return bad
}

// Options point the inspection at the kernel's files; tests may redirect them.
type Options struct {
	// Measurements is a measurements.json to compare with; empty means the
	// one on the ESP.
	Measurements string
	Efivars      string // default /sys/firmware/efi/efivars
	Securityfs   string // default /sys/kernel/security
	Selinuxfs    string // default /sys/fs/selinux
	TPM          string // default /sys/class/tpm/tpm0
	Proc         string // default /proc
	// NoMount leaves unmounted pseudo file systems unmounted (tests).
	NoMount bool
}

func (o *Options) defaults() {
	if o.Efivars == "" {
		o.Efivars = "/sys/firmware/efi/efivars"
	}
	if o.Securityfs == "" {
		o.Securityfs = "/sys/kernel/security"
	}
	if o.Selinuxfs == "" {
		o.Selinuxfs = "/sys/fs/selinux"
	}
	if o.TPM == "" {
		o.TPM = "/sys/class/tpm/tpm0"
	}
	if o.Proc == "" {
		o.Proc = "/proc"
	}
}

// Collect reads the node's state and judges it.
func Collect(o Options) *Status {
	o.defaults()
	s := &Status{}
	add := func(name string, ok bool, format string, args ...any) {
		s.Checks = append(s.Checks, Check{Name: name, OK: ok, Detail: fmt.Sprintf(format, args...)})
	}
	if err := s.loadMeasurements(o.Measurements); err != nil {
		add("measurements", false, "%v", err)
	} else {
		e := s.expected
		s.Image.Name, s.Image.Version, s.Image.Profile, s.Image.Flavour = e.Image, e.Version, e.Profile, e.Flavour
	}

	// Secure Boot.
	mount := ensureMounted
	if o.NoMount {
		mount = func(string, string, string) {}
	}
	mount("efivarfs", o.Efivars, "efivarfs")
	if ents, err := os.ReadDir(o.Efivars); err != nil || len(ents) == 0 {
		add("secure-boot", false, "no UEFI variables in %s: not booted through UEFI, or efivarfs cannot be mounted", o.Efivars)
	} else if st, err := secureboot.ReadState(secureboot.Efivarfs{Dir: o.Efivars}); err != nil {
		add("secure-boot", false, "cannot read the UEFI variables: %v", err)
	} else {
		s.SecureBoot.Enabled, s.SecureBoot.SetupMode = st.SecureBoot, st.SetupMode
		for _, c := range st.DB {
			s.SecureBoot.DB = append(s.SecureBoot.DB, c.Subject.String())
		}
		add("secure-boot", st.SecureBoot && !st.SetupMode, "SecureBoot=%d SetupMode=%d, %d certificate(s) in db",
			b2i(st.SecureBoot), b2i(st.SetupMode), len(st.DB))
	}

	if s.Image.Slot == "" {
		if _, letter, err := RunningSlot(); err == nil {
			s.Image.Slot = letter
		}
	}
	s.checkUsr(add)
	mount("securityfs", o.Securityfs, "securityfs")
	s.checkIPE(o.Securityfs, add)
	if _, err := os.Stat(filepath.Join(o.Selinuxfs, "enforce")); err != nil {
		mount("selinuxfs", o.Selinuxfs, "selinuxfs")
	}
	s.checkSELinux(o.Selinuxfs, add)
	s.checkPCR11(o.TPM, add)
	s.checkDebugConsole(o.Proc, add)
	return s
}

// checkDebugConsole fails when the node has a root shell on a console: the
// image says so (built with --debug-console), or a shell of uid 0 runs with
// a serial line or virtual console as its controlling terminal.
func (s *Status) checkDebugConsole(proc string, add func(string, bool, string, ...any)) {
	s.DebugConsole = rootConsoleShells(proc)
	built := s.expected != nil && s.expected.DebugConsole
	switch {
	case len(s.DebugConsole) > 0:
		add(CheckDebugConsole, false, "a root shell runs on the console: %s (a debug image; never run one in production)", strings.Join(s.DebugConsole, ", "))
	case built:
		add(CheckDebugConsole, false, "the image was built with a debug console (a root shell on the serial console)")
	default:
		add(CheckDebugConsole, true, "no root shell on the console")
	}
}

// shells are the programs counted as shells on a console.
var shells = map[string]bool{"sh": true, "ash": true, "dash": true, "bash": true, "zsh": true, "busybox": true}

// rootConsoleShells lists "comm (pid N) on ttyX" for each uid-0 shell whose
// controlling terminal is a serial line (major 4, minor >= 64), a virtual
// console (major 4, minor < 64) or /dev/console (5:1).
func rootConsoleShells(proc string) []string {
	ents, err := os.ReadDir(proc)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join(proc, e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp session tty_nr ...; comm may hold spaces.
		open, close := bytes.IndexByte(stat, '('), bytes.LastIndexByte(stat, ')')
		if open < 0 || close < open {
			continue
		}
		comm := string(stat[open+1 : close])
		f := strings.Fields(string(stat[close+1:]))
		if len(f) < 5 || !shells[comm] {
			continue
		}
		ttyNr, err := strconv.ParseUint(f[4], 10, 32)
		if err != nil || ttyNr == 0 {
			continue
		}
		major, minor := unix.Major(ttyNr), unix.Minor(ttyNr)
		var tty string
		switch {
		case major == 4 && minor >= 64:
			tty = fmt.Sprintf("ttyS%d", minor-64)
		case major == 4:
			tty = fmt.Sprintf("tty%d", minor)
		case major == 5 && minor == 1:
			tty = "console"
		default:
			continue
		}
		if uidOf(filepath.Join(proc, e.Name(), "status")) != 0 {
			continue
		}
		out = append(out, fmt.Sprintf("%s (pid %d) on %s", comm, pid, tty))
	}
	return out
}

// uidOf reads the real uid from /proc/PID/status; -1 when unknown.
func uidOf(statusPath string) int {
	b, err := os.ReadFile(statusPath)
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Uid:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				if n, err := strconv.Atoi(f[0]); err == nil {
					return n
				}
			}
		}
	}
	return -1
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// ensureMounted mounts a pseudo file system when the directory is empty.
func ensureMounted(src, dir, fstype string) {
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
		return
	}
	unix.Mount(src, dir, fstype, unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
}

func (s *Status) loadMeasurements(path string) error {
	s.Update.LastResult = UpdateNone
	var data []byte
	var err error
	if path != "" {
		data, err = os.ReadFile(path)
		s.Measurements = path
	} else {
		data, s.Measurements, err = s.readFromESP()
	}
	if err != nil {
		return err
	}
	var m image.Measurements
	if err := json.Unmarshal(data, &m); err != nil {
		return fmt.Errorf("%s: %w", s.Measurements, err)
	}
	s.expected = &m
	s.Image.Name, s.Image.Version = m.Image, m.Version
	return nil
}

// readFromESP mounts the ESP of the running slot's disk read-only, reads
// the measurements.json of the running root hash and the update state, and
// learns the running slot.
func (s *Status) readFromESP() ([]byte, string, error) {
	diskDev, usrhash := "", ""
	if slot, letter, err := RunningSlot(); err == nil {
		diskDev, s.Image.Slot = slot.Usr.Disk, letter
		usrhash = slot.Signature.RootHash
	}
	m, err := esp.Mount(diskDev, true)
	if err != nil {
		return nil, "", fmt.Errorf("%w, so no measurements.json (give --measurements)", err)
	}
	defer m.Close()
	if st, err := ReadUpdateState(m.Dir); err == nil {
		s.Update.LastResult, s.Update.Reason = st.LastResult, st.Reason
	} else {
		s.Update.LastResult, s.Update.Reason = "unknown", err.Error()
	}
	data, name, err := ReadSlotMeasurements(m.Dir, usrhash)
	return data, m.Part.Dev + ":" + name, err
}

// usrDevice finds the block device mounted on /usr.
func usrDevice() (major, minor uint32, fstype string, ro bool, err error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return 0, 0, "", false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	found := false
	for sc.Scan() {
		// 36 35 98:0 / /usr ro,relatime shared:1 - erofs /dev/mapper/usr ro
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || fields[4] != "/usr" {
			continue
		}
		mm := strings.SplitN(fields[2], ":", 2)
		ma, _ := strconv.ParseUint(mm[0], 10, 32)
		mi, _ := strconv.ParseUint(mm[1], 10, 32)
		sep := 6
		for sep < len(fields) && fields[sep] != "-" {
			sep++
		}
		if sep+1 < len(fields) {
			fstype = fields[sep+1]
		}
		major, minor, ro, found = uint32(ma), uint32(mi), strings.Contains(","+fields[5]+",", ",ro,"), true
	}
	if !found {
		return 0, 0, "", false, errors.New("/usr is not a mount point")
	}
	return major, minor, fstype, ro, sc.Err()
}

func (s *Status) checkUsr(add func(string, bool, string, ...any)) {
	if b, err := os.ReadFile("/proc/cmdline"); err == nil {
		for _, a := range strings.Fields(string(b)) {
			if v, ok := strings.CutPrefix(a, "usrhash="); ok {
				s.Usr.Cmdline = v
			}
		}
	}
	major, minor, fstype, ro, err := usrDevice()
	if err != nil {
		add("usr-verity", false, "%v", err)
		return
	}
	s.Usr.ReadOnly = ro
	nameB, err := os.ReadFile(fmt.Sprintf("/sys/dev/block/%d:%d/dm/name", major, minor))
	if err != nil {
		add("usr-verity", false, "/usr (%s on %d:%d) is not a device-mapper device", fstype, major, minor)
		return
	}
	name := strings.TrimSpace(string(nameB))
	s.Usr.Device = "/dev/mapper/" + name
	table, err := dm.Table(name)
	if err != nil || len(table) != 1 {
		add("usr-verity", false, "read the table of %s: %v (%d targets)", name, err, len(table))
		return
	}
	t := table[0]
	s.Usr.Target = t.Type
	if t.Type != "verity" {
		add("usr-verity", false, "the table of %s is now %q, not verity: /usr is no longer verified (see GHSA-6vq3-w69p-w63m)", name, t.Type)
		return
	}
	// <version> <data> <hash> <dbs> <hbs> <blocks> <hash start> <alg> <root> <salt> [<#opt> <opts...>]
	p := strings.Fields(t.Params)
	if len(p) >= 10 {
		s.Usr.RootHash = p[8]
	}
	for i := 10; i+1 < len(p); i++ {
		if p[i] == "root_hash_sig_key_desc" {
			s.Usr.Signed, s.Usr.SigKeyDesc = true, p[i+1]
		}
	}
	if st, err := dm.TargetStatus(name); err == nil && len(st) == 1 {
		s.Usr.Health = strings.TrimSpace(st[0].Params)
	}
	var problems []string
	if !s.Usr.Signed {
		problems = append(problems, "the table carries no root-hash signature")
	}
	if s.Usr.Health != "V" {
		problems = append(problems, fmt.Sprintf("dm-verity status %q (C: a corrupted block was read)", s.Usr.Health))
	}
	if s.Usr.RootHash != s.Usr.Cmdline {
		problems = append(problems, "root hash differs from usrhash= on the command line")
	}
	if s.expected != nil && s.Usr.RootHash != s.expected.Usr.RootHash {
		problems = append(problems, "root hash differs from measurements.json "+s.expected.Usr.RootHash)
	}
	if !ro {
		problems = append(problems, "/usr is mounted read-write")
	}
	if len(problems) > 0 {
		add("usr-verity", false, "%s: %s", name, strings.Join(problems, "; "))
		return
	}
	add("usr-verity", true, "%s: verity, root hash %s, signature checked by the kernel (%s), read-only %s",
		name, s.Usr.RootHash, s.Usr.SigKeyDesc, fstype)
}

func readTrim(p string) (string, error) {
	b, err := os.ReadFile(p)
	return strings.TrimSpace(string(b)), err
}

func (s *Status) checkIPE(securityfs string, add func(string, bool, string, ...any)) {
	ipeDir := filepath.Join(securityfs, "ipe")
	if e := s.expected; e != nil && e.IPE.Mode == image.IPEOff {
		// The standard flavour: no IPE, AppArmor as the major LSM.
		lsm, _ := readTrim(filepath.Join(securityfs, "lsm"))
		_, ipeErr := os.Stat(ipeDir)
		aa, _ := readTrim("/sys/module/apparmor/parameters/enabled")
		switch {
		case ipeErr == nil:
			add("ipe", false, "the kernel runs IPE (%s), but the standard flavour loads none", lsm)
		case !strings.Contains(","+lsm+",", ",apparmor,") || aa != "Y":
			add("apparmor", false, "AppArmor is not running (lsm=%s, enabled=%q)", lsm, aa)
		default:
			add("apparmor", true, "standard flavour: AppArmor runs, IPE is not loaded (lsm=%s)", lsm)
		}
		return
	}
	enforce, err := readTrim(filepath.Join(ipeDir, "enforce"))
	if err != nil {
		add("ipe", false, "IPE is not available: %v", err)
		return
	}
	s.IPE.Enforce = enforce == "1"
	s.IPE.Policy, s.IPE.Version, _ = ActiveIPEPolicy(securityfs)
	mode := map[bool]string{true: "enforce", false: "audit"}[s.IPE.Enforce]
	if s.IPE.Policy == "" {
		add("ipe", false, "no active IPE policy (mode %s)", mode)
		return
	}
	if e := s.expected; e != nil && (e.IPE.PolicyName != s.IPE.Policy || e.IPE.PolicyVersion != s.IPE.Version || e.IPE.Mode != mode) {
		add("ipe", false, "active policy %s %s in %s mode; the build expects %s %s in %s mode",
			s.IPE.Policy, s.IPE.Version, mode, e.IPE.PolicyName, e.IPE.PolicyVersion, e.IPE.Mode)
		return
	}
	add("ipe", true, "policy %s %s active, %s mode", s.IPE.Policy, s.IPE.Version, mode)
}

func (s *Status) checkSELinux(selinuxfs string, add func(string, bool, string, ...any)) {
	enf, err := readTrim(filepath.Join(selinuxfs, "enforce"))
	s.SELinux.Running = err == nil
	s.SELinux.Enforcing = enf == "1"
	got := "off"
	if s.SELinux.Running {
		got = map[bool]string{true: "enforcing", false: "permissive"}[s.SELinux.Enforcing]
	}
	want := got
	if s.expected != nil && s.expected.SELinux != "" {
		want = s.expected.SELinux
	}
	add("selinux", got == want, "%s (the build expects %s)", got, want)
}

func (s *Status) checkPCR11(tpm string, add func(string, bool, string, ...any)) {
	v, err := readTrim(filepath.Join(tpm, "pcr-sha256", "11"))
	if err != nil {
		add("pcr11", false, "no TPM PCR 11 to read: %v", err)
		return
	}
	s.PCR11.Value = strings.ToLower(v)
	if s.expected == nil {
		add("pcr11", false, "PCR 11 is %s; no measurements.json to compare with", s.PCR11.Value)
		return
	}
	s.PCR11.Expected = s.expected.PCR11.SHA256
	if s.PCR11.Value == s.PCR11.Expected {
		add("pcr11", true, "PCR 11 %s equals the prediction", s.PCR11.Value)
		return
	}
	for _, ph := range s.expected.PCR11.Phases {
		if ph.Hex == s.PCR11.Value {
			add("pcr11", true, "PCR 11 %s equals the prediction after phase %s", s.PCR11.Value, ph.Phase)
			return
		}
	}
	add("pcr11", false, "PCR 11 %s differs from the prediction %s", s.PCR11.Value, s.PCR11.Expected)
}

// Text renders the status for a terminal.
func (s *Status) Text() string {
	var b bytes.Buffer
	if s.Image.Version != "" || s.Image.Slot != "" {
		fmt.Fprintf(&b, "     %-12s %s %s in slot %s; last update: %s", "image", s.Image.Name, s.Image.Version, orUnknown(s.Image.Slot), s.Update.LastResult)
		if s.Update.Reason != "" {
			fmt.Fprintf(&b, " (%s)", s.Update.Reason)
		}
		b.WriteString("\n")
	}
	for _, c := range s.Checks {
		mark := "ok  "
		if !c.OK {
			mark = "FAIL"
		}
		fmt.Fprintf(&b, "%s %-12s %s\n", mark, c.Name, c.Detail)
	}
	if s.OK() {
		b.WriteString("all guarantees hold\n")
	} else {
		b.WriteString("SOME GUARANTEES ARE BROKEN\n")
	}
	return b.String()
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
