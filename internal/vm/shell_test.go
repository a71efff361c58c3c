package vm_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/u-root/u-root/pkg/cpio"

	"github.com/osguard/osguard/internal/testutil"
	"github.com/osguard/osguard/internal/vm"
	"github.com/osguard/osguard/internal/vm/vmtest"
)

// busyboxInitramfs packs the host's static busybox with an /init script
// that starts a shell on the console.
func busyboxInitramfs(t *testing.T) string {
	t.Helper()
	bb := testutil.NeedTool(t, "busybox")[0]
	data, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(data[:4096], []byte{0x7f, 'E', 'L', 'F'}) {
		t.Fatalf("%s is not an ELF file", bb)
	}
	script := "#!/bin/busybox sh\n/bin/busybox --install -s /bin\nexport PATH=/bin\n" +
		"mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev\n" +
		"echo SHELL-READY\nexec setsid cttyhack sh\n"
	recs := []cpio.Record{
		cpio.Directory("bin", 0o755), cpio.Directory("dev", 0o755),
		cpio.CharDev("dev/console", 0o600, 5, 1),
		cpio.Directory("proc", 0o755), cpio.Directory("sys", 0o755),
		cpio.StaticFile("bin/busybox", string(data), 0o755),
		cpio.StaticFile("init", script, 0o755),
	}
	out := filepath.Join(t.TempDir(), "bb.cpio")
	vmtest.WriteCPIO(t, out, recs)
	return out
}

// TestShellTPMAndCleanup types commands into a guest shell, reads the swtpm
// TPM the harness attached, and checks that no process survives Close.
func TestShellTPMAndCleanup(t *testing.T) {
	art := testutil.Artifacts(t)
	m := vmtest.Start(t, vm.Config{
		Kernel: art.Vmlinuz,
		Initrd: busyboxInitramfs(t),
		Append: "console=ttyS0 panic=-1 quiet",
		TPM:    true,
	})
	if _, err := m.WaitFor("SHELL-READY", 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := m.WaitForText(vm.ShellPrompt, 0, time.Minute); err != nil {
		t.Fatal(err)
	}
	out, err := m.Run("cat /sys/class/tpm/tpm0/tpm_version_major", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out) != "2" {
		t.Errorf("TPM major version %q, want 2", out)
	}
	// An unextended PCR of a fresh swtpm reads as zeros.
	out, err = m.Run("cat /sys/class/tpm/tpm0/pcr-sha256/23", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out) != strings.Repeat("0", 64) {
		t.Errorf("PCR 23 = %q, want zeros", out)
	}
	_, err = m.Run("false", time.Minute)
	var ee *vm.ExitError
	if !errors.As(err, &ee) || ee.Status != "1" {
		t.Errorf("Run(false) = %v, want exit status 1", err)
	}

	pids := qemuAndSwtpmPids(t, m.Dir())
	if len(pids) < 2 {
		t.Fatalf("found %d qemu/swtpm processes for this machine, want 2", len(pids))
	}
	m.Close()
	time.Sleep(200 * time.Millisecond)
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); err == nil {
			if st, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat")); !bytes.Contains(st, []byte(") Z ")) {
				t.Errorf("process %d is still running after Close", pid)
			}
		}
	}
}

// qemuAndSwtpmPids finds the processes whose command line names the
// machine's scratch dir.
func qemuAndSwtpmPids(t *testing.T, dir string) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range ents {
		pid := 0
		for _, c := range e.Name() {
			if c < '0' || c > '9' {
				pid = -1
				break
			}
			pid = pid*10 + int(c-'0')
		}
		if pid <= 0 {
			continue
		}
		cl, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if bytes.Contains(cl, []byte(dir)) {
			pids = append(pids, pid)
		}
	}
	return pids
}
