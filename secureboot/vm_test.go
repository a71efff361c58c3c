package secureboot_test

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/u-root/u-root/pkg/cpio"
	"github.com/ulikunitz/xz"

	"github.com/osguard/osguard/internal/testutil"
	"github.com/osguard/osguard/internal/vm"
	"github.com/osguard/osguard/internal/vm/vmtest"
	"github.com/osguard/osguard/secureboot"
)

// goBuildStatic compiles a main package with CGO_ENABLED=0.
func goBuildStatic(t *testing.T, pkg, out string) []byte {
	t.Helper()
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", pkg, err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// buildTestInitramfs packs testdata/guest as /init with efivarfs.ko and,
// when keysDir is set, a static osguard and the .auth files under /keys.
func buildTestInitramfs(t *testing.T, modules, keysDir string) string {
	t.Helper()
	dir := t.TempDir()
	recs := []cpio.Record{
		cpio.Directory("dev", 0o755),
		cpio.CharDev("dev/console", 0o600, 5, 1),
		cpio.CharDev("dev/null", 0o666, 1, 3),
		cpio.Directory("proc", 0o755),
		cpio.Directory("sys", 0o755),
		cpio.StaticFile("init", string(goBuildStatic(t, "github.com/osguard/osguard/secureboot/testdata/guest", filepath.Join(dir, "guest"))), 0o755),
	}
	f, err := os.Open(filepath.Join(modules, "kernel/fs/efivarfs/efivarfs.ko.xz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	xr, err := xz.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	ko, err := io.ReadAll(xr)
	if err != nil {
		t.Fatal(err)
	}
	recs = append(recs, cpio.StaticFile("efivarfs.ko", string(ko), 0o644))
	if keysDir != "" {
		recs = append(recs,
			cpio.StaticFile("osguard", string(goBuildStatic(t, "github.com/osguard/osguard/cmd/osguard", filepath.Join(dir, "osguard"))), 0o755),
			cpio.Directory("keys", 0o755))
		for _, n := range []string{"PK.auth", "KEK.auth", "db.auth"} {
			b, err := os.ReadFile(filepath.Join(keysDir, n))
			if err != nil {
				t.Fatal(err)
			}
			recs = append(recs, cpio.StaticFile("keys/"+n, string(b), 0o644))
		}
	}
	out := filepath.Join(dir, "initramfs.cpio")
	vmtest.WriteCPIO(t, out, recs)
	return out
}

// bootGuest boots the Debian kernel directly under OVMF (setup mode checks
// nothing, and these tests check variables, not image verification), waits
// for the guest to power off and returns its console.
func bootGuest(t *testing.T, vars, initrd, modes string, wantErr bool) (*vm.Machine, string) {
	t.Helper()
	art := testutil.Artifacts(t)
	start := time.Now()
	m := vmtest.Start(t, vm.Config{
		UEFI:   true,
		Vars:   vars,
		Kernel: art.Vmlinuz,
		Initrd: initrd,
		Append: "console=ttyS0 panic=-1 sbtest.mode=" + modes,
	})
	if _, err := m.WaitFor(`SBTEST: done`, 4*time.Minute); err != nil {
		t.Fatalf("guest (%s): %v", modes, err)
	}
	if err := m.Wait(time.Minute); err != nil {
		t.Fatalf("qemu did not exit after power off: %v", err)
	}
	t.Logf("boot %s: %v", modes, time.Since(start).Round(10*time.Millisecond))
	con := strings.ReplaceAll(m.Console(), "\r", "")
	if strings.Contains(con, "SBTEST: error") != wantErr {
		t.Errorf("guest error reported: %v, want %v:\n%s", !wantErr, wantErr, grepLines(con, "SBTEST"))
	}
	return m, con
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// checkSecureBootOn checks the console of a status boot with h enrolled.
func checkSecureBootOn(t *testing.T, con, prefix string) {
	t.Helper()
	for _, want := range []string{
		"SBTEST: SecureBoot=true SetupMode=false",
		"SBTEST: db " + prefix + " db",
		"Loaded X.509 cert '" + prefix + " db",
	} {
		if !strings.Contains(con, want) {
			t.Errorf("console lacks %q; SBTEST lines:\n%s", want, grepLines(con, "SBTEST"))
		}
	}
	// The kernel reports Secure Boot itself too.
	if !regexp.MustCompile(`secureboot: Secure boot enabled`).MatchString(con) {
		t.Errorf("kernel did not report Secure boot enabled:\n%s", grepLines(con, "ecure boot"))
	}
	// The db certificate is in the .platform keyring.
	if !regexp.MustCompile(`SBTEST: key asymmetri ` + regexp.QuoteMeta(prefix) + ` db: `).MatchString(con) {
		t.Errorf("db certificate not among the keys:\n%s", grepLines(con, "SBTEST: key"))
	}
}

func newTestKeys(t *testing.T, prefix string) (string, *secureboot.Hierarchy) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "keys")
	if err := secureboot.GenerateKeys(dir, secureboot.KeygenOptions{SubjectPrefix: prefix, Time: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)}); err != nil {
		t.Fatal(err)
	}
	h, err := secureboot.LoadHierarchy(dir)
	if err != nil {
		t.Fatal(err)
	}
	return dir, h
}

// TestVMVarstore: a VARS file from WriteVarstore starts OVMF with Secure
// Boot on, and the kernel puts our db certificate into .platform.
func TestVMVarstore(t *testing.T) {
	art := testutil.Artifacts(t)
	testutil.NeedFile(t, vm.OVMFVars)
	_, h := newTestKeys(t, "sbvars")
	tmpl, err := os.ReadFile(vm.OVMFVars)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := secureboot.WriteVarstore(tmpl, h, &buf); err != nil {
		t.Fatal(err)
	}
	vars := filepath.Join(t.TempDir(), "VARS.fd")
	if err := os.WriteFile(vars, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	_, con := bootGuest(t, vars, buildTestInitramfs(t, art.Modules, ""), "status", false)
	checkSecureBootOn(t, con, "sbvars")
}

// TestVMEnroll: `osguard sb enroll` in a setup-mode guest enrolls the keys,
// the next boot has Secure Boot on, and a second enroll is refused.
func TestVMEnroll(t *testing.T) {
	art := testutil.Artifacts(t)
	keys, _ := newTestKeys(t, "sbenroll")
	initrd := buildTestInitramfs(t, art.Modules, keys)

	m, con := bootGuest(t, "", initrd, "status,enroll", false)
	for _, want := range []string{
		"SBTEST: SecureBoot=false SetupMode=true",
		"SBTEST: enroll: before: SetupMode=1 SecureBoot=0",
		"SBTEST: enroll: after: SetupMode=0 SecureBoot=0",
		"SBTEST: enrolled",
	} {
		if !strings.Contains(con, want) {
			t.Errorf("enrollment boot: console lacks %q; SBTEST lines:\n%s", want, grepLines(con, "SBTEST"))
		}
	}
	vars := filepath.Join(t.TempDir(), "VARS.fd")
	b, err := os.ReadFile(m.VarsPath())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(vars, b, 0o644); err != nil {
		t.Fatal(err)
	}
	// The varstore reader sees what the firmware stored.
	vs, err := secureboot.ReadVarstore(b)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, v := range vs {
		names = append(names, v.Name)
	}
	for _, want := range []string{"PK", "KEK", "db"} {
		if !strings.Contains(" "+strings.Join(names, " ")+" ", " "+want+" ") {
			t.Errorf("VARS after enrollment lacks %s: %v", want, names)
		}
	}

	// The second enroll must fail: the guest reports its error.
	_, con = bootGuest(t, vars, initrd, "status,enroll", true)
	checkSecureBootOn(t, con, "sbenroll")
	if !strings.Contains(con, "not in setup mode") || strings.Contains(con, "SBTEST: enrolled") {
		t.Errorf("second enroll was not refused:\n%s", grepLines(con, "SBTEST"))
	}
}

// espDisk writes a GPT disk whose FAT ESP holds efi as \EFI\BOOT\BOOTX64.EFI,
// with the Debian tools (the project's own disk code is tested elsewhere).
func espDisk(t *testing.T, efi []byte) string {
	t.Helper()
	tools := testutil.NeedTool(t, "mkfs.vfat", "mmd", "mcopy", "sgdisk")
	dir := t.TempDir()
	part, disk, src := filepath.Join(dir, "esp.part"), filepath.Join(dir, "disk.img"), filepath.Join(dir, "BOOTX64.EFI")
	if err := os.WriteFile(src, efi, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range [][]string{
		{"truncate", "-s", "40M", part},
		{tools[0], "-F", "32", "-n", "ESP", part},
		{tools[1], "-i", part, "::/EFI", "::/EFI/BOOT"},
		{tools[2], "-i", part, src, "::/EFI/BOOT/BOOTX64.EFI"},
		{"truncate", "-s", "42M", disk},
		{tools[3], "-n", "1:2048:+40M", "-t", "1:ef00", disk}, // no -q: it then writes nothing (prototype gotcha 4)
		{"dd", "if=" + part, "of=" + disk, "bs=512", "seek=2048", "conv=notrunc", "status=none"},
	} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", c, err, out)
		}
	}
	return disk
}

// TestVMFirmwareVerifiesSignPE: with VARS from WriteVarstore, OVMF starts
// a kernel signed by SignPE with the db key from the ESP, and refuses the
// same kernel signed by KEK (not in db) and as Debian signed it.
func TestVMFirmwareVerifiesSignPE(t *testing.T) {
	art := testutil.Artifacts(t)
	_, h := newTestKeys(t, "sbfw")
	tmpl, err := os.ReadFile(vm.OVMFVars)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := secureboot.WriteVarstore(tmpl, h, &buf); err != nil {
		t.Fatal(err)
	}
	vars := filepath.Join(t.TempDir(), "VARS.fd")
	if err := os.WriteFile(vars, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	kernel, err := os.ReadFile(art.Vmlinuz)
	if err != nil {
		t.Fatal(err)
	}
	byDB, err := secureboot.SignPE(kernel, h.DB.Key, h.DB.Cert)
	if err != nil {
		t.Fatal(err)
	}
	byKEK, err := secureboot.SignPE(kernel, h.KEK.Key, h.KEK.Cert)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		efi  []byte
		want string
	}{
		{"signed by db", byDB, `EFI stub: UEFI Secure Boot is enabled`},
		{"signed by KEK", byKEK, `failed to load Boot[0-9A-F]+ .*: Access Denied`},
		{"Debian signature", kernel, `failed to load Boot[0-9A-F]+ .*: Access Denied`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			m := vmtest.Start(t, vm.Config{
				UEFI:   true,
				Vars:   vars,
				Drives: []vm.Drive{{Path: espDisk(t, tc.efi), Interface: "ide", Snapshot: true}},
			})
			if _, err := m.WaitFor(tc.want, 3*time.Minute); err != nil {
				t.Fatalf("waiting for %q: %v", tc.want, err)
			}
			t.Logf("%s: %v", tc.name, time.Since(start).Round(10*time.Millisecond))
		})
	}
}
