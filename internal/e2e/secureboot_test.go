package e2e

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/u-root/u-root/pkg/cpio"
	"github.com/ulikunitz/xz"

	"github.com/osguard/osguard/disk"
	"github.com/osguard/osguard/internal/artifacts"
	"github.com/osguard/osguard/internal/testutil"
	"github.com/osguard/osguard/internal/vm"
	"github.com/osguard/osguard/internal/vm/vmtest"
	"github.com/osguard/osguard/pcr"
	"github.com/osguard/osguard/secureboot"
)

const bootTimeout = 4 * time.Minute

// guestInitrd builds testdata/guestinit as a static binary and packs it as
// /init in a newc cpio, with efivarfs.ko (decompressed; its appended module
// signature stays valid) and the directories the init mounts on.
func guestInitrd(t *testing.T, a *artifacts.Set) []byte {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "init")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "./testdata/guestinit")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build guest init: %v\n%s", err, out)
	}
	initBin, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	kx, err := os.ReadFile(filepath.Join(a.Modules, "kernel/fs/efivarfs/efivarfs.ko.xz"))
	if err != nil {
		t.Fatal(err)
	}
	xr, err := xz.NewReader(bytes.NewReader(kx))
	if err != nil {
		t.Fatal(err)
	}
	var ko bytes.Buffer
	if _, err := ko.ReadFrom(xr); err != nil {
		t.Fatalf("decompress efivarfs.ko: %v", err)
	}
	var out bytes.Buffer
	w := cpio.Newc.Writer(&out)
	recs := []cpio.Record{
		cpio.Directory("dev", 0o755),
		cpio.CharDev("dev/console", 0o600, 5, 1),
		cpio.Directory("proc", 0o755),
		cpio.Directory("sys", 0o755),
		cpio.StaticFile("init", string(initBin), 0o755),
		cpio.StaticFile("efivarfs.ko", ko.String(), 0o644),
	}
	for _, r := range recs {
		r.MTime = 0
		if err := w.WriteRecord(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := cpio.WriteTrailer(w); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// buildOsguard compiles cmd/osguard into a temp dir.
func buildOsguard(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "osguard")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/osguard").CombinedOutput(); err != nil {
		t.Fatalf("build osguard: %v\n%s", err, out)
	}
	return bin
}

func run(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := exec.Command(bin, args...).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, stderr)
	}
	return string(out)
}

// espDisk writes a GPT disk whose ESP holds img as \EFI\BOOT\BOOTX64.EFI.
func espDisk(t *testing.T, img []byte) string {
	t.Helper()
	esp, err := disk.ESP(disk.FATOptions{VolumeID: 0x05EF1A7E, HiddenSectors: 2048},
		disk.File{Path: `\EFI\BOOT\BOOTX64.EFI`, Data: img})
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, err = disk.Build(f, disk.Layout{
		DiskGUID: disk.MustGUID("5e1f0000-0000-4000-8000-000000000001"),
		Partitions: []disk.Partition{{
			TypeGUID: disk.TypeESP, UUID: disk.MustGUID("5e1f0000-0000-4000-8000-000000000002"), Name: "esp",
			Content: bytes.NewReader(esp), ContentSize: int64(len(esp)),
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSecureBootUKI boots UKIs from an ESP disk under OVMF with Secure Boot
// on, the VARS file made by secureboot.WriteVarstore: the db-signed UKI
// boots and measures as predicted; an unsigned one and one signed by a key
// outside db are refused by the firmware.
func TestSecureBootUKI(t *testing.T) {
	a := testutil.Artifacts(t)
	testutil.NeedFile(t, vm.OVMFVars)

	keyDir := filepath.Join(t.TempDir(), "keys")
	if err := secureboot.GenerateKeys(keyDir, secureboot.KeygenOptions{SubjectPrefix: "osguard e2e"}); err != nil {
		t.Fatal(err)
	}
	h, err := secureboot.LoadHierarchy(keyDir)
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := os.ReadFile(vm.OVMFVars)
	if err != nil {
		t.Fatal(err)
	}
	var vars bytes.Buffer
	if err := secureboot.WriteVarstore(tmpl, h, &vars); err != nil {
		t.Fatal(err)
	}
	varsPath := filepath.Join(t.TempDir(), "OVMF_VARS_4M.osguard.fd")
	if err := os.WriteFile(varsPath, vars.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}

	// The UKIs come from the CLI, as a user builds them.
	osguard := buildOsguard(t)
	work := t.TempDir()
	initrd := filepath.Join(work, "initrd.cpio")
	osrel := filepath.Join(work, "os-release")
	if err := os.WriteFile(initrd, guestInitrd(t, a), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(osrel, []byte("ID=osguard\nNAME=osguard e2e\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ukiBuild := func(name string, signer string) []byte {
		out := filepath.Join(work, name+".efi")
		args := []string{"uki", "build", "--stub", a.SystemdStub, "--linux", a.Vmlinuz, "--initrd", initrd,
			"--cmdline", "console=ttyS0 panic=-1 quiet loglevel=4", "--os-release", osrel, "--uname", a.KernelVersion, "-o", out}
		if signer != "" {
			args = append(args, "--key", filepath.Join(keyDir, signer+".key"), "--cert", filepath.Join(keyDir, signer+".crt"))
		}
		run(t, osguard, args...)
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	unsigned := ukiBuild("unsigned", "")

	t.Run("signed", func(t *testing.T) {
		img := ukiBuild("signed", "db")
		want, err := pcr.PredictUKI(img)
		if err != nil {
			t.Fatal(err)
		}
		// The CLI's first line is the same value.
		first, _, _ := strings.Cut(run(t, osguard, "pcr", "predict", "--uki", filepath.Join(work, "signed.efi")), "\n")
		if first != "pcr11 "+hex.EncodeToString(want.PCR11) {
			t.Errorf("osguard pcr predict: first line %q, PredictUKI %x", first, want.PCR11)
		}
		start := time.Now()
		m := vmtest.Start(t, vm.Config{
			UEFI: true, Vars: varsPath, TPM: true,
			Drives: []vm.Drive{{Path: espDisk(t, img), Interface: "ide", Snapshot: true}},
		})
		if _, err := m.WaitFor(`OSG: done`, bootTimeout); err != nil {
			t.Fatal(err)
		}
		t.Logf("boot to guest checks: %v", time.Since(start).Round(100*time.Millisecond))
		con := strings.ReplaceAll(m.Console(), "\r", "")
		for _, l := range strings.Split(con, "\n") {
			if strings.HasPrefix(l, "OSG: ") {
				t.Log(l)
			}
		}
		for _, fact := range []string{"OSG: SecureBoot=1\n", "OSG: SetupMode=0\n"} {
			if !strings.Contains(con, fact) {
				t.Errorf("guest did not report %q", strings.TrimSpace(fact))
			}
		}
		// .platform: the kernel logs "Loaded X.509 cert '<CN>: <SKID hex>'".
		certLine := fmt.Sprintf("integrity: Loaded X.509 cert '%s: %s'", h.DB.Cert.Subject.CommonName, hex.EncodeToString(h.DB.Cert.SubjectKeyId))
		if !strings.Contains(con, certLine) {
			t.Errorf("guest kernel did not load our db certificate into .platform (want %q)", certLine)
		}
		// db holds the db certificate and the containers certificate
		// (container layer signatures chain to .platform too).
		certLine = fmt.Sprintf("integrity: Loaded X.509 cert '%s: %s'", h.Containers.Cert.Subject.CommonName, hex.EncodeToString(h.Containers.Cert.SubjectKeyId))
		if !strings.Contains(con, certLine) {
			t.Errorf("guest kernel did not load our containers certificate into .platform (want %q)", certLine)
		}
		if !regexp.MustCompile(`OSG: key .* keyring +\.platform: 2\n`).MatchString(con) {
			t.Error("guest /proc/keys does not show .platform holding two keys (db and containers)")
		}
		got := ""
		for _, l := range strings.Split(con, "\n") {
			if v, ok := strings.CutPrefix(l, "OSG: PCR11="); ok {
				got = v
			}
		}
		if got != hex.EncodeToString(want.PCR11) {
			t.Errorf("PCR 11 in the guest = %q, PredictUKI = %x", got, want.PCR11)
		}
		if err := m.Wait(time.Minute); err != nil {
			t.Logf("QEMU exit: %v", err)
		}
	})

	refused := []struct {
		name string
		img  func() []byte
	}{
		{"unsigned", func() []byte { return unsigned }},
		{"signed-by-KEK-not-in-db", func() []byte { return ukiBuild("kek-signed", "KEK") }},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			img := tc.img()
			if tc.name != "unsigned" {
				if err := secureboot.VerifyPE(img, h.KEK.Cert); err != nil {
					t.Fatalf("control: image not validly signed by KEK: %v", err)
				}
			}
			m := vmtest.Start(t, vm.Config{
				UEFI: true, Vars: varsPath,
				Drives: []vm.Drive{{Path: espDisk(t, img), Interface: "ide", Snapshot: true}},
			})
			if _, err := m.WaitForText(`Access Denied`, 0, bootTimeout); err != nil {
				t.Fatal(err)
			}
			if strings.Contains(m.Console(), "OSG:") || strings.Contains(m.Console(), "Linux version") {
				t.Error("the kernel ran although the firmware refused the image")
			}
		})
	}
}
