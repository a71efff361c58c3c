package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/osguard/osguard/disk"
	"github.com/osguard/osguard/initrd"
	"github.com/osguard/osguard/internal/testutil"
	"github.com/osguard/osguard/internal/vm"
	"github.com/osguard/osguard/internal/vm/vmtest"
	"github.com/osguard/osguard/ipe"
	"github.com/osguard/osguard/secureboot"
	"github.com/osguard/osguard/uki"
	"github.com/osguard/osguard/verity"
)

// The VM tests boot the trixie 6.12 kernel directly (-kernel) under OVMF
// with our PK/KEK/db enrolled in the VARS file, so the firmware reports
// SecureBoot=1 and SetupMode=0 and the kernel loads our db certificate into
// .platform. (Direct boot is not itself checked by the firmware; the UKI on
// an ESP is the image builder's test.) The kernel is the oracle for
// everything the guest reports.

const (
	readyMarker = "USERLAND-READY"
	blobMarker  = "OSGUARD-CORRUPTION-MARKER-"
	testInit    = "/usr/lib/osguard-test/init"

	selinuxPolicyPath = "/etc/selinux/default/policy/policy.33"
)

type fixture struct {
	dir         string
	vars        string // enrolled PK/KEK/db
	initramfs   string
	initramfsXZ string // the same, xz-compressed
	good        string // disk with usr signed by db
	wrongKey    string // same usr, root hash signed by a key not in db
	corrupt     string // good disk with one byte of a file flipped
	rootHash    string
	kernel      string
	err         error

	mkUKIDisk func(esp []byte) (string, error) // the good disk with an ESP first
	db        secureboot.KeyPair
}

var (
	fixOnce sync.Once
	fix     fixture
)

func getFixture(t *testing.T) *fixture {
	t.Helper()
	art := testutil.Artifacts(t)
	testutil.NeedTool(t, "mkfs.erofs", "veritysetup", "qemu-system-x86_64", "mkfs.ext4", "openssl")
	testutil.NeedFile(t, selinuxPolicyPath)
	testutil.NeedFile(t, "/bin/busybox")
	testutil.NeedFile(t, vm.OVMFVars)
	fixOnce.Do(func() {
		dir, err := os.MkdirTemp("", "osguard-init-vm-")
		if err != nil {
			fix.err = err
			return
		}
		fix.dir, fix.kernel = dir, art.Vmlinuz
		fix.err = buildFixture(&fix, art.KernelRoot)
	})
	if fix.err != nil {
		t.Fatalf("fixture: %v", fix.err)
	}
	return &fix
}

func TestMain(m *testing.M) {
	code := m.Run()
	if fix.dir != "" {
		os.RemoveAll(fix.dir)
	}
	os.Exit(code)
}

func runTool(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %v: %w\n%s", name, args, err, out)
	}
	return nil
}

func buildFixture(f *fixture, kernelRoot string) error {
	d := f.dir
	// Keys: ours, enrolled; and another hierarchy whose db is not.
	for _, k := range []string{"keys", "other"} {
		if err := secureboot.GenerateKeys(filepath.Join(d, k), secureboot.KeygenOptions{SubjectPrefix: "osguard-init test " + k}); err != nil {
			return err
		}
	}
	h, err := secureboot.LoadHierarchy(filepath.Join(d, "keys"))
	if err != nil {
		return err
	}
	other, err := secureboot.LoadHierarchy(filepath.Join(d, "other"))
	if err != nil {
		return err
	}
	tmpl, err := os.ReadFile(vm.OVMFVars)
	if err != nil {
		return err
	}
	var vars bytes.Buffer
	if err := secureboot.WriteVarstore(tmpl, h, &vars); err != nil {
		return err
	}
	f.vars = filepath.Join(d, "vars.fd")
	if err := os.WriteFile(f.vars, vars.Bytes(), 0o644); err != nil {
		return err
	}

	// The userland: busybox-static on a merged /usr, a test init, the
	// osguard-init helper (for the DM table ioctl) and a blob to corrupt.
	initBin := filepath.Join(d, "osguard-init")
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	build := exec.Command(goTool, "build", "-trimpath", "-ldflags=-s -w", "-o", initBin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build osguard-init: %w\n%s", err, out)
	}
	usr := filepath.Join(d, "usr")
	for _, sub := range []string{"bin", "lib/osguard-test", "share/test", "share/factory/etc"} {
		os.MkdirAll(filepath.Join(usr, sub), 0o755)
	}
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return err
	}
	os.WriteFile(filepath.Join(usr, "bin/busybox"), bb, 0o755)
	list, err := exec.Command("/bin/busybox", "--list").Output()
	if err != nil {
		return err
	}
	for _, a := range strings.Fields(string(list)) {
		if a != "busybox" {
			os.Symlink("busybox", filepath.Join(usr, "bin", a))
		}
	}
	os.Symlink("bin", filepath.Join(usr, "sbin"))
	ib, _ := os.ReadFile(initBin)
	os.WriteFile(filepath.Join(usr, "bin/osguard-init"), ib, 0o755)
	os.WriteFile(filepath.Join(usr, "lib/osguard-test/init"), []byte("#!/usr/bin/sh\nexport PATH=/usr/bin\nmkdir -p /mnt\n"+
		"echo \""+readyMarker+" uptime=$(cut -d' ' -f1 /proc/uptime)\"\nexec /usr/bin/sh\n"), 0o755)
	os.WriteFile(filepath.Join(usr, "share/factory/etc/hostname"), []byte("osguard-test\n"), 0o644)
	blob := []byte(blobMarker)
	for seed := sha256.Sum256([]byte("blob")); len(blob) < 256<<10; seed = sha256.Sum256(seed[:]) {
		blob = append(blob, seed[:]...)
	}
	os.WriteFile(filepath.Join(usr, "share/test/blob"), blob, 0o644)

	img := filepath.Join(d, "usr.erofs")
	if err := runTool("mkfs.erofs", "--quiet", "-T0", "--all-root", "-U6f736775-6172-4400-8000-000000000001", img, usr); err != nil {
		return err
	}
	hashImg := filepath.Join(d, "usr.verity")
	out, err := exec.Command("veritysetup", "format", "--salt="+strings.Repeat("5a", 32), img, hashImg).CombinedOutput()
	if err != nil {
		return fmt.Errorf("veritysetup format: %w\n%s", err, out)
	}
	m := regexp.MustCompile(`Root hash:\s+([0-9a-f]+)`).FindSubmatch(out)
	if m == nil {
		return fmt.Errorf("no root hash in veritysetup output:\n%s", out)
	}
	f.rootHash = string(m[1])
	root, _ := hex.DecodeString(f.rootHash)

	varImg := filepath.Join(d, "var.ext4")
	if err := runTool("mkfs.ext4", "-q", "-F", "-U", "6f736775-6172-4400-8000-000000000002", "-E", "hash_seed=6f736775-6172-4400-8000-000000000003", varImg, "8M"); err != nil {
		return err
	}
	rootFile := filepath.Join(d, "roothash.txt")
	os.WriteFile(rootFile, []byte(f.rootHash), 0o644)
	// The good disks carry a signature made by the project's code
	// (verity.SignRootHash); the wrong-key disk one made by openssl, the
	// reference, so that its refusal is about the key and not the format.
	mkdisk := func(name, keyDir string, kp secureboot.KeyPair, data string, first ...disk.Partition) (string, error) {
		var sig []byte
		var err error
		if keyDir == filepath.Join(d, "keys") {
			sig, err = verity.SignRootHash(root, kp.Key, kp.Cert)
		} else {
			sig, err = opensslSign(rootFile, keyDir, true)
		}
		if err != nil {
			return "", err
		}
		js, err := verity.NewSignatureJSON(root, sig, kp.Cert).MarshalPadded(16 << 10)
		if err != nil {
			return "", err
		}
		var usrUUID, verUUID disk.GUID
		copy(usrUUID[:], root[:16])
		copy(verUUID[:], root[16:32])
		p := filepath.Join(d, name)
		w, err := os.Create(p)
		if err != nil {
			return "", err
		}
		defer w.Close()
		_, err = disk.Build(w, disk.Layout{DiskGUID: disk.GUID(verity.DeriveUUID([]byte("disk"))), Partitions: append(first,
			disk.Partition{TypeGUID: disk.TypeUsrX86_64, UUID: usrUUID, Name: "usr-A", Path: data},
			disk.Partition{TypeGUID: disk.TypeUsrX86_64Verity, UUID: verUUID, Name: "usr-A-verity", Path: hashImg},
			disk.Partition{TypeGUID: disk.TypeUsrX86_64VeritySig, UUID: disk.GUID(verity.DeriveUUID(root)), Name: "usr-A-verity-sig",
				Content: bytes.NewReader(js), ContentSize: int64(len(js))},
			disk.Partition{TypeGUID: disk.TypeVar, UUID: disk.GUID(verity.DeriveUUID([]byte("var"))), Name: "var", Path: varImg},
		)})
		return p, err
	}
	f.mkUKIDisk = func(esp []byte) (string, error) {
		return mkdisk("uki.raw", filepath.Join(d, "keys"), h.DB, img, disk.Partition{TypeGUID: disk.TypeESP,
			UUID: disk.GUID(verity.DeriveUUID([]byte("esp"))), Name: "ESP", Content: bytes.NewReader(esp), ContentSize: int64(len(esp))})
	}
	f.db = h.DB
	if f.good, err = mkdisk("good.raw", filepath.Join(d, "keys"), h.DB, img); err != nil {
		return err
	}
	if f.wrongKey, err = mkdisk("wrongkey.raw", filepath.Join(d, "other"), other.DB, img); err != nil {
		return err
	}
	// Flip one byte inside the blob's data.
	raw, err := os.ReadFile(img)
	if err != nil {
		return err
	}
	off := bytes.Index(raw, []byte(blobMarker))
	if off < 0 {
		return fmt.Errorf("blob marker not found in the erofs image")
	}
	raw[off+5000] ^= 0x01
	bad := filepath.Join(d, "usr-corrupt.erofs")
	os.WriteFile(bad, raw, 0o644)
	if f.corrupt, err = mkdisk("corrupt.raw", filepath.Join(d, "keys"), h.DB, bad); err != nil {
		return err
	}

	policy := ipe.Generate(ipe.GenerateOptions{})
	if _, err := ipe.Parse(policy); err != nil {
		return err
	}
	pol, err := ipe.Sign(policy, h.DB.Key, h.DB.Cert)
	if err != nil {
		return err
	}
	selinuxPolicy, err := os.ReadFile(selinuxPolicyPath)
	if err != nil {
		return err
	}
	for _, c := range []struct {
		comp string
		dst  *string
	}{{initrd.CompressZstd, &f.initramfs}, {initrd.CompressXZ, &f.initramfsXZ}} {
		var ir bytes.Buffer
		// The SELinux policy is Debian's refpolicy (selinux-policy-default);
		// the build leaves SELinux off and a test turns it on from the
		// command line. /bin/sh is only there for the osguard.debug=1 test.
		opts := initrd.Options{KernelRoot: kernelRoot, InitPath: initBin, Policy: pol, Compression: c.comp,
			SELinuxPolicy: selinuxPolicy, Add: []initrd.File{{Src: "/bin/busybox", Dst: "/bin/sh"}}}
		if err := initrd.Build(opts, &ir); err != nil {
			return err
		}
		*c.dst = filepath.Join(d, "initramfs."+c.comp)
		if err := os.WriteFile(*c.dst, ir.Bytes(), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// opensslSign signs file with the db key of keyDir as
// `openssl smime -sign -noattr -binary` does: PKCS#7, sha256, no signed
// attributes; detached for dm-verity, attached for IPE.
func opensslSign(file, keyDir string, detached bool) ([]byte, error) {
	args := []string{"smime", "-sign", "-in", file, "-signer", filepath.Join(keyDir, "db.crt"),
		"-inkey", filepath.Join(keyDir, "db.key"), "-noattr", "-binary", "-outform", "der", "-md", "sha256"}
	if !detached {
		args = append(args, "-nodetach")
	}
	out, err := exec.Command("openssl", args...).Output()
	if err != nil {
		return nil, fmt.Errorf("openssl %v: %w", args, err)
	}
	return out, nil
}

func (f *fixture) boot(t *testing.T, diskPath, vars, extra string) (*vm.Machine, time.Time) {
	return f.bootWith(t, f.initramfs, diskPath, vars, extra)
}

func (f *fixture) bootWith(t *testing.T, initramfs, diskPath, vars, extra string) (*vm.Machine, time.Time) {
	t.Helper()
	start := time.Now()
	m := vmtest.Start(t, vm.Config{
		UEFI: true, Vars: vars,
		Kernel: f.kernel, Initrd: initramfs,
		Append: "console=ttyS0 panic=-1 usrhash=" + f.rootHash + " osguard.init=" + testInit + " " + extra,
		Drives: []vm.Drive{{Path: diskPath, Interface: "virtio", Snapshot: true}},
	})
	return m, start
}

func TestBootSignedUsr(t *testing.T) {
	f := getFixture(t)
	m, start := f.boot(t, f.good, f.vars, "")
	if _, err := m.WaitFor(`Linux version`, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	firmware := time.Since(start)
	sub, err := m.WaitFor(readyMarker+` uptime=([0-9.]+)`, 3*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("QEMU start to userland shell: %.1f s (firmware until the kernel's first line: %.1f s; guest uptime at the shell %s s)",
		time.Since(start).Seconds(), firmware.Seconds(), sub[1])
	time.Sleep(300 * time.Millisecond) // let the shell print its prompt

	for _, c := range []struct {
		name, cmd string
		ok        bool
		want      string
	}{
		{"dm name", "cat /sys/block/dm-0/dm/name", true, "usr"},
		{"dm table via ioctl", "osguard-init dm-table usr", true, "root_hash_sig_key_desc osguard:usr:" + f.rootHash},
		{"dm readonly verity", "osguard-init dm-table usr", true, "readonly: true"},
		{"dm verity type", "osguard-init dm-table usr", true, " verity 1 "},
		{"signatures required", "cat /sys/module/dm_verity/parameters/require_signatures", true, "Y"},
		{"verity status verified", "osguard-init dm-table usr", true, " verity V"},
		{"mounted erofs", "grep ' /usr ' /proc/mounts", true, "/dev/mapper/usr /usr erofs ro"},
		{"touch /usr", "touch /usr/x", false, "Read-only file system"},
		{"exec from verity", "/usr/bin/busybox echo exec-from-verity-ok", true, "exec-from-verity-ok"},
		{"exec from tmpfs", "mount -t tmpfs tmpfs /mnt && cp /usr/bin/busybox /mnt/bb && /mnt/bb true", false, "Permission denied"},
		{"ipe policy active", "cat /sys/kernel/security/ipe/policies/osguard/active; echo; cat /sys/kernel/security/ipe/enforce", true, "1\n1"},
		{"factory etc", "cat /etc/hostname", true, "osguard-test"},
		{"var partition", "grep ' /var ' /proc/mounts", true, "/dev/vda4 /var ext4 rw"},
		{"initramfs freed", "ls /init /etc/osguard 2>&1", false, "No such file"},
		{"secure boot", "od -An -tx1 /sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c", true, "01"},
	} {
		out, err := m.Run(c.cmd, 30*time.Second)
		if (err == nil) != c.ok || !strings.Contains(out, c.want) {
			t.Errorf("%s: %q: err=%v out=%q, want ok=%v and %q", c.name, c.cmd, err, out, c.ok, c.want)
		}
	}
	if out, _ := m.Run("dmesg | grep -E 'ipe|IPE' | tail -n 3", 30*time.Second); !strings.Contains(out, "/mnt/bb") {
		t.Logf("no IPE audit record for /mnt/bb in dmesg: %q", out)
	}
	if !strings.Contains(m.Console(), "step 8/8: switch_root") {
		t.Error("init did not log step 8")
	}
	for _, line := range strings.Split(m.Console(), "\n") {
		if strings.Contains(line, "osguard-init: [") || strings.Contains(line, "Run /init") {
			t.Log(strings.TrimSpace(line))
		}
	}
}

// TestBootSignedUKIFromESP boots as a node does: the firmware checks the
// db-signed UKI (systemd-stub, the kernel, the initramfs, the command line)
// from \EFI\BOOT\BOOTX64.EFI on the ESP, then the init mounts the signed /usr.
func TestBootSignedUKIFromESP(t *testing.T) {
	f := getFixture(t)
	art := testutil.Artifacts(t)
	testutil.NeedFile(t, art.SystemdStub)
	stub, err := os.ReadFile(art.SystemdStub)
	if err != nil {
		t.Fatal(err)
	}
	linux, _ := os.ReadFile(f.kernel)
	ir, _ := os.ReadFile(f.initramfs)
	img, err := uki.Build(uki.Options{Stub: stub, Linux: linux, Initrds: [][]byte{ir},
		Cmdline: "console=ttyS0 panic=-1 usrhash=" + f.rootHash + " osguard.init=" + testInit, Uname: art.KernelVersion,
		OSRelease: "ID=osguard-test\n"})
	if err != nil {
		t.Fatal(err)
	}
	signed, err := secureboot.SignPE(img, f.db.Key, f.db.Cert)
	if err != nil {
		t.Fatal(err)
	}
	esp, err := disk.ESP(disk.FATOptions{VolumeID: 0x05ec0001}, disk.File{Path: `\EFI\BOOT\BOOTX64.EFI`, Data: signed})
	if err != nil {
		t.Fatal(err)
	}
	diskPath, err := f.mkUKIDisk(esp)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	m := vmtest.Start(t, vm.Config{UEFI: true, Vars: f.vars, Drives: []vm.Drive{{Path: diskPath, Snapshot: true}}})
	sub, err := m.WaitFor(readyMarker+` uptime=([0-9.]+)`, 3*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("UKI from ESP, QEMU start to userland shell: %.1f s (guest uptime %s s)", time.Since(start).Seconds(), sub[1])
	time.Sleep(300 * time.Millisecond)
	for _, c := range []struct{ cmd, want string }{
		{"osguard-init dm-table usr", "root_hash_sig_key_desc"},
		{"dmesg | grep -i 'secure boot'", "Secure boot enabled"},
		{"cat /sys/kernel/security/ipe/policies/osguard/active; echo", "1"},
	} {
		out, err := m.Run(c.cmd, 30*time.Second)
		if err != nil || !strings.Contains(out, c.want) {
			t.Errorf("%q: %v %q, want %q", c.cmd, err, out, c.want)
		}
	}
	if !strings.Contains(m.Console(), "EFI stub: UEFI Secure Boot is enabled") {
		t.Error("the EFI stub did not report Secure Boot")
	}
}

func TestBootWrongKeyStops(t *testing.T) {
	f := getFixture(t)
	m, _ := f.boot(t, f.wrongKey, f.vars, "")
	if _, err := m.WaitFor(`ENOKEY`, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := m.WaitFor(`powering off`, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := m.Wait(time.Minute); err != nil {
		t.Fatalf("qemu did not power off cleanly: %v", err)
	}
	con := m.Console()
	for _, want := range []string{"Root hash verification failed (-ENOKEY)", "required key not available"} {
		if !strings.Contains(strings.ToLower(con), strings.ToLower(want)) {
			t.Errorf("console lacks %q", want)
		}
	}
	if strings.Contains(con, readyMarker+" uptime") || strings.Contains(con, "step 5/8") {
		t.Error("boot went on after the signature was refused")
	}
}

func TestBootCorruptedUsr(t *testing.T) {
	f := getFixture(t)
	m, _ := f.boot(t, f.corrupt, f.vars, "")
	if _, err := m.WaitFor(readyMarker+` uptime`, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	out, err := m.Run("cat /usr/share/test/blob > /dev/null", time.Minute)
	if err == nil || !strings.Contains(out, "Input/output error") {
		t.Fatalf("reading the corrupted file: err=%v out=%q, want an I/O error", err, out)
	}
	if !regexp.MustCompile(`device-mapper: verity: .*data block \d+ is corrupted`).MatchString(m.Console()) {
		t.Error("no dm-verity corruption message on the console")
	}
}

func TestBootCorruptedUsrRestarts(t *testing.T) {
	f := getFixture(t)
	m, _ := f.boot(t, f.corrupt, f.vars, "osguard.verity.on_corruption=restart")
	if _, err := m.WaitFor(readyMarker+` uptime`, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(m.Console(), "restart_on_corruption") {
		t.Error("table lacks restart_on_corruption")
	}
	time.Sleep(300 * time.Millisecond)
	m.Send("cat /usr/share/test/blob > /dev/null\n")
	if _, err := m.WaitFor(`reboot: Restarting system`, time.Minute); err != nil {
		t.Fatal(err)
	}
	// QEMU runs with -no-reboot, so the restart ends it.
	if err := m.Wait(time.Minute); err != nil {
		t.Logf("qemu exit: %v", err)
	}
}

func TestBootDebugShell(t *testing.T) {
	f := getFixture(t)
	m, _ := f.boot(t, f.wrongKey, f.vars, "osguard.debug=1")
	if _, err := m.WaitFor(`osguard.debug=1: starting /bin/sh`, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	out, err := m.Run("echo debug-shell-$((40+2)); ls /dev/mapper", 30*time.Second)
	if err != nil || !strings.Contains(out, "debug-shell-42") {
		t.Fatalf("debug shell: %v %q", err, out)
	}
	if strings.Contains(out, "usr") {
		t.Errorf("a usr device exists after the signature was refused: %q", out)
	}
}

// TestBootSELinuxPermissiveIPEAudit turns on SELinux (permissive) and IPE
// audit mode from the command line, over a build that has both off/enforce.
func TestBootSELinuxPermissiveIPEAudit(t *testing.T) {
	f := getFixture(t)
	// SELinux replaces AppArmor (the two major LSMs cannot stack); IPE stays.
	m, _ := f.boot(t, f.good, f.vars, "lsm=lockdown,capability,landlock,yama,selinux,bpf,ipe,ima,evm osguard.selinux=permissive osguard.ipe=audit")
	if _, err := m.WaitFor(readyMarker+` uptime`, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	for _, c := range []struct{ cmd, want string }{
		{"cat /sys/fs/selinux/enforce; echo", "0"},
		{"cat /sys/kernel/security/lsm; echo", "selinux"},
		{"cat /sys/fs/selinux/policyvers; echo", "3"},
		{"cat /proc/self/attr/current; echo", "kernel_t"},
		{"cat /sys/kernel/security/ipe/enforce; echo", "0"},
		{"mount -t tmpfs tmpfs /mnt && cp /usr/bin/busybox /mnt/busybox && /mnt/busybox echo audit-mode-exec-ok", "audit-mode-exec-ok"},
	} {
		out, err := m.Run(c.cmd, 30*time.Second)
		if err != nil || !strings.Contains(out, c.want) {
			t.Errorf("%q: %v %q, want %q", c.cmd, err, out, c.want)
		}
	}
	if !strings.Contains(m.Console(), "SELinux policy loaded") {
		t.Error("init did not log the policy load")
	}
}

func TestBootRefusedWithoutSecureBoot(t *testing.T) {
	f := getFixture(t)
	// OVMF's empty VARS: setup mode. This boot also shows that the kernel
	// unpacks the xz (CRC32) flavour of the initramfs.
	m, _ := f.bootWith(t, f.initramfsXZ, f.good, "", "")
	if _, err := m.WaitFor(`Secure Boot is not enforced`, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := m.Wait(time.Minute); err != nil {
		t.Fatalf("qemu did not power off cleanly: %v", err)
	}
	if strings.Contains(m.Console(), "step 3/8") {
		t.Error("boot went on without Secure Boot")
	}
}
