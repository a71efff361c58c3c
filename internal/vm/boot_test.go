package vm_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/u-root/u-root/pkg/cpio"

	"github.com/osguard/osguard/internal/testutil"
	"github.com/osguard/osguard/internal/vm"
	"github.com/osguard/osguard/internal/vm/vmtest"
)

// buildInitramfs compiles osguard-init statically and packs it as /init in a
// newc cpio, with the directories the init mounts on.
func buildInitramfs(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "init")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "github.com/osguard/osguard/cmd/osguard-init")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build osguard-init: %v\n%s", err, out)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	recs := []cpio.Record{
		cpio.Directory("dev", 0o755),
		cpio.CharDev("dev/console", 0o600, 5, 1),
		cpio.Directory("proc", 0o755),
		cpio.Directory("sys", 0o755),
		cpio.StaticFile("init", string(data), 0o755),
	}
	out := filepath.Join(dir, "initramfs.cpio")
	vmtest.WriteCPIO(t, out, recs)
	return out
}

// reportRE is the line osguard-init logs once proc, sys and securityfs are
// mounted. The test's initramfs holds no build config, so the init then
// stops and powers off: what this test needs.
var reportRE = `osguard-init: \[[ 0-9.]+s\] pid=(\d+) kernel=(\S+) lsm=(\S+)`

// TestInitBoots boots the Debian trixie 6.12 kernel with osguard-init as
// PID 1, directly and through OVMF, and checks what the kernel reported.
func TestInitBoots(t *testing.T) {
	art := testutil.Artifacts(t)
	initrd := buildInitramfs(t)
	for _, tc := range []struct {
		name string
		uefi bool
	}{
		{"direct", false},
		{"ovmf", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			m := vmtest.Start(t, vm.Config{
				UEFI:   tc.uefi,
				Kernel: art.Vmlinuz,
				Initrd: initrd,
				Append: "console=ttyS0 panic=-1 quiet",
			})
			subs, err := m.WaitFor(reportRE, 3*time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			if subs[1] != "1" {
				t.Errorf("osguard-init ran as pid %s, want 1", subs[1])
			}
			if subs[2] != art.KernelVersion {
				t.Errorf("kernel release %q, want %q", subs[2], art.KernelVersion)
			}
			if !regexp.MustCompile(`(^|,)ipe(,|$)`).MatchString(subs[3]) {
				t.Errorf("LSM list %q lacks ipe", subs[3])
			}
			// reboot(2) with POWER_OFF makes QEMU exit by itself.
			if err := m.Wait(time.Minute); err != nil {
				t.Fatalf("qemu did not exit cleanly after power off: %v", err)
			}
			t.Logf("boot to power off: %v", time.Since(start).Round(10*time.Millisecond))
		})
	}
}
