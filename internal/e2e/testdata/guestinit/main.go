// Command guestinit is PID 1 of the initrd that the Secure Boot VM tests put
// in a UKI. It prints what the guest sees on the console, one "OSG: " line
// per fact, and powers the machine off. PCR 11 is read first, before
// anything in userspace could extend it.
package main

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

const efiGlobal = "8be4df61-93ca-11d2-aa0d-00e098032b8c"

func say(format string, args ...any) {
	fmt.Printf("OSG: "+format+"\n", args...)
}

func main() {
	_ = unix.Mount("sysfs", "/sys", "sysfs", 0, "")
	_ = unix.Mount("proc", "/proc", "proc", 0, "")

	if b, err := os.ReadFile("/sys/class/tpm/tpm0/pcr-sha256/11"); err == nil {
		say("PCR11=%s", strings.ToLower(strings.TrimSpace(string(b))))
	} else {
		say("PCR11 unavailable: %v", err)
	}

	if f, err := os.Open("/efivarfs.ko"); err == nil {
		if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil && err != unix.EEXIST {
			say("efivarfs.ko: %v", err)
		}
		f.Close()
	}
	if err := unix.Mount("efivarfs", "/sys/firmware/efi/efivars", "efivarfs", 0, ""); err != nil {
		say("mount efivarfs: %v", err)
	}
	for _, v := range []string{"SecureBoot", "SetupMode"} {
		b, err := os.ReadFile("/sys/firmware/efi/efivars/" + v + "-" + efiGlobal)
		if err != nil || len(b) < 5 {
			say("%s unreadable: %v", v, err)
			continue
		}
		say("%s=%d", v, b[4])
	}

	// The kernel logs each certificate it loads from db into the
	// .platform keyring as "integrity: Loaded X.509 cert '<CN>: <SKID>'".
	buf := make([]byte, 1<<20)
	if n, err := unix.Klogctl(unix.SYSLOG_ACTION_READ_ALL, buf); err == nil {
		for _, l := range bytes.Split(buf[:n], []byte("\n")) {
			if bytes.Contains(l, []byte("Loaded X.509 cert")) || bytes.Contains(l, []byte("secureboot:")) {
				say("klog %s", l)
			}
		}
	}
	if b, err := os.ReadFile("/proc/keys"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, "platform") {
				say("key %s", l)
			}
		}
	}
	say("done")
	time.Sleep(100 * time.Millisecond)
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
}
