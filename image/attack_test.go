package image_test

// The attack suite: each test boots a disk made by Build under OVMF with
// Secure Boot and our keys, and asserts what the firmware or the kernel did.

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/osguard/osguard/image"
	"github.com/osguard/osguard/internal/bootinit"
	"github.com/osguard/osguard/internal/imagetest"
	"github.com/osguard/osguard/internal/sbomcheck"
	"github.com/osguard/osguard/internal/testutil"
	"github.com/osguard/osguard/internal/vm"
	"github.com/osguard/osguard/internal/vm/vmtest"
	"github.com/osguard/osguard/ipe"
	"github.com/osguard/osguard/secureboot"
	"github.com/osguard/osguard/verity"
)

const testEpoch = 1700000000

// fixture is the default image, built once for the package's tests.
type fixture struct {
	bins    string // static osguard and osguard-init
	keys    string
	out     string // the default image
	m       image.Measurements
	dir     string
	buildMu sync.Mutex
}

var (
	fixOnce sync.Once
	fix     *fixture
	fixErr  error
)

// buildBinaries compiles the static osguard and osguard-init into dir.
func buildBinaries(dir string) error {
	for _, c := range []string{"osguard", "osguard-init"} {
		cmd := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(dir, c), "github.com/osguard/osguard/cmd/"+c)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build %s: %v\n%s", c, err, out)
		}
	}
	return nil
}

func getFixture(t testing.TB) *fixture {
	t.Helper()
	testutil.Artifacts(t)
	testutil.NeedFile(t, vm.OVMFVars)
	testutil.NeedTool(t, "mkfs.ext4")
	fixOnce.Do(func() {
		dir, err := os.MkdirTemp("", "osguard-image-test-")
		if err != nil {
			fixErr = err
			return
		}
		f := &fixture{dir: dir, bins: filepath.Join(dir, "bin"), keys: filepath.Join(dir, "keys"), out: filepath.Join(dir, "out")}
		os.MkdirAll(f.bins, 0o755)
		if fixErr = buildBinaries(f.bins); fixErr != nil {
			return
		}
		if fixErr = secureboot.GenerateKeys(f.keys, secureboot.KeygenOptions{SubjectPrefix: "attack-suite", Time: time.Unix(testEpoch, 0)}); fixErr != nil {
			return
		}
		if _, fixErr = f.build("", f.out, nil); fixErr != nil {
			return
		}
		b, err := os.ReadFile(filepath.Join(f.out, image.MeasurementsFile))
		if err != nil {
			fixErr = err
			return
		}
		fixErr = json.Unmarshal(b, &f.m)
		fix = f
	})
	if fixErr != nil {
		t.Fatalf("build the test image: %v", fixErr)
	}
	return fix
}

// build builds an image from the YAML config text (empty: the default
// profile) into out with the fixture's keys.
func (f *fixture) build(configYAML, out string, edit func(*image.Config)) (*image.Result, error) {
	var cfg *image.Config
	var err error
	if configYAML == "" {
		cfg, err = image.LoadConfig("")
	} else {
		cfg, err = image.ParseConfig([]byte(configYAML), "")
	}
	if err != nil {
		return nil, err
	}
	if edit != nil {
		edit(cfg)
	}
	return image.Build(image.BuildOptions{
		Config: cfg, OutDir: out, KeysDir: f.keys, Epoch: testEpoch, ToolVersion: "test",
		InitBinary: filepath.Join(f.bins, "osguard-init"), OsguardBinary: filepath.Join(f.bins, "osguard"),
	})
}

// diskCopy copies the image's disk so that a test may tamper with it.
func diskCopy(t *testing.T, src string) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// boot starts the image disk under OVMF Secure Boot with the build's VARS.
func (f *fixture) boot(t *testing.T, diskPath string, tpm bool, extra ...vm.Drive) *vm.Machine {
	t.Helper()
	return vmtest.Start(t, vm.Config{
		UEFI:   true,
		Vars:   filepath.Join(f.out, image.VarsFile),
		Drives: append([]vm.Drive{{Path: diskPath, Snapshot: true}}, extra...),
		TPM:    tpm,
	})
}

const bootTimeout = 4 * time.Minute

// failureRE matches what means the node will not reach its shell.
var failureRE = regexp.MustCompile(`Access Denied|osguard-init: \[[ 0-9.]+s\] FATAL[^\n]*|Kernel panic[^\n]*`)

// shell waits for the root shell of the booted node, and quiets the kernel
// on the console so that command output stays readable (see shellLoud).
func shell(t *testing.T, m *vm.Machine) {
	t.Helper()
	shellLoud(t, m)
	if _, err := m.Run("dmesg -n 1", time.Minute); err != nil {
		t.Fatal(err)
	}
}

// shellLoud waits for the root shell and leaves the kernel's console
// messages on, for tests whose evidence is what the kernel prints.
func shellLoud(t *testing.T, m *vm.Machine) {
	t.Helper()
	if _, err := m.WaitForText(vm.ShellPrompt, 0, bootTimeout); err != nil {
		if f := failureRE.FindString(m.Console()); f != "" {
			t.Fatalf("the node did not boot: %s", f)
		}
		t.Fatal(err)
	}
}

// partition returns the GPT entry of the named partition of a disk file.
func partition(t *testing.T, diskPath, name string) bootinit.GPTEntry {
	t.Helper()
	for _, e := range partitionsOf(t, diskPath) {
		if e.Name == name {
			return e
		}
	}
	t.Fatalf("%s: no partition %q", diskPath, name)
	return bootinit.GPTEntry{}
}

func writeAt(t *testing.T, path string, off int64, data []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, off); err != nil {
		t.Fatal(err)
	}
}

// TestNodeGuarantees boots the default image once and checks the positive
// guarantees, then attacks 1, 4, 5 and 8 of the suite, in that order.
func TestNodeGuarantees(t *testing.T) {
	f := getFixture(t)

	// Payload disk: an unsigned policy and one signed by a key not in db.
	other := filepath.Join(t.TempDir(), "other-keys")
	if err := secureboot.GenerateKeys(other, secureboot.KeygenOptions{SubjectPrefix: "attacker", Time: time.Unix(testEpoch, 0)}); err != nil {
		t.Fatal(err)
	}
	oh, err := secureboot.LoadHierarchy(other)
	if err != nil {
		t.Fatal(err)
	}
	evil := ipe.Generate(ipe.GenerateOptions{Name: "attacker", Version: "9.0.0", AllowRootHashes: nil})
	evilSigned, err := ipe.Sign(evil, oh.DB.Key, oh.DB.Cert)
	if err != nil {
		t.Fatal(err)
	}
	payload := filepath.Join(t.TempDir(), "payload.raw")
	pb := make([]byte, 128<<10)
	copy(pb, evil)
	copy(pb[64<<10:], evilSigned)
	if err := os.WriteFile(payload, pb, 0o644); err != nil {
		t.Fatal(err)
	}

	m := f.boot(t, f.out+"/"+image.DiskFile, true, vm.Drive{Path: payload, ReadOnly: true})
	shell(t, m)

	t.Run("status", func(t *testing.T) {
		// The node is intact, but its shell on the serial console is a
		// debug console: status fails that one check, and only that one.
		out, err := m.Run("osguard status --json", time.Minute)
		var ee *vm.ExitError
		if err != nil && !(errors.As(err, &ee) && ee.Status == "1") {
			t.Fatalf("osguard status: %v", err)
		}
		var st struct {
			OK     bool `json:"ok"`
			Checks []struct {
				Name   string `json:"name"`
				OK     bool   `json:"ok"`
				Detail string `json:"detail"`
			} `json:"checks"`
			Image struct {
				Name, Version, Profile string
			} `json:"image"`
			SecureBoot struct {
				Enabled, SetupMode bool
			} `json:"secureBoot"`
			Usr struct {
				Target   string `json:"target"`
				RootHash string `json:"rootHash"`
				Signed   bool   `json:"signatureVerifiedByKernel"`
				Health   string `json:"health"`
			} `json:"usr"`
			IPE struct {
				Policy  string `json:"policy"`
				Enforce bool   `json:"enforce"`
			} `json:"ipe"`
			PCR11 struct {
				Value string `json:"value"`
			} `json:"pcr11"`
		}
		if err := json.NewDecoder(strings.NewReader(out[strings.Index(out, "{"):])).Decode(&st); err != nil {
			t.Fatalf("status JSON: %v\n%s", err, out)
		}
		if st.OK || err == nil {
			t.Errorf("status ok=%v (exit %v) on a node with a root shell on ttyS0", st.OK, err)
		}
		for _, c := range st.Checks {
			if c.OK != (c.Name != "debug-console") {
				t.Errorf("check %s ok=%v: %s", c.Name, c.OK, c.Detail)
			}
			if c.Name == "debug-console" && !strings.Contains(c.Detail, "on ttyS0") {
				t.Errorf("debug-console: %s; want the shell on ttyS0 named", c.Detail)
			}
		}
		if st.Image.Name != f.m.Image || st.Image.Version != f.m.Version || st.Image.Profile != "default" {
			t.Errorf("image = %+v, want %s %s, profile default", st.Image, f.m.Image, f.m.Version)
		}
		if !st.SecureBoot.Enabled || st.SecureBoot.SetupMode {
			t.Errorf("secureBoot=%+v", st.SecureBoot)
		}
		if st.Usr.Target != "verity" || !st.Usr.Signed || st.Usr.Health != "V" || st.Usr.RootHash != f.m.Usr.RootHash {
			t.Errorf("usr = %+v, want verity with the kernel-checked signature and root hash %s", st.Usr, f.m.Usr.RootHash)
		}
		if st.IPE.Policy != f.m.IPE.PolicyName || !st.IPE.Enforce {
			t.Errorf("ipe = %+v, want %s enforcing", st.IPE, f.m.IPE.PolicyName)
		}
		// In the userland PCR 11 holds the stub's measurements plus the
		// phases osguard-init extended: enter-initrd, then leave-initrd.
		var want string
		for _, ph := range f.m.PCR11.Phases {
			if ph.Phase == "enter-initrd:leave-initrd" {
				want = ph.Hex
			}
		}
		if want == "" || st.PCR11.Value != want {
			t.Errorf("PCR 11 from the TPM %s, measurements.json after leave-initrd %q", st.PCR11.Value, want)
		}
		// The TPM's own sysfs file, read without osguard.
		raw, err := m.Run("cat /sys/class/tpm/tpm0/pcr-sha256/11", time.Minute)
		if err != nil || strings.ToLower(strings.TrimSpace(raw)) != want {
			t.Errorf("sysfs PCR 11 = %q (%v), want %s", raw, err, want)
		}
	})

	t.Run("attack1-write-usr", func(t *testing.T) {
		out, err := m.Run("touch /usr/x", time.Minute)
		if err == nil || !strings.Contains(out, "Read-only file system") {
			t.Errorf("touch /usr/x: %v %q, want EROFS", err, out)
		}
		out, err = m.Run("mount -o remount,rw /usr", time.Minute)
		if err == nil {
			t.Errorf("remount /usr rw succeeded: %q", out)
		}
	})

	t.Run("attack4-exec-from-tmpfs", func(t *testing.T) {
		out, err := m.Run("mkdir -p /mnt/t && mount -t tmpfs tmpfs /mnt/t && cp /usr/bin/busybox /mnt/t/bb && /mnt/t/bb true", time.Minute)
		if err == nil || !strings.Contains(out, "Permission denied") {
			t.Errorf("exec from a fresh tmpfs: %v %q, want EACCES", err, out)
		}
		audit, _ := m.Run("dmesg | grep 'ipe_op=EXECUTE' | grep '/mnt/t/bb'", time.Minute)
		if !strings.Contains(audit, "enforcing=1") || !strings.Contains(audit, `rule="DEFAULT`) {
			t.Errorf("no IPE audit record for the denied exec: %q", audit)
		}
		// The same binary runs from the verity volume.
		if _, err := m.Run("/usr/bin/busybox true", time.Minute); err != nil {
			t.Errorf("exec from /usr: %v", err)
		}
	})

	t.Run("attack5-foreign-policies", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			off  int
			size int
			want string
		}{
			{"unsigned", 0, len(evil), "Bad message"},
			{"other-key", 64 << 10, len(evilSigned), "Required key not available"},
		} {
			cmd := fmt.Sprintf("dd if=/dev/vdb of=/tmp/p bs=1 skip=%d count=%d 2>/dev/null && cat /tmp/p > /sys/kernel/security/ipe/new_policy", tc.off, tc.size)
			out, err := m.Run(cmd, time.Minute)
			if err == nil || !strings.Contains(out, tc.want) {
				t.Errorf("%s policy: %v %q, want %q", tc.name, err, out, tc.want)
			}
		}
		if out, _ := m.Run("ls /sys/kernel/security/ipe/policies", time.Minute); strings.Contains(out, "attacker") {
			t.Errorf("a foreign policy was loaded: %q", out)
		}
	})

	t.Run("attack8-dm-linear", func(t *testing.T) {
		table, err := m.Run("osguard dm table usr", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		// 0 LEN verity 1 DATA HASH ...
		fl := strings.Fields(table[strings.Index(table, "0 "):])
		if len(fl) < 5 || fl[2] != "verity" {
			t.Fatalf("table %q", table)
		}
		linear := fmt.Sprintf("0 %s linear %s 0", fl[1], fl[4])
		out, err := m.Run(fmt.Sprintf("osguard dm reload usr %q", linear), time.Minute)
		t.Logf("the kernel's answer to reloading /usr as dm-linear: err=%v %q", err, strings.TrimSpace(out))
		after, _ := m.Run("osguard dm table usr", time.Minute)
		if strings.Contains(after, "linear") {
			t.Logf("the kernel allowed it: /usr is now %q", strings.TrimSpace(after))
		}
		st, err := m.Run("osguard status", time.Minute)
		if strings.Contains(after, "linear") {
			if err == nil || !strings.Contains(st, "no longer verified") {
				t.Errorf("osguard status after the reload: %v\n%s\nwant a failure naming the lost verity", err, st)
			}
		} else {
			why, _ := m.Run("dmesg | grep 'device-mapper: ioctl' | tail -1", time.Minute)
			t.Logf("the kernel refused it: %s", strings.TrimSpace(why))
			if !strings.Contains(after, "verity") {
				t.Errorf("table after the refused reload: %q", after)
			}
			if !regexp.MustCompile(`(?m)^ok +usr-verity`).MatchString(st) {
				t.Errorf("the reload was refused, but status fails usr-verity: %v\n%s", err, st)
			}
		}
	})
}

// findChunk returns the offset of a chunk of needle in haystack, searching
// from base.
func findChunk(t *testing.T, haystack, needle []byte) int64 {
	t.Helper()
	i := bytes.Index(haystack, needle)
	if i < 0 {
		t.Fatal("chunk not found")
	}
	return int64(i)
}

// TestFlippedUsrByte is attack 2: one byte flipped in the usr partition.
func TestFlippedUsrByte(t *testing.T) {
	f := getFixture(t)
	d := diskCopy(t, filepath.Join(f.out, image.DiskFile))
	usr := partition(t, d, "usr-A")
	bin, err := os.ReadFile(filepath.Join(f.bins, "osguard"))
	if err != nil {
		t.Fatal(err)
	}
	img, err := os.ReadFile(d)
	if err != nil {
		t.Fatal(err)
	}
	start, end := int64(usr.FirstLBA)*512, int64(usr.LastLBA+1)*512
	needle := bin[len(bin)/2 : len(bin)/2+64]
	off := start + findChunk(t, img[start:end], needle)
	writeAt(t, d, off+10, []byte{img[off+10] ^ 0xff})

	m := f.boot(t, d, false)
	shellLoud(t, m)
	out, err := m.Run("cat /usr/bin/osguard > /dev/null; echo rc=$?", 2*time.Minute)
	c := m.Console()
	switch {
	case strings.Contains(out, "rc=0"):
		t.Fatalf("the corrupted file was read without an error: %q", out)
	case !strings.Contains(c, "is corrupted"):
		t.Fatalf("no dm-verity corruption report on the console (err %v, out %q)", err, out)
	}
	// restart_on_corruption: the kernel restarts, and QEMU (-no-reboot) exits.
	if err := m.Wait(2 * time.Minute); err != nil && !strings.Contains(out, "Input/output error") {
		t.Errorf("neither a restart nor an I/O error: %v %q", err, out)
	}
	t.Logf("kernel: %s", regexp.MustCompile(`device-mapper: verity: [^\n]*corrupted[^\n]*`).FindString(c))
}

// TestForeignVeritySignature is attack 3: usr-verity-sig signed by a key
// that is not in db.
func TestForeignVeritySignature(t *testing.T) {
	f := getFixture(t)
	d := diskCopy(t, filepath.Join(f.out, image.DiskFile))
	other := filepath.Join(t.TempDir(), "other-keys")
	if err := secureboot.GenerateKeys(other, secureboot.KeygenOptions{SubjectPrefix: "attacker", Time: time.Unix(testEpoch, 0)}); err != nil {
		t.Fatal(err)
	}
	oh, err := secureboot.LoadHierarchy(other)
	if err != nil {
		t.Fatal(err)
	}
	root, err := hexDecode(f.m.Usr.RootHash)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := verity.SignRootHash(root, oh.DB.Key, oh.DB.Cert)
	if err != nil {
		t.Fatal(err)
	}
	js, err := verity.NewSignatureJSON(root, sig, oh.DB.Cert).MarshalPadded(16 << 10)
	if err != nil {
		t.Fatal(err)
	}
	p := partition(t, d, "usr-A-verity-sig")
	writeAt(t, d, int64(p.FirstLBA)*512, js)

	m := f.boot(t, d, false)
	if _, err := m.WaitFor(`osguard-init: \[[ 0-9.]+s\] FATAL`, bootTimeout); err != nil {
		t.Fatal(err)
	}
	if err := m.Wait(time.Minute); err != nil {
		t.Errorf("the node did not power off: %v", err)
	}
	c := m.Console()
	if !strings.Contains(c, "ENOKEY") && !strings.Contains(c, "Required key not available") {
		t.Errorf("no ENOKEY from the kernel on the console")
	}
	if strings.Contains(c, "userland ready") {
		t.Error("the userland started")
	}
}

// TestFirmwareRefusesTamperedUKI is attack 6.
func TestFirmwareRefusesTamperedUKI(t *testing.T) {
	f := getFixture(t)
	uki, err := os.ReadFile(filepath.Join(f.out, image.UKIFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		tamper func(uki []byte) []byte
	}{
		{"unsigned", func(u []byte) []byte {
			// Clear the certificate table entry (data directory 4): the
			// firmware then sees an unsigned image.
			peOff := int(u[0x3c]) | int(u[0x3d])<<8
			dd := peOff + 24 + 112 + 4*8 // PE32+ optional header: data directories at 112
			for i := dd; i < dd+8; i++ {
				u[i] = 0
			}
			return u
		}},
		{"cmdline-changed", func(u []byte) []byte {
			i := bytes.Index(u, []byte("panic=-1"))
			if i < 0 {
				t.Fatal("no panic=-1 in the UKI")
			}
			u[i+7] = '2'
			return u
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := diskCopy(t, filepath.Join(f.out, image.DiskFile))
			img, err := os.ReadFile(d)
			if err != nil {
				t.Fatal(err)
			}
			off := findChunk(t, img, uki[:1<<20])
			if !bytes.Equal(img[off:off+int64(len(uki))], uki) {
				t.Skip("the UKI is not contiguous on the ESP") // cannot happen with disk.ESP
			}
			writeAt(t, d, off, tc.tamper(bytes.Clone(uki)))
			m := f.boot(t, d, false)
			if _, err := m.WaitFor(`Access Denied`, bootTimeout); err != nil {
				t.Fatal(err)
			}
			if strings.Contains(m.Console(), "Linux version") {
				t.Error("the kernel started")
			}
		})
	}
}

// TestOtherBuildsUsrhash is attack 7: the UKI of another build (another
// usrhash=) on this disk.
func TestOtherBuildsUsrhash(t *testing.T) {
	f := getFixture(t)
	other := filepath.Join(t.TempDir(), "other")
	if _, err := f.build("", other, func(c *image.Config) { c.Metadata.Version = "2" }); err != nil {
		t.Fatal(err)
	}
	var om image.Measurements
	b, _ := os.ReadFile(filepath.Join(other, image.MeasurementsFile))
	json.Unmarshal(b, &om)
	if om.Usr.RootHash == f.m.Usr.RootHash {
		t.Fatal("the two builds have the same root hash")
	}
	d := diskCopy(t, filepath.Join(f.out, image.DiskFile))
	esp := partition(t, d, "ESP")
	oimg, err := os.ReadFile(filepath.Join(other, image.DiskFile))
	if err != nil {
		t.Fatal(err)
	}
	start, end := int64(esp.FirstLBA)*512, int64(esp.LastLBA+1)*512
	writeAt(t, d, start, oimg[start:end])

	m := f.boot(t, d, false)
	if _, err := m.WaitFor(`no usr partition matches usrhash`, bootTimeout); err != nil {
		t.Fatal(err)
	}
	if err := m.Wait(time.Minute); err != nil {
		t.Errorf("the node did not power off: %v", err)
	}
	if strings.Contains(m.Console(), "userland ready") {
		t.Error("the userland started")
	}
}

// TestReproducible builds the default image a second time and compares.
func TestReproducible(t *testing.T) {
	f := getFixture(t)
	again := filepath.Join(t.TempDir(), "again")
	if _, err := f.build("", again, nil); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{image.DiskFile, image.UKIFile, image.SPDXFile, image.CycloneDXFile, image.MeasurementsFile, image.SignedPolicyFile, image.VarsFile} {
		a, _ := os.ReadFile(filepath.Join(f.out, name))
		b, _ := os.ReadFile(filepath.Join(again, name))
		if len(a) == 0 || sha256.Sum256(a) != sha256.Sum256(b) {
			t.Errorf("%s differs between two builds (%d and %d bytes)", name, len(a), len(b))
		}
	}
}

func hexDecode(s string) ([]byte, error) { return hex.DecodeString(s) }

// TestSELinux builds images with Debian's refpolicy in permissive and in
// enforcing mode and checks that the kernel runs SELinux in that mode with
// the labels file_contexts gives.
func TestSELinux(t *testing.T) {
	f := getFixture(t)
	const policy = "/etc/selinux/default/policy/policy.33"
	const fc = "/etc/selinux/default/contexts/files/file_contexts"
	testutil.NeedFile(t, policy)
	testutil.NeedFile(t, fc)
	matchpathcon := testutil.NeedTool(t, "matchpathcon")[0]
	paths := []string{"/usr/bin/busybox", "/usr/bin/osguard", "/usr/lib/os-release", "/usr/share/factory/etc/passwd"}
	for _, tc := range []struct{ mode, enforce string }{{"permissive", "0"}, {"enforcing", "1"}} {
		t.Run(tc.mode, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			cfg := fmt.Sprintf("apiVersion: osguard.dev/v1alpha1\nkind: Image\nmetadata: {name: selinux-%s}\nspec:\n  cmdline: [console=ttyS0, panic=-1]\n  debugConsole: true\n  selinux: {mode: %s, policy: %s, fileContexts: %s}\n", tc.mode, tc.mode, policy, fc)
			if _, err := f.build(cfg, out, nil); err != nil {
				t.Fatal(err)
			}
			m := vmtest.Start(t, vm.Config{UEFI: true, Vars: filepath.Join(out, image.VarsFile), Drives: []vm.Drive{{Path: filepath.Join(out, image.DiskFile), Snapshot: true}}})
			shell(t, m)
			got, err := m.Run("cat /sys/fs/selinux/enforce", time.Minute)
			if err != nil || strings.TrimSpace(got) != tc.enforce {
				t.Errorf("/sys/fs/selinux/enforce = %q (%v), want %s", got, err, tc.enforce)
			}
			lsm, _ := m.Run("cat /sys/kernel/security/lsm", time.Minute)
			if !strings.Contains(lsm, "selinux") || strings.Contains(lsm, "apparmor") {
				t.Errorf("LSMs %q: want selinux in place of apparmor", lsm)
			}
			for _, p := range paths {
				want, err := exec.Command(matchpathcon, "-n", p).Output()
				if err != nil {
					t.Fatalf("matchpathcon %s: %v", p, err)
				}
				// busybox has no ls -Z; getfattr shows what the kernel returns.
				got, err := m.Run("getfattr -n security.selinux "+p, time.Minute)
				if err != nil || !strings.Contains(got, `security.selinux="`+strings.TrimSpace(string(want))+`"`) {
					t.Errorf("%s: the kernel shows %q (%v), file_contexts gives %q", p, strings.TrimSpace(got), err, strings.TrimSpace(string(want)))
				}
			}
		})
	}
}

// TestBuildFromRootfsDir builds from a directory rootfs with a dpkg status
// file and checks that the SBOMs carry its files and packages.
func TestBuildFromRootfsDir(t *testing.T) {
	f := getFixture(t)
	art := testutil.Artifacts(t)
	root := t.TempDir()
	for _, d := range []string{"usr/bin", "usr/sbin", "etc", "var/lib/dpkg"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	bb, err := os.ReadFile(art.Busybox)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(root, "usr/bin/busybox"), bb, 0o755)
	os.Symlink("../bin/busybox", filepath.Join(root, "usr/sbin/init"))
	os.WriteFile(filepath.Join(root, "etc/hostname"), []byte("dir-rootfs\n"), 0o644)
	status, err := os.ReadFile("../sbom/testdata/status")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(root, "var/lib/dpkg/status"), status, 0o644)
	out := filepath.Join(t.TempDir(), "out")
	cfg := "apiVersion: osguard.dev/v1alpha1\nkind: Image\nmetadata: {name: dir-rootfs}\nspec:\n  rootfs: {path: " + root + "}\n  layout: {slots: 1, varSize: \"0\"}\n"
	res, err := f.build(cfg, out, nil)
	if err != nil {
		t.Fatal(err)
	}
	spdx, _ := os.ReadFile(filepath.Join(out, image.SPDXFile))
	cdx, _ := os.ReadFile(filepath.Join(out, image.CycloneDXFile))
	for _, want := range []string{`"./usr/bin/busybox"`, `"busybox-static"`, `"./usr/bin/osguard"`, `"./usr/share/factory/etc/hostname"`} {
		if !bytes.Contains(spdx, []byte(want)) {
			t.Errorf("SPDX lacks %s", want)
		}
	}
	if !bytes.Contains(cdx, []byte(`pkg:deb/debian/busybox-static@1%3A1.35.0-4+b3?arch=amd64`)) {
		t.Error("CycloneDX lacks the busybox-static purl")
	}
	if err := sbomcheck.Validate(sbomcheck.SPDX23(t), spdx); err != nil {
		t.Errorf("the build's SPDX does not validate: %v", err)
	}
	if err := sbomcheck.Validate(sbomcheck.CycloneDX15(t), cdx); err != nil {
		t.Errorf("the build's CycloneDX does not validate: %v", err)
	}
	if res.Files != 3 {
		t.Errorf("%d files in /usr, want 3 (busybox, osguard, the factory hostname)", res.Files)
	}
	if n := len(partitionsOf(t, filepath.Join(out, image.DiskFile))); n != 4 {
		t.Errorf("%d partitions with slots: 1 and no var, want 4", n)
	}
}

// partitionsOf reads the GPT of a disk file.
func partitionsOf(t *testing.T, diskPath string) []bootinit.GPTEntry {
	return imagetest.Partitions(t, diskPath)
}

// TestFailedBuildLeavesNothing: a build that fails midway leaves the output
// directory as it was.
func TestFailedBuildLeavesNothing(t *testing.T) {
	f := getFixture(t)
	out := t.TempDir()
	marker := filepath.Join(out, "keep-me")
	os.WriteFile(marker, []byte("x"), 0o644)
	cfg := "apiVersion: osguard.dev/v1alpha1\nkind: Image\nspec:\n  selinux: {mode: permissive, policy: /nonexistent/policy.33, fileContexts: /nonexistent/file_contexts}\n"
	if _, err := f.build(cfg, out, nil); err == nil || !strings.Contains(err.Error(), "selinux") {
		t.Fatalf("build error = %v, want a selinux error", err)
	}
	ents, _ := os.ReadDir(out)
	if len(ents) != 1 || ents[0].Name() != "keep-me" {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("output dir after a failed build holds %v, want only keep-me", names)
	}
	fresh := filepath.Join(t.TempDir(), "new")
	if _, err := f.build(cfg, fresh, nil); err == nil {
		t.Fatal("the build did not fail")
	}
	if _, err := os.Stat(fresh); err == nil {
		t.Error("a failed build left a new output directory behind")
	}
}
