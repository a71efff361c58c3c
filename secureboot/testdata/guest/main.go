// Command guest is PID 1 of the initramfs that the secureboot VM tests boot.
// It loads efivarfs, mounts it, and then, by the kernel command line option
// sbtest.mode= (a comma-separated list), reports the Secure Boot state
// ("status") and runs "/osguard sb enroll --keys /keys" ("enroll"), then
// powers off.
// Its output lines start with "SBTEST:" for the test to match.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/osguard/osguard/secureboot"
)

func main() {
	err := run()
	if err != nil {
		fmt.Printf("SBTEST: error: %v\n", err)
	}
	fmt.Println("SBTEST: done")
	unix.Sync()
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
}

func run() error {
	for _, m := range []struct{ src, dst, fs string }{
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
	} {
		if err := unix.Mount(m.src, m.dst, m.fs, 0, ""); err != nil {
			return fmt.Errorf("mount %s: %w", m.dst, err)
		}
	}
	f, err := os.Open("/efivarfs.ko")
	if err != nil {
		return err
	}
	if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil && err != unix.EEXIST {
		return fmt.Errorf("load efivarfs: %w", err)
	}
	f.Close()
	if err := unix.Mount("efivarfs", secureboot.DefaultEfivarfs, "efivarfs", 0, ""); err != nil {
		return fmt.Errorf("mount efivarfs: %w", err)
	}
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return err
	}
	var modes []string
	for _, f := range strings.Fields(string(cmdline)) {
		if v, ok := strings.CutPrefix(f, "sbtest.mode="); ok {
			modes = strings.Split(v, ",")
		}
	}
	if len(modes) == 0 {
		return fmt.Errorf("no sbtest.mode= on the command line")
	}
	for _, m := range modes {
		if err := step(m); err != nil {
			fmt.Printf("SBTEST: error: %v\n", err)
		}
	}
	return nil
}

func step(mode string) error {
	switch mode {
	case "status":
		st, err := secureboot.ReadState(secureboot.Efivarfs{Dir: secureboot.DefaultEfivarfs})
		if err != nil {
			return err
		}
		fmt.Printf("SBTEST: SecureBoot=%t SetupMode=%t\n", st.SecureBoot, st.SetupMode)
		for _, c := range st.DB {
			fmt.Printf("SBTEST: db %s\n", c.Subject.CommonName)
		}
		keys, err := os.ReadFile("/proc/keys")
		if err != nil {
			return err
		}
		for _, l := range strings.Split(string(keys), "\n") {
			if f := strings.Fields(l); len(f) > 8 && (strings.Contains(l, ".platform") || f[7] == "asymmetri") {
				fmt.Printf("SBTEST: key %s %s\n", f[7], strings.Join(f[8:], " "))
			}
		}
	case "enroll":
		cmd := exec.Command("/osguard", "sb", "enroll", "--keys", "/keys")
		out, err := cmd.CombinedOutput()
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			fmt.Printf("SBTEST: enroll: %s\n", l)
		}
		if err != nil {
			return fmt.Errorf("osguard sb enroll: %w", err)
		}
		fmt.Println("SBTEST: enrolled")
	default:
		return fmt.Errorf("unknown sbtest.mode %q", mode)
	}
	return nil
}
