package bootinit

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/osguard/osguard/initrd/bootconfig"
	"github.com/osguard/osguard/secureboot"
)

// The trial boot's watchdog.
//
// BootNext makes the firmware go back to the old slot after any trial boot
// that ends, but a trial userland that hangs (an init that never starts
// `osguard update check-boot`, or a check-boot stuck in a health check)
// never ends by itself. So osguard-init arms the kernel's first watchdog
// on a trial boot, before anything can hang, and closes it without the
// magic 'V': the watchdog core then keeps the timer running with nobody
// feeding it (Documentation/watchdog/watchdog-api.rst, "Magic Close"), and
// the driver resets the machine when it expires. That is softdog, which
// every initramfs loads (initrd.DefaultModules), unless the kernel has a
// hardware watchdog's driver built in, which then is watchdog 0 and is
// better still (it fires even when the kernel hangs). softdog is loaded
// without nowayout: check-boot must be able to stop it when it commits.
//
// check-boot re-arms the same device for its own timeout plus
// WatchdogMargin when it starts on the trial boot, so that its own
// decision (with the health check's reason) comes first, and disarms it
// with the magic close once the slot is committed. A committed boot never
// arms it.

const (
	// WatchdogDevice is the kernel's first watchdog.
	WatchdogDevice = "/dev/watchdog"
	// DefaultUpdateTimeout is how long a trial boot has to become healthy
	// unless osguard.update.timeout= says otherwise.
	DefaultUpdateTimeout = 2 * time.Minute
	// WatchdogMargin is added to the update timeout. In osguard-init it
	// covers the userland's start up to check-boot (a second for the
	// busybox userland, tens of seconds for systemd under emulation); in
	// check-boot, its own reboot (writing the state to the ESP). A node
	// that can be healthy within the timeout has started check-boot well
	// within it.
	WatchdogMargin = 30 * time.Second
)

// WatchdogTimeout is how long the watchdog of a trial boot whose update
// timeout is d runs (d = 0: DefaultUpdateTimeout): d plus WatchdogMargin,
// in whole seconds (the watchdog API's unit), rounded up.
func WatchdogTimeout(d time.Duration) time.Duration {
	if d <= 0 {
		d = DefaultUpdateTimeout
	}
	d += WatchdogMargin
	return (d + time.Second - 1).Truncate(time.Second)
}

// Watchdog is a watchdog device of the kernel's watchdog API.
type Watchdog struct{ Dev string }

// Arm starts the watchdog's timer at d (whole seconds, at least 1) and
// closes the device without the magic 'V', so that the timer keeps running
// and resets the machine unless somebody opens the device again and feeds
// or stops it. It returns the timeout the driver took (drivers clamp it)
// and its identity.
func (w Watchdog) Arm(d time.Duration) (time.Duration, string, error) {
	// Opening starts the timer, at the driver's current timeout until
	// WDIOC_SETTIMEOUT (which also feeds it) sets ours.
	f, err := os.OpenFile(w.Dev, os.O_WRONLY, 0)
	if err != nil {
		return 0, "", fmt.Errorf("watchdog: %w", err)
	}
	defer f.Close() // no 'V': the timer runs on
	fd := int(f.Fd())
	secs := max(int((d+time.Second-1)/time.Second), 1)
	if err := unix.IoctlSetPointerInt(fd, unix.WDIOC_SETTIMEOUT, secs); err != nil {
		return 0, "", fmt.Errorf("watchdog %s: set timeout %ds: %w", w.Dev, secs, err)
	}
	got, err := unix.IoctlGetInt(fd, unix.WDIOC_GETTIMEOUT)
	if err != nil {
		return 0, "", fmt.Errorf("watchdog %s: read timeout back: %w", w.Dev, err)
	}
	ident := "?"
	if info, err := unix.IoctlGetWatchdogInfo(fd); err == nil {
		ident = unix.ByteSliceToString(info.Identity[:])
		if info.Options&unix.WDIOF_MAGICCLOSE == 0 {
			// Such a driver stops at every close; the timer must run on.
			return 0, ident, fmt.Errorf("watchdog %s (%s) stops when it is closed (no magic close)", w.Dev, ident)
		}
	}
	return time.Duration(got) * time.Second, ident, nil
}

// Disarm stops the watchdog: open, the magic 'V', close. Opening restarts
// the timer at its current timeout, so a failure to stop it leaves the
// timeout armed, never less. A missing device is os.ErrNotExist.
func (w Watchdog) Disarm() error {
	f, err := os.OpenFile(w.Dev, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("watchdog: %w", err)
	}
	if _, err := f.Write([]byte("V")); err != nil {
		f.Close()
		return fmt.Errorf("watchdog %s: magic close: %w", w.Dev, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("watchdog %s: close: %w", w.Dev, err)
	}
	return nil
}

// EncodeWatchdogMarker is the content of the watchdog marker
// (bootconfig.WatchdogVarName) for a watchdog of d.
func EncodeWatchdogMarker(d time.Duration) []byte {
	return binary.LittleEndian.AppendUint32(nil, uint32(d/time.Second))
}

// DecodeWatchdogMarker reads the watchdog marker's content (without the
// four attribute bytes of efivarfs).
func DecodeWatchdogMarker(b []byte) (time.Duration, error) {
	if len(b) != 4 {
		return 0, fmt.Errorf("watchdog marker: %d bytes, want 4", len(b))
	}
	return time.Duration(binary.LittleEndian.Uint32(b)) * time.Second, nil
}

// watchdogMarker is the variable; efivarfs makes a variable it does not
// know immutable, which secureboot.Efivarfs undoes to delete it.
func watchdogMarker() (secureboot.Efivarfs, secureboot.Variable) {
	guid, err := secureboot.ParseGUID(bootconfig.TrialVarGUID)
	if err != nil {
		panic(err) // a constant
	}
	return secureboot.Efivarfs{Dir: efivarsDir}, secureboot.Variable{Name: bootconfig.WatchdogVarName, GUID: guid}
}

// armTrialWatchdog arms the watchdog of a trial boot whose update timeout
// is timeout (0: the default).
func armTrialWatchdog(log *Logger, timeout time.Duration) (time.Duration, error) {
	got, ident, err := Watchdog{Dev: WatchdogDevice}.Arm(WatchdogTimeout(timeout))
	if err != nil {
		return 0, fmt.Errorf("trial boot of an update: arm the watchdog that bounds it: %w", err)
	}
	log.Printf("trial boot of an update: watchdog %s (%s) armed for %s (osguard.update.timeout plus %s); it resets the machine unless 'osguard update check-boot' takes it over",
		WatchdogDevice, ident, got, WatchdogMargin)
	return got, nil
}

// markHandover sets the watchdog marker just before switch_root. A marker
// that cannot be written only makes the reason of a rollback less precise,
// so it is a warning.
func markHandover(log *Logger, d time.Duration) {
	vars, v := watchdogMarker()
	// Non-volatile, boot service and runtime access, as the trial marker.
	if err := vars.Set(v, 0x7, EncodeWatchdogMarker(d)); err != nil {
		log.Printf("warning: watchdog marker: %v", err)
	}
}

// ForgetHandover removes the watchdog marker: a trial boot that fails
// after markHandover (the exec of the userland's init) did not reach its
// userland.
func ForgetHandover(log *Logger) {
	vars, v := watchdogMarker()
	if err := vars.Delete(v); err != nil && !errors.Is(err, os.ErrNotExist) {
		log.Printf("warning: watchdog marker: %v", err)
	}
}
