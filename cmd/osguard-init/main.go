// Command osguard-init is PID 1 of the osguard initramfs. It mounts a
// dm-verity /usr whose root-hash signature the kernel checks, loads the
// signed IPE policy and the SELinux policy, and switches to the userland.
// The steps live in internal/bootinit; this file only decides what a failure
// does: print the reason and power off, or start a shell when
// osguard.debug=1 is on the kernel command line, or reboot when the boot is
// an update's trial boot (so that the firmware returns to the old slot). It
// never goes on with an unverified /usr.
//
// Build it static: CGO_ENABLED=0 go build ./cmd/osguard-init
package main

import (
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/osguard/osguard/internal/bootinit"
	"github.com/osguard/osguard/internal/dm"
)

func main() {
	log := &bootinit.Logger{W: os.Stdout, Start: time.Now()}
	if os.Getpid() != 1 {
		os.Exit(tool(os.Args[1:]))
	}
	err := run(log)
	log.Printf("FATAL: %v", err)
	fail(log)
}

// run returns only on failure; a panic is turned into an error so that it
// ends in the same place as every other failure, not in a kernel panic.
func run(log *bootinit.Logger) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	if err := bootinit.Run(log); err != nil {
		return err
	}
	return fmt.Errorf("switch_root returned")
}

// tool is what osguard-init does when it is not PID 1: print a
// device-mapper device's table and status through the DM ioctls (a node
// has no dmsetup), for tests and for inspection.
func tool(args []string) int {
	if len(args) != 2 || args[0] != "dm-table" {
		fmt.Fprintln(os.Stderr, "osguard-init: not PID 1; usage: osguard-init dm-table NAME")
		return 2
	}
	dev, err := dm.Status(args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "osguard-init:", err)
		return 1
	}
	table, err := dm.Table(args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "osguard-init:", err)
		return 1
	}
	status, err := dm.TargetStatus(args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "osguard-init:", err)
		return 1
	}
	fmt.Printf("name: %s\ndev: %d:%d\nreadonly: %v\n", dev.Name, dev.Major, dev.Minor, dev.ReadOnly())
	for _, t := range table {
		fmt.Printf("table: %s\n", t)
	}
	for _, t := range status {
		fmt.Printf("status: %s\n", t)
	}
	return 0
}

func fail(log *bootinit.Logger) {
	if bootinit.TrialBoot() {
		// Even with osguard.debug=1: nobody is at the console of a node
		// that updates itself, and the old slot is one reboot away.
		log.Printf("this was the trial boot of an update: rebooting; the firmware goes back to the previous slot")
		// The userland was not reached: the rollback's reason must not
		// blame it.
		bootinit.ForgetHandover(log)
		unix.Sync()
		time.Sleep(100 * time.Millisecond)
		unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
		select {}
	}
	if bootinit.DebugMode() {
		for _, sh := range []string{"/sysroot/usr/bin/sh", "/usr/bin/sh", "/bin/sh"} {
			if _, err := os.Stat(sh); err == nil {
				log.Printf("osguard.debug=1: starting %s", sh)
				err := unix.Exec(sh, []string{sh}, []string{"PATH=/sysroot/usr/bin:/usr/bin:/bin"})
				log.Printf("exec %s: %v", sh, err)
			}
		}
		log.Printf("osguard.debug=1 but no shell found")
	}
	log.Printf("powering off")
	unix.Sync()
	time.Sleep(100 * time.Millisecond)
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	select {}
}
