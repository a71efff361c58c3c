package update

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/osguard/osguard/initrd/bootconfig"
	"github.com/osguard/osguard/internal/bootinit"
	"github.com/osguard/osguard/internal/efiboot"
	"github.com/osguard/osguard/internal/esp"
	"github.com/osguard/osguard/node"
	"github.com/osguard/osguard/secureboot"
)

// DefaultTrialTimeout is how long a trial boot has to become healthy
// unless osguard.update.timeout= on the kernel command line says otherwise.
const DefaultTrialTimeout = bootinit.DefaultUpdateTimeout

// CheckOptions configure the boot-time check.
type CheckOptions struct {
	// Timeout is how long a trial boot has to become healthy; 0 means
	// osguard.update.timeout= from the kernel command line, else
	// DefaultTrialTimeout.
	Timeout time.Duration
	// Interval between health checks.
	Interval time.Duration
	Log      io.Writer
	// Health judges the node; default: `osguard status` all ok and, on a
	// node with containerd, containerd active.
	Health func() (ok bool, why string)
	// Reboot restarts the machine; default: sync and reboot(2).
	Reboot func() error
	// Efivars is efivarfs (default /sys/firmware/efi/efivars).
	Efivars string
	// Watchdog is the watchdog osguard-init armed for the trial boot
	// (default bootinit.WatchdogDevice).
	Watchdog Watchdog
}

// Watchdog is the trial boot's watchdog (bootinit.Watchdog).
type Watchdog interface {
	// Arm (re)starts the timer at d, left running; it returns the
	// timeout the driver took and the device's identity.
	Arm(d time.Duration) (time.Duration, string, error)
	// Disarm stops the timer.
	Disarm() error
}

// watchdogVar is the marker osguard-init sets when it hands a trial boot
// over to the userland with the watchdog running (bootconfig.WatchdogVarName).
var watchdogVar = secureboot.Variable{Name: bootconfig.WatchdogVarName, GUID: trialVar.GUID}

// DefaultHealth is `osguard status` with every check ok, and containerd
// active where it is installed. The debug-console check is left out: a
// root shell on the console says how the image was built, not whether the
// new slot works, and the image it replaces had the same.
func DefaultHealth() (bool, string) {
	st := node.Collect(node.Options{})
	var bad []string
	for _, c := range st.Failed(node.CheckDebugConsole) {
		bad = append(bad, c.Name+": "+c.Detail)
	}
	if len(bad) > 0 || len(st.Checks) == 0 {
		return false, strings.Join(bad, "; ")
	}
	if _, err := os.Stat("/usr/bin/containerd"); err == nil {
		if out, err := exec.Command("systemctl", "is-active", "containerd").Output(); err != nil {
			return false, fmt.Sprintf("containerd is not active (%s)", strings.TrimSpace(string(out)))
		}
	}
	return true, ""
}

func rebootNow() error {
	unix.Sync()
	return unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
}

// CheckBoot runs at every boot of a node. On the trial boot of an update it
// waits until the node is healthy and then makes the new slot permanent
// (its Boot#### first in BootOrder), or, after Timeout, records the
// rollback and reboots: BootNext is used up, so the firmware boots the old
// slot. On the first boot after a trial that never reached this point
// (firmware refusal, kernel panic, init or verity failure) it records the
// rollback. It returns the state it leaves; before, when not nil, receives
// the result it found.
func CheckBoot(ctx context.Context, o CheckOptions, before *string) (*node.UpdateState, error) {
	if o.Timeout == 0 {
		o.Timeout = DefaultTrialTimeout
		if raw, err := os.ReadFile("/proc/cmdline"); err == nil {
			if cl, err := bootinit.ParseCmdline(string(raw)); err == nil && cl.UpdateTimeout > 0 {
				o.Timeout = cl.UpdateTimeout
			}
		}
	}
	if o.Interval == 0 {
		o.Interval = 2 * time.Second
	}
	if o.Health == nil {
		o.Health = DefaultHealth
	}
	if o.Reboot == nil {
		o.Reboot = rebootNow
	}
	if o.Efivars == "" {
		o.Efivars = secureboot.DefaultEfivarfs
	}
	if o.Watchdog == nil {
		o.Watchdog = bootinit.Watchdog{Dev: bootinit.WatchdogDevice}
	}
	logf := func(format string, args ...any) {
		if o.Log != nil {
			fmt.Fprintf(o.Log, "osguard update: "+format+"\n", args...)
		}
	}
	vars := secureboot.Efivarfs{Dir: o.Efivars}
	running, letter, err := node.RunningSlot()
	if err != nil {
		return nil, fmt.Errorf("update: which slot is running: %w", err)
	}
	st, err := readState(running.Usr.Disk)
	if err != nil {
		return nil, err
	}
	if before != nil {
		*before = st.LastResult
	}
	save := func() error { return writeState(running.Usr.Disk, st) }
	return st, checkBoot(ctx, o, st, letter, vars, save, logf)
}

// checkBoot is CheckBoot once the running slot and the state are known.
func checkBoot(ctx context.Context, o CheckOptions, st *node.UpdateState, letter string, vars efiboot.Vars, save func() error, logf func(string, ...any)) error {
	if st.LastResult != node.UpdateApplied && st.LastResult != node.UpdateTrial {
		return nil
	}
	forget := func() error {
		for _, v := range []secureboot.Variable{trialVar, watchdogVar} {
			if err := vars.Delete(v); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
		return nil
	}
	if letter != st.Slot {
		if next, ok, _ := efiboot.BootNext(vars); ok && next == st.BootEntry && st.LastResult == node.UpdateApplied {
			return nil // applied; the trial boot has not happened yet
		}
		why := fmt.Sprintf("the trial boot of slot %s (version %s) did not reach a healthy userland (refused by the firmware, kernel panic, init or verity failure); the firmware went back to slot %s", st.Slot, st.Version, letter)
		watchdog, handedOver := watchdogMarker(vars)
		switch {
		case st.LastResult == node.UpdateTrial:
			why = fmt.Sprintf("the trial boot of slot %s (version %s) ended before it was found healthy (a hang that the trial's watchdog reset after %s, a kernel panic or a power cut); the firmware went back to slot %s", st.Slot, st.Version, fmtWatchdog(watchdog, handedOver), letter)
		case handedOver:
			why = fmt.Sprintf("the trial boot of slot %s (version %s) reached its userland, which did not start 'osguard update check-boot': the watchdog osguard-init armed for %s (osguard.update.timeout plus %s) reset it, unless the kernel panicked first; the firmware went back to slot %s", st.Slot, st.Version, watchdog, bootinit.WatchdogMargin, letter)
		}
		st.LastResult, st.Reason = node.UpdateRolledBack, why
		logf("rolled back: %s", why)
		if err := forget(); err != nil {
			return err
		}
		return save()
	}
	// The trial boot.
	if st.LastResult == node.UpdateApplied {
		st.LastResult = node.UpdateTrial
		if err := save(); err != nil {
			return err
		}
	}
	// Take the watchdog over from osguard-init, which armed it for the
	// userland's start: from now on it bounds this check, a little after
	// the timeout, so that this check's own decision comes first. A node
	// without one (an init that did not arm it) is checked all the same.
	if got, ident, err := o.Watchdog.Arm(o.Timeout + bootinit.WatchdogMargin); err != nil {
		logf("warning: trial boot without a watchdog of its own: %v", err)
	} else {
		logf("watchdog (%s) re-armed for %s", ident, got)
		// The reason of a rollback names the watchdog that was running.
		if err := vars.Set(watchdogVar, efiboot.VarAttrs, bootinit.EncodeWatchdogMarker(got)); err != nil {
			logf("warning: watchdog marker: %v", err)
		}
	}
	logf("trial boot of slot %s (version %s): waiting up to %s for the node to be healthy", st.Slot, st.Version, o.Timeout)
	deadline := time.Now().Add(o.Timeout)
	for {
		ok, why := o.Health()
		if ok {
			break
		}
		if time.Now().After(deadline) {
			st.LastResult = node.UpdateRolledBack
			st.Reason = fmt.Sprintf("slot %s (version %s) was not healthy within %s: %s", st.Slot, st.Version, o.Timeout, why)
			logf("rolling back: %s; rebooting into slot %s", st.Reason, st.FromSlot)
			if err := forget(); err != nil {
				return err
			}
			if err := save(); err != nil {
				return err
			}
			// The watchdog stays armed: should the reboot fail, it
			// still ends the trial.
			return o.Reboot()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(o.Interval):
		}
	}
	if err := efiboot.SetFirst(vars, st.BootEntry); err != nil {
		return fmt.Errorf("update: commit: %w", err)
	}
	if err := forget(); err != nil {
		return err
	}
	st.LastResult, st.Reason = node.UpdateCommitted, ""
	logf("committed: slot %s (version %s) is healthy; Boot%04X is first in BootOrder", st.Slot, st.Version, st.BootEntry)
	if err := save(); err != nil {
		return err
	}
	// Last: until the commit is saved, the watchdog is what ends a trial
	// that goes wrong.
	switch err := o.Watchdog.Disarm(); {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return fmt.Errorf("update: committed, but the trial's watchdog still runs and will reset the node: %w", err)
	default:
		logf("watchdog disarmed")
	}
	return nil
}

// watchdogMarker reads the marker osguard-init left when it handed the
// trial boot over to the userland: the watchdog's timeout, and whether it
// is there.
func watchdogMarker(vars efiboot.Vars) (time.Duration, bool) {
	_, b, err := vars.Get(watchdogVar)
	if err != nil {
		return 0, false
	}
	d, err := bootinit.DecodeWatchdogMarker(b)
	return d, err == nil
}

func fmtWatchdog(d time.Duration, ok bool) string {
	if !ok {
		return "its timeout"
	}
	return d.String()
}

func readState(diskDev string) (*node.UpdateState, error) {
	m, err := esp.Mount(diskDev, true)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	return node.ReadUpdateState(m.Dir)
}

func writeState(diskDev string, st *node.UpdateState) error {
	m, err := esp.Mount(diskDev, false)
	if err != nil {
		return err
	}
	if err := node.WriteUpdateState(m.Dir, st); err != nil {
		m.Close()
		return err
	}
	return m.Close()
}
