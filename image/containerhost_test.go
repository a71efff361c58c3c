package image_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/osguard/osguard/image"
	"github.com/osguard/osguard/internal/testutil"
	"github.com/osguard/osguard/internal/vm"
	"github.com/osguard/osguard/internal/vm/vmtest"
)

// buildContainerHost builds the containerhost profile with a debug console
// and the overrides ov into out with the fixture's keys.
func (f *fixture) buildContainerHost(t testing.TB, out string, ov image.Overrides) *image.Result {
	t.Helper()
	testutil.NeedTool(t, "apt-get")
	cfg, err := image.LoadProfile("containerhost")
	if err != nil {
		t.Fatal(err)
	}
	ov.DebugConsole = true
	if err := cfg.Apply(ov); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res, err := image.Build(image.BuildOptions{
		Config: cfg, OutDir: out, KeysDir: f.keys, Epoch: testEpoch, ToolVersion: "test",
		InitBinary: filepath.Join(f.bins, "osguard-init"), OsguardBinary: filepath.Join(f.bins, "osguard"),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("containerhost built in %v: %d files in /usr, EROFS %d bytes", time.Since(start).Round(time.Millisecond), res.Files, res.UsrSize)
	return res
}

// bootContainerHost boots a built node on a snapshot of its disk, plus
// extra drives, waits for its debug shell and returns a function that runs
// a command there and fails the test when it fails.
func bootContainerHost(t *testing.T, out string, extra ...vm.Drive) (*vm.Machine, func(string) string) {
	t.Helper()
	node := vmtest.Start(t, vm.Config{
		UEFI: true, Vars: filepath.Join(out, image.VarsFile), TPM: true,
		Drives: append([]vm.Drive{{Path: filepath.Join(out, image.DiskFile), Snapshot: true}}, extra...),
	})
	shell(t, node)
	run := func(cmd string) string {
		t.Helper()
		got, err := node.Run(cmd, 4*time.Minute)
		if err != nil {
			t.Fatalf("%s: %v\n%s", cmd, err, got)
		}
		return strings.TrimSpace(got)
	}
	return node, run
}

// usrRootfs makes /tmp/b/rootfs, a container rootfs of the node's own
// signed /usr bound read-only: IPE allows its programs, so what a runtime
// or an LSM does on top decides.
const usrRootfs = "mkdir -p /tmp/b/rootfs && cd /tmp/b/rootfs && mkdir -p usr proc dev sys tmp etc run && mount --bind /usr usr && mount -o remount,bind,ro usr && ln -s usr/bin bin && ln -s usr/lib lib && ln -s usr/lib64 lib64 && ln -s usr/sbin sbin"

// fileSum returns the SHA-256 of file p, read through a small buffer: a
// disk.raw is 1.5 GB.
func fileSum(t *testing.T, p string) [32]byte {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return [32]byte(h.Sum(nil))
}

// TestContainerHostBuild: the profile's build is reproducible and its SBOMs
// list the Debian packages with their versions.
func TestContainerHostBuild(t *testing.T) {
	f := getFixture(t)
	a, b := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")
	f.buildContainerHost(t, a, image.Overrides{})
	f.buildContainerHost(t, b, image.Overrides{})
	for _, name := range []string{image.DiskFile, image.UKIFile, image.MeasurementsFile, image.SPDXFile, image.CycloneDXFile} {
		if fileSum(t, filepath.Join(a, name)) != fileSum(t, filepath.Join(b, name)) {
			t.Errorf("%s differs between two builds with the same keys and epoch", name)
		}
	}
	var spdx struct {
		Packages []struct {
			Name        string `json:"name"`
			VersionInfo string `json:"versionInfo"`
		} `json:"packages"`
	}
	data, err := os.ReadFile(filepath.Join(a, image.SPDXFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &spdx); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, p := range spdx.Packages {
		got[p.Name] = p.VersionInfo
	}
	for _, want := range []string{"systemd", "systemd-sysv", "udev", "containerd", "crun", "iproute2", "kmod", "ca-certificates", "libc6", "base-files"} {
		if got[want] == "" {
			t.Errorf("SPDX SBOM lists no version of package %s", want)
		}
	}
	var m image.Measurements
	data, _ = os.ReadFile(filepath.Join(a, image.MeasurementsFile))
	json.Unmarshal(data, &m)
	if m.Profile != "containerhost" || !m.DebugConsole || m.Flavour != "guard" {
		t.Errorf("measurements profile=%q debugConsole=%v flavour=%q", m.Profile, m.DebugConsole, m.Flavour)
	}

	// Without --debug-console nothing puts a shell on the console: the
	// debug unit is absent (the SBOM lists every file of /usr, the factory
	// /etc included), and the measurements say so for 'osguard status'.
	prod := filepath.Join(t.TempDir(), "prod")
	cfg, err := image.LoadProfile("containerhost")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := image.Build(image.BuildOptions{
		Config: cfg, OutDir: prod, KeysDir: f.keys, Epoch: testEpoch, ToolVersion: "test",
		InitBinary: filepath.Join(f.bins, "osguard-init"), OsguardBinary: filepath.Join(f.bins, "osguard"),
	}); err != nil {
		t.Fatal(err)
	}
	for dir, want := range map[string]bool{a: true, prod: false} {
		data, err := os.ReadFile(filepath.Join(dir, image.SPDXFile))
		if err != nil {
			t.Fatal(err)
		}
		if got := bytes.Contains(data, []byte("/usr/share/factory/etc/systemd/system/osguard-debug-shell.service")); got != want {
			t.Errorf("%s: debug shell unit in /usr = %v, want %v", filepath.Base(dir), got, want)
		}
	}
	data, _ = os.ReadFile(filepath.Join(prod, image.MeasurementsFile))
	m = image.Measurements{}
	json.Unmarshal(data, &m)
	if m.DebugConsole {
		t.Error("the production build says it has a debug console")
	}
}

// TestContainerHost boots the containerhost node and asks systemd,
// containerd, the TPM and the kernel what they did.
func TestContainerHost(t *testing.T) {
	f := getFixture(t)
	out := filepath.Join(t.TempDir(), "out")
	f.buildContainerHost(t, out, image.Overrides{})
	var m image.Measurements
	data, _ := os.ReadFile(filepath.Join(out, image.MeasurementsFile))
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	extra := filepath.Join(t.TempDir(), "extra.img")
	marker := bytes.Repeat([]byte("osguard-extra-disk\n"), 1000)
	if err := os.WriteFile(extra, marker, 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	node, run := bootContainerHost(t, out, vm.Drive{Path: extra, ReadOnly: true})

	if got := run("systemctl is-system-running --wait"); !strings.HasSuffix(got, "running") {
		t.Errorf("systemctl is-system-running = %q, want running; failed units:\n%s", got, run("systemctl --failed --no-legend"))
	}
	t.Logf("QEMU start to a running system with containerd: %v", time.Since(start).Round(100*time.Millisecond))
	t.Logf("boot stages:\n%s\n%s", run("systemd-analyze"), run("systemd-analyze blame --no-pager | head -8"))
	if got := run("systemctl --failed --no-legend --plain"); got != "" {
		t.Errorf("failed units: %s", got)
	}
	if got := run("systemctl is-active containerd"); got != "active" {
		t.Errorf("containerd.service is %q", got)
	}
	if got := run("ctr version"); !regexp.MustCompile(`(?s)Server:.*Version: +1\.7\.`).MatchString(got) {
		t.Errorf("ctr version:\n%s", got)
	}

	t.Run("selinux-permissive", func(t *testing.T) {
		// The profile's default: SELinux loaded with Debian's reference
		// policy, permissive, and nothing it would have denied.
		if got := run("cat /sys/fs/selinux/enforce"); got != "0" {
			t.Errorf("/sys/fs/selinux/enforce = %q, want 0", got)
		}
		if got := run("tr -d '\\0' < /proc/1/attr/current"); got != "system_u:system_r:init_t:s0" {
			t.Errorf("PID 1 runs as %q, want init_t", got)
		}
		if got := run(avcDenials); got != "" {
			t.Errorf("AVC denials (permissive) from boot to containerd active:\n%s", got)
		}
	})

	t.Run("systemd-way", func(t *testing.T) {
		// machine-id: made by systemd over the empty factory file.
		if got := run("cat /etc/machine-id"); !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(got) {
			t.Errorf("/etc/machine-id = %q", got)
		}
		// Users from systemd-sysusers, /var on its own ext4 partition.
		if got := run("getent passwd systemd-network messagebus | cut -d: -f1 | sort | tr '\\n' ' '"); got != "messagebus systemd-network" {
			t.Errorf("system users: %q", got)
		}
		if got := run("findmnt -no FSTYPE /var"); got != "ext4" {
			t.Errorf("/var is %q, want ext4", got)
		}
		if got := run("findmnt -no FSTYPE,OPTIONS /usr"); !strings.HasPrefix(got, "erofs ro") {
			t.Errorf("/usr: %q", got)
		}
	})

	t.Run("status", func(t *testing.T) {
		got, err := node.Run("osguard status --json", 2*time.Minute)
		var ee *vm.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatal(err)
		}
		var st struct {
			Checks []struct {
				Name, Detail string
				OK           bool
			} `json:"checks"`
			Image struct{ Name, Version, Profile string } `json:"image"`
			PCR11 struct{ Value string }                  `json:"pcr11"`
		}
		if err := json.NewDecoder(strings.NewReader(got[strings.Index(got, "{"):])).Decode(&st); err != nil {
			t.Fatalf("%v\n%s", err, got)
		}
		for _, c := range st.Checks {
			if c.OK != (c.Name != "debug-console") {
				t.Errorf("check %s ok=%v: %s", c.Name, c.OK, c.Detail)
			}
		}
		if st.Image.Profile != "containerhost" || st.Image.Name != m.Image || st.Image.Version != m.Version {
			t.Errorf("image = %+v", st.Image)
		}
		// systemd-pcrphase has extended sysinit and ready after
		// osguard-init's enter-initrd and leave-initrd.
		var ready string
		for _, ph := range m.PCR11.Phases {
			if strings.HasSuffix(ph.Phase, ":sysinit:ready") {
				ready = ph.Hex
			}
		}
		if ready == "" || st.PCR11.Value != ready {
			t.Errorf("PCR 11 = %s, want the predicted value after the ready phase %s", st.PCR11.Value, ready)
		}
	})

	t.Run("ipe-tmpfs-exec", func(t *testing.T) {
		got, err := node.Run("cp /usr/bin/true /tmp/true && /tmp/true", time.Minute)
		if err == nil || !strings.Contains(got, "Permission denied") {
			t.Errorf("exec of a tmpfs copy: %v %q, want EACCES", err, got)
		}
		if got := run("dmesg | grep 'ipe_op=EXECUTE' | grep '/tmp/true' | tail -1"); !strings.Contains(got, "enforcing=1") {
			t.Errorf("no IPE audit record for /tmp/true: %q", got)
		}
	})

	t.Run("runtime", func(t *testing.T) {
		// A container whose rootfs is the node's own signed /usr, bound
		// read-only: IPE allows its programs, so what the runtime does
		// itself decides.
		run(usrRootfs)
		if got := run("ctr run --rm --rootfs /tmp/b/rootfs c1 /usr/bin/echo hello-from-crun"); !strings.Contains(got, "hello-from-crun") {
			t.Errorf("ctr run with the default runtime: %q", got)
		}
		// runc 1.1 runs a memfd copy of itself; the kernel refuses it.
		got, err := node.Run("ctr run --rm --runc-binary /usr/sbin/runc --rootfs /tmp/b/rootfs c2 /usr/bin/echo hello-from-runc", 2*time.Minute)
		if err == nil || strings.Contains(got, "hello-from-runc") {
			t.Errorf("runc ran under IPE: %v %q", err, got)
		}
		if got := run("dmesg | grep 'ipe_op=EXECUTE' | grep -c 'path=2F6D656D6664' || true"); got == "0" {
			t.Errorf("no IPE denial of runc's memfd exec in dmesg")
		}
		// A binary the container gets from a tmpfs is refused in it too.
		got, err = node.Run("cp /usr/bin/echo /tmp/b/echo2 && ctr run --rm --mount type=bind,src=/tmp/b,dst=/tmp,options=rbind:ro --rootfs /tmp/b/rootfs c3 /tmp/echo2 hi", 2*time.Minute)
		if err == nil || !strings.Contains(got, "Permission denied") {
			t.Errorf("tmpfs binary in a container: %v %q, want EACCES", err, got)
		}
	})

	t.Run("extra-disk", func(t *testing.T) {
		if got := run("head -c 19 /dev/vdb"); got != "osguard-extra-disk" {
			t.Errorf("/dev/vdb begins %q", got)
		}
		if got, err := node.Run("echo x | dd of=/dev/vdb 2>&1", time.Minute); err == nil {
			t.Errorf("writing the read-only extra disk worked: %q", got)
		}
	})
}

// TestContainerHostStandard boots the standard flavour: the same signed
// /usr, AppArmor as the LSM with containerd's default profile, no IPE.
func TestContainerHostStandard(t *testing.T) {
	f := getFixture(t)
	out := filepath.Join(t.TempDir(), "out")
	f.buildContainerHost(t, out, image.Overrides{Flavour: image.FlavourStandard})
	node, run := bootContainerHost(t, out)
	if got := run("systemctl is-system-running --wait"); !strings.HasSuffix(got, "running") {
		t.Errorf("systemctl is-system-running = %q; failed units:\n%s", got, run("systemctl --failed --no-legend"))
	}
	lsm := run("cat /sys/kernel/security/lsm")
	if !strings.Contains(lsm, "apparmor") || strings.Contains(lsm, "ipe") {
		t.Errorf("lsm = %q, want apparmor and no ipe", lsm)
	}
	if got := run("findmnt -no FSTYPE /usr; osguard dm table usr | grep -c root_hash_sig_key_desc"); !strings.HasPrefix(got, "erofs") || !strings.HasSuffix(got, "1") {
		t.Errorf("/usr: %q, want erofs on verity with a signature", got)
	}
	// Without IPE a tmpfs binary runs: the flavours differ there.
	if got := run("cp /usr/bin/echo /tmp/echo2 && /tmp/echo2 ran-from-tmpfs"); got != "ran-from-tmpfs" {
		t.Errorf("tmpfs exec on the standard flavour: %q", got)
	}
	got, err := node.Run("osguard status", 2*time.Minute)
	if err == nil || !regexp.MustCompile(`(?m)^ok +apparmor`).MatchString(got) || regexp.MustCompile(`(?m)^FAIL +[^d]`).MatchString(got) {
		t.Errorf("status on the standard flavour (only debug-console may fail): %v\n%s", err, got)
	}
	// containerd's default AppArmor profile confines the container: its
	// label, and the kernel's refusal of what the profile denies.
	run(usrRootfs)
	// crun runs under Debian's own (unconfined) crun profile, so the
	// container's label is the stack of both.
	if got := run("ctr run --rm --apparmor-default-profile osguard-containerd --rootfs /tmp/b/rootfs c1 /usr/bin/cat /proc/self/attr/current"); !strings.Contains(got, "osguard-containerd") {
		t.Errorf("container's AppArmor label: %q", got)
	}
	// The profile denies even reading /proc/sysrq-trigger, with a deny rule
	// (which AppArmor does not log). Without the profile the kernel opens
	// the file and fails the read (it has no read operation: EIO);
	// with it, AppArmor refuses the open: EACCES.
	got, err = node.Run("ctr run --rm --rootfs /tmp/b/rootfs c2 /usr/bin/cat /proc/sysrq-trigger", 2*time.Minute)
	if err == nil || !strings.Contains(got, "Input/output error") {
		t.Errorf("reading /proc/sysrq-trigger in an unconfined container: %v %q, want EIO", err, got)
	}
	got, err = node.Run("ctr run --rm --apparmor-default-profile osguard-containerd --rootfs /tmp/b/rootfs c3 /usr/bin/cat /proc/sysrq-trigger", 2*time.Minute)
	if err == nil || !strings.Contains(got, "Permission denied") {
		t.Errorf("reading /proc/sysrq-trigger in a confined container: %v %q, want EACCES", err, got)
	}
}
