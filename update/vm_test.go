package update_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/osguard/osguard/image"
	"github.com/osguard/osguard/internal/testutil"
	"github.com/osguard/osguard/internal/vm"
	"github.com/osguard/osguard/internal/vm/vmtest"
	"github.com/osguard/osguard/secureboot"
	"github.com/osguard/osguard/update"
)

const testEpoch = 1700000000

// builds holds the images and bundles of the lifecycle test.
type builds struct {
	dir, keys, bins string
	out             map[string]string // version → build directory
	bundle          map[string]string // name → bundle padded for a virtio disk
	meas            map[string]image.Measurements
	// verifier, when set, is the verifier the nodes' TPMs (manufactured
	// with an EK certificate from its CA) and networks reach.
	verifier *verifierProc
}

func buildBins(t testing.TB, dir string) {
	t.Helper()
	for _, c := range []string{"osguard", "osguard-init"} {
		if err := os.WriteFile(filepath.Join(dir, c), vmtest.BuildStatic(t, "github.com/osguard/osguard/cmd/"+c), 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// buildVersion builds the default image at a version, changed by edit
// when not nil, and packs it.
func (b *builds) buildVersion(t *testing.T, version string, edit func(*image.Config)) {
	t.Helper()
	cfg, err := image.LoadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Metadata.Version = version
	if edit != nil {
		edit(cfg)
	}
	out := filepath.Join(b.dir, "v"+version)
	res, err := image.Build(image.BuildOptions{
		Config: cfg, OutDir: out, KeysDir: b.keys, Epoch: testEpoch, ToolVersion: "test",
		InitBinary: filepath.Join(b.bins, "osguard-init"), OsguardBinary: filepath.Join(b.bins, "osguard"),
	})
	if err != nil {
		t.Fatalf("build v%s: %v", version, err)
	}
	b.out[version], b.meas[version] = out, res.Measurements
	bundle := filepath.Join(b.dir, "v"+version+".bundle")
	if _, err := update.PackDir(update.PackOptions{Dir: out, Out: bundle, KeysDir: b.keys}); err != nil {
		t.Fatalf("pack v%s: %v", version, err)
	}
	b.bundle["v"+version] = padded(t, bundle, nil)
}

var tampered int

// padded copies a bundle to a file whose size is a multiple of 512 (a
// virtio disk), optionally changing it first.
func padded(t testing.TB, path string, edit func([]byte)) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(data)
	}
	data = append(data, make([]byte, (512-len(data)%512)%512)...)
	p := path + fmt.Sprintf(".disk%d", len(data))
	if edit != nil {
		p = filepath.Join(filepath.Dir(path), fmt.Sprintf("tampered-%d", tampered))
		tampered++
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// node is the machine under test, across QEMU processes.
type node struct {
	t     testing.TB
	cfg   vm.Config // the machine's, from image.Machine.VMConfig
	m     *vm.Machine
	boots int
}

func (n *node) start() {
	n.t.Helper()
	cfg := n.cfg
	cfg.Dir = n.t.TempDir()
	n.m = vmtest.Start(n.t, cfg)
	n.waitShell(0, false)
}

// waitShell waits for the next boot's userland after console offset from,
// for check-boot's decision when one is expected (it prints "update:
// RESULT" when it changes the result), and for a fresh shell prompt.
func (n *node) waitShell(from int, decision bool) string {
	n.t.Helper()
	if _, err := n.m.WaitForAfter(`osguard: userland ready`, from, 4*time.Minute); err != nil {
		n.t.Fatalf("boot %d: %v", n.boots+1, err)
	}
	if decision {
		if _, err := n.m.WaitForAfter(`(?m)^update: (committed|rolled-back)\r?$`, from, 4*time.Minute); err != nil {
			n.t.Fatalf("boot %d: check-boot decided nothing: %v", n.boots+1, err)
		}
	}
	at := len(n.m.Console())
	n.m.Send("\n")
	if _, err := n.m.WaitForText(vm.ShellPrompt, at, time.Minute); err != nil {
		n.t.Fatalf("boot %d: no shell: %v", n.boots+1, err)
	}
	n.boots++
	return n.m.Console()[from:]
}

// run runs a guest command; status is its exit status.
func (n *node) run(cmd string) (string, int) {
	n.t.Helper()
	out, err := n.m.Run(cmd, 5*time.Minute)
	if ee, ok := err.(*vm.ExitError); ok {
		var st int
		fmt.Sscan(ee.Status, &st)
		return out, st
	}
	if err != nil {
		n.t.Fatalf("%s: %v", cmd, err)
	}
	return out, 0
}

func (n *node) mustRun(cmd string) string {
	n.t.Helper()
	out, st := n.run(cmd)
	if st != 0 {
		n.t.Fatalf("%s: exit status %d:\n%s", cmd, st, out)
	}
	return out
}

// statusJSON is the part of `osguard status --json` the test reads.
type statusJSON struct {
	// OK is true when every check but debug-console holds: the test
	// image has a root shell on its console, which status reports.
	OK     bool `json:"-"`
	Checks []struct {
		Name string `json:"name"`
		OK   bool   `json:"ok"`
	} `json:"checks"`
	Image struct {
		Version, Slot string
	} `json:"image"`
	Update struct {
		LastResult string `json:"lastResult"`
		Reason     string `json:"reason"`
	} `json:"update"`
	PCR11 struct {
		Value, Expected string
	} `json:"pcr11"`
}

func (n *node) status() statusJSON {
	n.t.Helper()
	out, _ := n.run("osguard status --json 2>/dev/null")
	var s statusJSON
	i, j := strings.Index(out, "{"), strings.LastIndex(out, "}")
	if i < 0 || j < i {
		n.t.Fatalf("status --json printed no object:\n%s", out)
	}
	if err := json.Unmarshal([]byte(out[i:j+1]), &s); err != nil {
		n.t.Fatalf("status --json: %v\n%s", err, out)
	}
	s.OK = len(s.Checks) > 0
	for _, c := range s.Checks {
		if !c.OK && c.Name != "debug-console" {
			s.OK = false
		}
	}
	return s
}

// efiU16s reads a UEFI variable of u16 values in the guest (BootCurrent,
// BootOrder, BootNext) as the firmware left it; nil when it is not set.
func (n *node) efiU16s(name string) []uint16 {
	n.t.Helper()
	out, st := n.run("od -An -v -tx1 /sys/firmware/efi/efivars/" + name + "-8be4df61-93ca-11d2-aa0d-00e098032b8c")
	if st != 0 {
		return nil
	}
	var b []byte
	for _, f := range strings.Fields(out) {
		var x byte
		fmt.Sscanf(f, "%x", &x)
		b = append(b, x)
	}
	if len(b) < 4 {
		return nil
	}
	b = b[4:]
	v := make([]uint16, len(b)/2)
	for i := range v {
		v[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return v
}

// snapshot is what a refused apply must leave as it was: the sha256 of
// slot A's partitions (usr-A, usr-A-verity, usr-A-verity-sig), of every
// file on the ESP, and the firmware's boot variables (Boot####, BootOrder,
// BootNext) and the trial marker.
func (n *node) snapshot() string {
	n.t.Helper()
	return n.mustRun(`sha256sum /dev/vda2 /dev/vda3 /dev/vda4
dmesg -n 1; mkdir -p /tmp/esp && mount -t vfat -o ro /dev/vda1 /tmp/esp && (cd /tmp/esp && find . -type f | sort | xargs sha256sum); umount /tmp/esp
cd /sys/firmware/efi/efivars && for v in Boot* OsguardTrial-*; do [ -e "$v" ] && echo "$v $(od -An -v -tx1 "$v" | tr -d ' \n')"; done; cd /`)
}

// watchdogState is the kernel's state of watchdog 0 (softdog):
// "active" or "inactive".
func (n *node) watchdogState() string {
	n.t.Helper()
	return strings.TrimSpace(n.mustRun("cat /sys/class/watchdog/watchdog0/state"))
}

// usrPayloadEnd is the offset just past the usr payload of a bundle.
func usrPayloadEnd(t testing.TB, d []byte) int {
	t.Helper()
	mlen, slen := int(binary.BigEndian.Uint32(d[16:])), int(binary.BigEndian.Uint32(d[20:]))
	m, err := update.ParseManifest(d[24 : 24+mlen])
	if err != nil {
		t.Fatal(err)
	}
	off := 24 + mlen + slen
	for _, p := range m.Payloads {
		off += int(p.Size)
		if p.Name == update.PayloadUsr {
			return off
		}
	}
	t.Fatal("no usr payload")
	return 0
}

// reboot reboots the guest after an apply and waits for the next shell
// and check-boot's decision.
func (n *node) reboot() string {
	n.t.Helper()
	from := len(n.m.Console())
	n.m.Send("sync; reboot -f\n")
	return n.waitShell(from, true)
}

// newBuilds checks the tools of the VM tests and makes the binaries and
// keys the builds share.
func newBuilds(t *testing.T) *builds {
	t.Helper()
	testutil.Artifacts(t)
	testutil.NeedTool(t, "qemu-system-x86_64", "swtpm", "qemu-img", "mkfs.ext4")
	testutil.NeedFile(t, vm.OVMFCode)
	testutil.NeedFile(t, vm.OVMFVars)
	dir := t.TempDir()
	b := &builds{dir: dir, keys: filepath.Join(dir, "keys"), bins: filepath.Join(dir, "bin"),
		out: map[string]string{}, bundle: map[string]string{}, meas: map[string]image.Measurements{}}
	os.MkdirAll(b.bins, 0o755)
	buildBins(t, b.bins)
	if err := secureboot.GenerateKeys(b.keys, secureboot.KeygenOptions{SubjectPrefix: "update-test", Time: time.Unix(testEpoch, 0)}); err != nil {
		t.Fatal(err)
	}
	return b
}

// machine starts a node from build version's disk with the bundles as
// read-only disks (vdb, vdc, ...).
func (b *builds) machine(t *testing.T, version string, bundles ...string) *node {
	t.Helper()
	mach, err := image.PrepareMachine(filepath.Join(b.out[version], image.DiskFile), filepath.Join(b.out[version], image.VarsFile), true)
	if err != nil {
		t.Fatal(err)
	}
	cfg := mach.VMConfig(true)
	for _, p := range bundles {
		cfg.Drives = append(cfg.Drives, vm.Drive{Path: p, ReadOnly: true})
	}
	if v := b.verifier; v != nil {
		if err := vm.ManufactureTPM(mach.TPM, v.caDir); err != nil {
			t.Fatal(err)
		}
		cfg.TPMCA = v.caDir
		cfg.Net = &vm.UserNet{GuestFwd: map[string]string{vm.GuestFwdAddr: v.addr}}
	}
	n := &node{t: t, cfg: cfg}
	n.start()
	return n
}

// TestUpdateLifecycle is issue 14's node: v1 → v2 committed in slot B → v3
// with a missing init rolled back → v1 refused as a downgrade → a tampered
// bundle refused → QEMU killed while v3 is written → v2 boots, a second
// apply succeeds. The firmware's variables and the node's kernel are the
// evidence.
func TestUpdateLifecycle(t *testing.T) {
	t0 := time.Now()
	b := newBuilds(t)
	// Every version has a network driver: the node reaches the verifier.
	withNet := func(c *image.Config) { c.Spec.Kernel.Extra = append(c.Spec.Kernel.Extra, "virtio_net") }
	b.buildVersion(t, "1", withNet)
	b.buildVersion(t, "2", withNet)
	b.buildVersion(t, "3", func(c *image.Config) { withNet(c); c.Spec.Rootfs.Init = "/usr/bin/no-such-init" })
	// A verifier that knows v1 only, as after v1 was rolled out.
	testutil.NeedTool(t, "swtpm_setup", "swtpm_localca")
	b.verifier = startVerifier(t, filepath.Join(b.bins, "osguard"), t.TempDir())
	b.verifier.mustCLI(t, "attest", "policy", "add", filepath.Join(b.out["1"], image.MeasurementsFile))
	raw := strings.TrimSuffix(b.bundle["v3"], filepath.Ext(b.bundle["v3"]))
	// One flipped byte late in the usr payload, 4 KiB before its end:
	// every chunk before it is intact. And one in the manifest.
	var flipped int
	tamperedUsr := padded(t, raw, func(d []byte) {
		flipped = usrPayloadEnd(t, d) - 4096
		d[flipped] ^= 0x40
	})
	tamperedManifest := padded(t, raw, func(d []byte) { d[200] ^= 0x01 })
	truncated := padded(t, raw, func([]byte) {}) // a copy of its own
	if err := os.Truncate(truncated, 16<<20); err != nil {
		t.Fatal(err)
	}
	t.Logf("built and packed v1, v2, v3 in %.1fs", time.Since(t0).Seconds())

	n := b.machine(t, "1", b.bundle["v2"], b.bundle["v3"], b.bundle["v1"], tamperedUsr, tamperedManifest, truncated)
	if s := n.status(); s.Image.Version != "1" || s.Image.Slot != "A" || s.Update.LastResult != "none" || !s.OK {
		t.Fatalf("first boot: %+v", s)
	}
	// softdog is loaded at every boot but armed on trial boots only.
	if st := n.watchdogState(); st != "inactive" {
		t.Errorf("watchdog %q on a boot that is no trial", st)
	}

	// v1 → v2.
	out := n.mustRun("osguard update apply /dev/vdb 2>&1")
	t.Logf("apply v2:\n%s", out)
	if next := n.efiU16s("BootNext"); len(next) != 1 {
		t.Fatalf("BootNext after apply: %v", next)
	}
	entry := n.efiU16s("BootNext")[0]
	order := n.efiU16s("BootOrder")
	if len(order) > 0 && order[0] == entry {
		t.Fatalf("apply put the new slot first in BootOrder %v already", order)
	}
	t1 := time.Now()
	con := n.reboot()
	if !strings.Contains(con, "osguard update: committed") {
		t.Fatalf("v2 was not committed")
	}
	// The trial's watchdog, armed by osguard-init and re-armed by
	// check-boot, is stopped by the commit, as the kernel reports it.
	if !strings.Contains(con, "osguard update: watchdog disarmed") {
		t.Errorf("check-boot did not disarm the trial's watchdog")
	}
	if st := n.watchdogState(); st != "inactive" {
		t.Errorf("watchdog %q after the commit", st)
	}
	t.Logf("v2 trial boot and commit in %.1fs", time.Since(t1).Seconds())
	s := n.status()
	if s.Image.Version != "2" || s.Image.Slot != "B" || s.Update.LastResult != "committed" || !s.OK {
		t.Fatalf("after v2: %+v", s)
	}
	if cur := n.efiU16s("BootCurrent"); len(cur) != 1 || cur[0] != entry {
		t.Errorf("BootCurrent %v, want the new entry %04X", cur, entry)
	}
	if order := n.efiU16s("BootOrder"); len(order) == 0 || order[0] != entry {
		t.Errorf("BootOrder %v does not start with %04X after the commit", order, entry)
	}
	// PCR 11 as the kernel reads it from the TPM equals v2's prediction
	// for the userland (after enter-initrd and leave-initrd).
	pcr := strings.ToLower(strings.TrimSpace(n.mustRun("cat /sys/class/tpm/tpm0/pcr-sha256/11")))
	var want string
	for _, ph := range b.meas["2"].PCR11.Phases {
		if ph.Phase == "enter-initrd:leave-initrd" {
			want = ph.Hex
		}
	}
	if pcr != want || want == "" {
		t.Errorf("PCR 11 %s, v2 predicts %s", pcr, want)
	}

	// The verifier, which knows v1's measurements only, refuses the node
	// that now runs v2; once v2's measurements.json is registered, it
	// accepts it. Its verdict (attest nodes --json) is the evidence.
	n.mustRun("ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0")
	agent := "osguard attest agent --once --verifier http://" + vm.GuestFwdAddr + " 2>&1"
	out, st := n.run(agent)
	t.Logf("agent, v2 not registered (exit %d): %s", st, strings.TrimSpace(out))
	ns := b.verifier.nodes(t)
	t.Logf("verifier: %+v", ns)
	if st == 0 || len(ns) != 1 || ns[0].State != "untrusted" || ns[0].Reason == "" {
		t.Errorf("the verifier did not refuse v2 before its measurements were registered: exit %d, nodes %+v", st, ns)
	}
	b.verifier.mustCLI(t, "attest", "policy", "add", filepath.Join(b.out["2"], image.MeasurementsFile))
	out, st = n.run(agent)
	t.Logf("agent, v2 registered (exit %d): %s", st, strings.TrimSpace(out))
	ns = b.verifier.nodes(t)
	t.Logf("verifier: %+v", ns)
	if st != 0 || len(ns) != 1 || ns[0].State != "trusted" || ns[0].Version != "2" || ns[0].Reason != "" {
		t.Errorf("the verifier did not accept v2 once registered: exit %d, nodes %+v", st, ns)
	}

	// v2 → v3, whose init does not exist: the trial boot fails in
	// osguard-init, which reboots, and the firmware boots v2 again.
	out = n.mustRun("osguard update apply /dev/vdc 2>&1")
	t.Logf("apply v3:\n%s", out)
	t1 = time.Now()
	con = n.reboot()
	for _, w := range []string{"no-such-init", "trial boot of an update: rebooting"} {
		if !strings.Contains(con, w) {
			t.Errorf("console of the failed trial lacks %q", w)
		}
	}
	t.Logf("v3 trial boot, failure and return to v2 in %.1fs", time.Since(t1).Seconds())
	s = n.status()
	if s.Image.Version != "2" || s.Image.Slot != "B" || s.Update.LastResult != "rolled-back" || !strings.Contains(s.Update.Reason, "slot A") ||
		!strings.Contains(s.Update.Reason, "did not reach a healthy userland") {
		t.Fatalf("after v3: %+v", s)
	}
	t.Logf("rolled back: %s", s.Update.Reason)

	// Slot A's partitions, the ESP's files and the firmware's boot
	// variables before the refusals.
	before := n.snapshot()
	// v1: a downgrade.
	out, st = n.run("osguard update apply /dev/vdd 2>&1")
	if st != 1 || !strings.Contains(out, "not newer") {
		t.Errorf("v1 bundle: exit %d:\n%s", st, out)
	}
	// A flipped manifest byte: refused before anything is written.
	out, st = n.run("osguard update apply /dev/vdf 2>&1")
	if st != 1 || !strings.Contains(out, "not signed by a certificate in db") {
		t.Errorf("tampered manifest: exit %d:\n%s", st, out)
	}
	// A truncated bundle: refused before anything is written, because the
	// device is shorter than the signed manifest says.
	out, st = n.run("osguard update apply /dev/vdg 2>&1")
	if st != 1 || !strings.Contains(out, "truncated") {
		t.Errorf("truncated bundle: exit %d:\n%s", st, out)
	}
	// A flipped usr byte late in the payload: the verification pass finds
	// it before anything is written, so the intact chunks before it do not
	// reach slot A either.
	out, st = n.run("osguard update apply /dev/vde 2>&1")
	t.Logf("tampered usr (byte %d of the bundle):\n%s", flipped, out)
	if st != 1 || !regexp.MustCompile(`payload usr: chunk \d+ .* does not match.*nothing was written`).MatchString(out) {
		t.Errorf("tampered usr: exit %d:\n%s", st, out)
	}
	if strings.Contains(out, "cleared /dev/") {
		t.Errorf("apply of the tampered usr began to write:\n%s", out)
	}
	if after := n.snapshot(); after != before {
		t.Errorf("refused bundles changed the node:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if next := n.efiU16s("BootNext"); next != nil {
		t.Errorf("BootNext %v after a refused bundle", next)
	}
	if s := n.status(); s.Image.Version != "2" || s.Update.LastResult != "rolled-back" {
		t.Errorf("after refusals: %+v", s)
	}

	// QEMU dies while v3 is written: the next boot is v2, and the apply
	// can be repeated.
	from := len(n.m.Console())
	n.m.Send("osguard update apply /dev/vdc >/dev/console 2>&1\n")
	if _, err := n.m.WaitForAfter(`cleared /dev/vda4`, from, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	n.m.Close()
	n.start()
	s = n.status()
	if s.Image.Version != "2" || s.Image.Slot != "B" {
		t.Fatalf("after the kill: %+v", s)
	}
	out = n.mustRun("osguard update apply /dev/vdc 2>&1")
	if !strings.Contains(out, "BootNext") {
		t.Errorf("second apply:\n%s", out)
	}
	if next := n.efiU16s("BootNext"); len(next) != 1 {
		t.Errorf("BootNext after the second apply: %v", next)
	}
	t.Logf("whole lifecycle in %.1fs (%d boots)", time.Since(t0).Seconds(), n.boots)
}

// TestUpdateUnhealthyTrial: a trial boot that comes up but is not healthy
// (IPE in audit mode while the build says enforce, so `osguard status`
// fails) is rolled back by check-boot after osguard.update.timeout=, which
// reboots; the firmware then boots the old slot.
func TestUpdateUnhealthyTrial(t *testing.T) {
	b := newBuilds(t)
	b.buildVersion(t, "1", nil)
	b.buildVersion(t, "2", func(c *image.Config) {
		c.Spec.Cmdline = append(c.Spec.Cmdline, "osguard.ipe=audit", "osguard.update.timeout=20s")
	})
	n := b.machine(t, "1", b.bundle["v2"])
	n.mustRun("osguard update apply /dev/vdb 2>&1")
	from := len(n.m.Console())
	n.m.Send("sync; reboot -f\n")
	if _, err := n.m.WaitForAfter(`osguard update: rolling back: slot B \(version 2\) was not healthy within 20s: [^\n]*ipe`, from, 6*time.Minute); err != nil {
		t.Fatalf("the unhealthy trial was not rolled back: %v", err)
	}
	n.waitShell(len(n.m.Console()), false)
	s := n.status()
	if s.Image.Version != "1" || s.Image.Slot != "A" || s.Update.LastResult != "rolled-back" || !strings.Contains(s.Update.Reason, "not healthy within 20s") || !s.OK {
		t.Fatalf("after the unhealthy trial: %+v", s)
	}
	if next := n.efiU16s("BootNext"); next != nil {
		t.Errorf("BootNext %v after the rollback", next)
	}
	t.Logf("rolled back: %s", s.Update.Reason)
}

// TestUpdateHungTrial: a trial userland that hangs before it starts
// check-boot (its init is busybox cat, which reads the console and never
// returns) is reset by the watchdog osguard-init armed for
// osguard.update.timeout plus the margin; BootNext being used up, the
// firmware boots the old slot, whose check-boot records the rollback and
// names the watchdog. The kernel's softdog message and the firmware's
// choice of slot are the evidence.
func TestUpdateHungTrial(t *testing.T) {
	b := newBuilds(t)
	b.buildVersion(t, "1", nil)
	b.buildVersion(t, "2", func(c *image.Config) {
		if err := c.Apply(image.Overrides{Init: "/usr/bin/cat"}); err != nil {
			t.Fatal(err)
		}
		c.Spec.Cmdline = append(c.Spec.Cmdline, "osguard.update.timeout=5s")
	})
	n := b.machine(t, "1", b.bundle["v2"])
	n.mustRun("osguard update apply /dev/vdb 2>&1")
	from := len(n.m.Console())
	n.m.Send("sync; reboot -f\n")
	if _, err := n.m.WaitForAfter(`osguard-init: .*trial boot of an update: watchdog /dev/watchdog \(Software Watchdog\) armed for 35s`, from, 4*time.Minute); err != nil {
		t.Fatalf("the trial boot armed no watchdog: %v", err)
	}
	armed := time.Now()
	if _, err := n.m.WaitForAfter(`osguard-init: .*step 8/8: switch_root to /sysroot, exec /usr/bin/cat`, from, time.Minute); err != nil {
		t.Fatalf("the trial boot did not hand over to its userland: %v", err)
	}
	// The hung userland prints nothing; the kernel's softdog resets the
	// machine when the 35 s are up.
	if _, err := n.m.WaitForAfter(`softdog: Initiating system reboot`, from, 2*time.Minute); err != nil {
		t.Fatalf("the watchdog did not reset the hung trial: %v", err)
	}
	fired := time.Since(armed)
	var evidence []string
	for _, l := range strings.Split(n.m.Console()[from:], "\n") {
		if strings.Contains(l, "watchdog") || strings.Contains(l, "softdog") {
			evidence = append(evidence, strings.TrimSpace(l))
		}
	}
	t.Logf("softdog reset the hung trial %.1fs after osguard-init armed it:\n%s", fired.Seconds(), strings.Join(evidence, "\n"))
	if fired < 30*time.Second {
		t.Errorf("the watchdog fired after %s, before its 35 s", fired)
	}
	con := n.waitShell(len(n.m.Console()), true)
	if !strings.Contains(con, "update: rolled-back") {
		t.Errorf("check-boot on the old slot did not record the rollback")
	}
	s := n.status()
	if s.Image.Version != "1" || s.Image.Slot != "A" || s.Update.LastResult != "rolled-back" ||
		!strings.Contains(s.Update.Reason, "did not start 'osguard update check-boot': the watchdog osguard-init armed for 35s") || !s.OK {
		t.Fatalf("after the hung trial: %+v", s)
	}
	if next := n.efiU16s("BootNext"); next != nil {
		t.Errorf("BootNext %v after the rollback", next)
	}
	// Both markers are gone: the next apply starts clean.
	if out := n.mustRun("ls /sys/firmware/efi/efivars/ | grep -c Osguard || true"); strings.TrimSpace(out) != "0" {
		t.Errorf("markers left in efivarfs: %s", out)
	}
	t.Logf("rolled back: %s", s.Update.Reason)
}

// verifierProc is `osguard attest serve` on the host, driven through the
// CLI as an operator would.
type verifierProc struct {
	osguard, addr, url, tokenFile, caDir string
	log                                  *bytes.Buffer
}

func startVerifier(t *testing.T, osguard, dir string) *verifierProc {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	v := &verifierProc{osguard: osguard, addr: addr, url: "http://" + addr, tokenFile: filepath.Join(dir, "token"),
		caDir: filepath.Join(dir, "tpm-ca"), log: &bytes.Buffer{}}
	// The EK CA is read at each enrollment: it appears when the node's
	// TPM is manufactured.
	cmd := exec.Command(osguard, "attest", "serve", "--listen", addr, "--db", "sqlite:"+filepath.Join(dir, "v.db"),
		"--token-file", v.tokenFile, "--ek-ca", filepath.Join(v.caDir, "issuercert.pem"))
	cmd.Stdout, cmd.Stderr = v.log, v.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		if t.Failed() {
			t.Logf("verifier log:\n%s", v.log.String())
		}
	})
	for i := 0; ; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return v
		}
		if i > 200 {
			t.Fatalf("the verifier did not listen on %s: %s", addr, v.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (v *verifierProc) mustCLI(t *testing.T, args ...string) string {
	t.Helper()
	args = append(args, "--verifier", v.url, "--token-file", v.tokenFile)
	out, err := exec.Command(v.osguard, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("osguard %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// attestedNode is one line of `osguard attest nodes --json`.
type attestedNode struct {
	Node, Image, Version, State, Reason string
}

func (v *verifierProc) nodes(t *testing.T) []attestedNode {
	t.Helper()
	out := v.mustCLI(t, "attest", "nodes", "--json")
	var ns []attestedNode
	if err := json.Unmarshal([]byte(out), &ns); err != nil {
		t.Fatalf("attest nodes --json: %v: %s", err, out)
	}
	return ns
}
