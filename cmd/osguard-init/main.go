// Command osguard-init is PID 1 of the osguard initramfs. It prepares the
// kernel interfaces, reports what the kernel offers, and (as the boot path
// grows) verifies and mounts /usr before handing over to the userland.
//
// It is built static (CGO_ENABLED=0). Every step logs one line on the console.
package main

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "osguard-init: "+format+"\n", args...)
}

func mountAll() error {
	for _, m := range []struct{ src, dst, fstype string }{
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
		{"devtmpfs", "/dev", "devtmpfs"},
		{"securityfs", "/sys/kernel/security", "securityfs"},
	} {
		if err := os.MkdirAll(m.dst, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(m.src, m.dst, m.fstype, unix.MS_NOSUID|unix.MS_NOEXEC, ""); err != nil && err != unix.EBUSY {
			return fmt.Errorf("mount %s on %s: %w", m.fstype, m.dst, err)
		}
	}
	return nil
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}

func powerOff() {
	logf("power off")
	unix.Sync()
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	select {}
}

func main() {
	if err := mountAll(); err != nil {
		logf("FAILED: %v", err)
		powerOff()
	}
	lsm, err := os.ReadFile("/sys/kernel/security/lsm")
	if err != nil {
		logf("FAILED: read LSM list: %v", err)
		powerOff()
	}
	logf("pid=%d kernel=%s lsm=%s", os.Getpid(), kernelRelease(), strings.TrimSpace(string(lsm)))
	powerOff()
}
