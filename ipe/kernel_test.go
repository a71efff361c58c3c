package ipe

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/u-root/u-root/pkg/cpio"
	"github.com/ulikunitz/xz"

	"github.com/osguard/osguard/internal/p7"
	"github.com/osguard/osguard/internal/testutil"
	"github.com/osguard/osguard/internal/vm"
	"github.com/osguard/osguard/internal/vm/vmtest"
	"github.com/osguard/osguard/secureboot"
)

// moduleOrder is the load order of the 6.12 cloud kernel's modules this
// test needs (closure from modules.dep, see the prototype README §6).
var moduleOrder = []string{
	"lib/reed_solomon/reed_solomon", "drivers/md/dm-mod", "drivers/md/dm-bufio", "drivers/md/dm-verity",
	"arch/x86/crypto/crc32c-intel", "lib/libcrc32c", "fs/erofs/erofs",
	"drivers/block/virtio_blk",
}

// kmodPath is the module the KMODULE cases load and unload: small, without
// dependencies, not loaded otherwise, and removable.
const kmodPath, kmodName = "lib/ts_kmp", "ts_kmp"

// readModule returns the decompressed module kernel/m.ko.xz of modules.
func readModule(t *testing.T, modules, m string) []byte {
	t.Helper()
	f, err := os.Open(filepath.Join(modules, "kernel", m+".ko.xz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := xz.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var ko bytes.Buffer
	if _, err := ko.ReadFrom(r); err != nil {
		t.Fatalf("decompress %s: %v", m, err)
	}
	return ko.Bytes()
}

// fsverityDigest computes the fs-verity file digest (sha256, 4096-byte
// Merkle tree blocks, no salt) as FS_IOC_MEASURE_VERITY reports it: the
// sha256 of the fsverity_descriptor that holds the Merkle tree root hash.
func fsverityDigest(data []byte) *Digest {
	const bs = 4096
	var root [sha256.Size]byte
	if len(data) > 0 {
		level := data
		for len(level) > bs {
			var next []byte
			for off := 0; off < len(level); off += bs {
				block := make([]byte, bs)
				copy(block, level[off:min(off+bs, len(level))])
				h := sha256.Sum256(block)
				next = append(next, h[:]...)
			}
			level = next
		}
		block := make([]byte, bs)
		copy(block, level)
		root = sha256.Sum256(block)
	}
	desc := make([]byte, 256)
	desc[0], desc[1], desc[2] = 1, 1, 12 // version, FS_VERITY_HASH_ALG_SHA256, log2(block size)
	binary.LittleEndian.PutUint64(desc[8:], uint64(len(data)))
	copy(desc[16:], root[:])
	d := sha256.Sum256(desc)
	return &Digest{Alg: "sha256", Value: d[:]}
}

// guestScript collects the guest's commands and what the host expects.
type guestScript struct {
	lines  []string
	checks map[int]func(t *testing.T, got string)
	files  []cpio.Record
}

func (s *guestScript) add(line string, check func(t *testing.T, got string)) int {
	s.lines = append(s.lines, line)
	n := len(s.lines)
	if check != nil {
		s.checks[n] = check
	}
	return n
}

func (s *guestScript) file(path string, data []byte) string {
	s.files = append(s.files, cpio.StaticFile(strings.TrimPrefix(path, "/"), string(data), 0o644))
	return path
}

// wantErrno checks a load/activate/update result: "OK" for 0, else "ERR <errno>".
func wantErrno(what string, want syscall.Errno) func(*testing.T, string) {
	return func(t *testing.T, got string) {
		exp := "OK"
		if want != 0 {
			exp = fmt.Sprintf("ERR %d", int(want))
		}
		if got != exp {
			t.Errorf("%s: kernel says %q, package ipe says %q", what, describe(got), describe(exp))
		}
	}
}

func describe(r string) string {
	if n, ok := strings.CutPrefix(r, "ERR "); ok {
		if e, err := strconv.Atoi(n); err == nil {
			return r + " (" + syscall.Errno(e).Error() + ")"
		}
	}
	return r
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// TestKernel boots the Debian trixie 6.12 kernel under OVMF with a VARS
// file that enrolls a db certificate made for the test (so it sits in the
// kernel's .platform keyring) and checks, in one boot: every corpus policy is accepted or rejected by new_policy
// exactly as Parse says, with the same errno; executions from the
// initramfs, a signed and an unsigned dm-verity volume and a fresh tmpfs
// are allowed or denied as Evaluate says under several active policies;
// the version rules of activation and update match CanActivate and
// CanUpdate; executions from an ext4 volume (fs-verity with a builtin
// signature checked against .fs-verity, fs-verity unsigned, no fs-verity)
// are judged as Evaluate says under fsverity_digest and fsverity_signature
// rules; and finit_module of a module from the initramfs, a tmpfs and a
// signed fs-verity file succeeds or fails with EACCES as Evaluate(OpKmodule)
// says.
func TestKernel(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU")
	}
	art := testutil.Artifacts(t)
	tools := testutil.NeedTool(t, "qemu-system-x86_64", "mkfs.erofs", "veritysetup", "busybox", "mkfs.ext4")
	busyboxPath := tools[3]
	if out, _ := exec.Command("file", "-L", busyboxPath).Output(); !bytes.Contains(out, []byte("statically linked")) {
		testutil.Missing(t, "%s is not static (install busybox-static)", busyboxPath)
	}
	dir := t.TempDir()

	// Keys made for this test; the VARS file holds PK, KEK and our db, so
	// the kernel loads the db certificate into .platform.
	kdir := filepath.Join(dir, "keys")
	if err := secureboot.GenerateKeys(kdir, secureboot.KeygenOptions{SubjectPrefix: "osguard ipe test"}); err != nil {
		t.Fatal(err)
	}
	h, err := secureboot.LoadHierarchy(kdir)
	if err != nil {
		t.Fatal(err)
	}
	key, cert := h.DB.Key, h.DB.Cert
	testutil.NeedFile(t, vm.OVMFVars)
	tmpl, err := os.ReadFile(vm.OVMFVars)
	if err != nil {
		t.Fatal(err)
	}
	var varstore bytes.Buffer
	if err := secureboot.WriteVarstore(tmpl, h, &varstore); err != nil {
		t.Fatal(err)
	}
	vars := filepath.Join(dir, "vars.fd")
	if err := os.WriteFile(vars, varstore.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}

	// Data volume: EROFS with a static busybox, dm-verity with a separate hash device.
	root := filepath.Join(dir, "root")
	os.MkdirAll(filepath.Join(root, "bin"), 0o755)
	bb, err := os.ReadFile(busyboxPath)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(root, "bin", "busybox"), bb, 0o755)
	data, hashImg := filepath.Join(dir, "data.erofs"), filepath.Join(dir, "hash.img")
	run(t, tools[1], "-U00000000-0000-0000-0000-000000000001", "--all-root", "-T0", data, root)
	vout := run(t, tools[2], "format", data, hashImg)
	field := func(name string) string {
		m := regexp.MustCompile(`(?m)^` + name + `:\s*(\S+)`).FindStringSubmatch(vout)
		if m == nil {
			t.Fatalf("veritysetup output has no %s:\n%s", name, vout)
		}
		return m[1]
	}
	rootHex, salt, blocks := field("Root hash"), field("Salt"), field("Data blocks")
	rootBytes, _ := hex.DecodeString(rootHex)
	rootDigest := &Digest{Alg: "sha256", Value: rootBytes}
	rootSig, err := p7.SignDetached([]byte(rootHex), key, cert)
	if err != nil {
		t.Fatal(err)
	}

	// fs-verity volume: ext4 with the verity feature, holding busybox three
	// times (to get a signed, an unsigned and no fs-verity) and a module;
	// the guest enables fs-verity. The digests and the builtin signatures
	// (PKCS#7 over the fsverity_formatted_digest, checked against the
	// .fs-verity keyring, to which the guest adds our db certificate) are
	// computed here.
	kmodData := readModule(t, art.Modules, kmodPath)
	extRoot := filepath.Join(dir, "ext")
	for _, f := range []struct {
		name string
		data []byte
	}{{"signed/busybox", bb}, {"unsigned/busybox", bb}, {"plain/busybox", bb}, {"kmod/" + kmodName + ".ko", kmodData}} {
		os.MkdirAll(filepath.Dir(filepath.Join(extRoot, f.name)), 0o755)
		if err := os.WriteFile(filepath.Join(extRoot, f.name), f.data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	extImg := filepath.Join(dir, "ext.img")
	run(t, tools[4], "-q", "-F", "-t", "ext4", "-b", "4096", "-O", "verity", "-U", "00000000-0000-0000-0000-000000000002",
		"-E", "root_owner=0:0,hash_seed=00000000-0000-0000-0000-000000000003", "-d", extRoot, extImg, "16M")
	fsvDigest := fsverityDigest(bb)
	kmodDigest := fsverityDigest(kmodData)
	fsvSign := func(d *Digest) []byte {
		fd := append([]byte("FSVerity"), 1, 0, byte(len(d.Value)), 0) // sha256, digest size (le16)
		sig, err := p7.SignDetached(append(fd, d.Value...), key, cert)
		if err != nil {
			t.Fatal(err)
		}
		return sig
	}

	s := &guestScript{checks: map[int]func(*testing.T, string){}}
	// sign signs any text, valid or not, as the corpus needs; signPolicy
	// goes through Sign, the path users take.
	sign := func(text []byte) []byte {
		der, err := p7.SignAttached(text, key, cert)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	signPolicy := func(text []byte) []byte {
		der, err := Sign(text, key, cert)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}

	// 1. The corpus, each policy written once to new_policy (accepted ones
	// have unique names, so EEXIST cannot occur).
	corpus := loadCorpus(t)
	for i, c := range corpus {
		_, perr := Parse(c.text)
		f := s.file(fmt.Sprintf("/corpus/%d.p7s", i), sign(c.text))
		s.add("load "+f, wantErrno("corpus "+c.file, errnoOf(perr)))
	}

	// 2. Evaluation: volumes and a tmpfs, then policies of rising versions.
	s.add("verity vsig /dev/vda /dev/vdb "+blocks+" "+rootHex+" "+salt+" "+s.file("/verity/root.p7s", rootSig), wantErrno("signed verity", 0))
	s.add("verity vnosig /dev/vda /dev/vdb "+blocks+" "+rootHex+" "+salt, wantErrno("unsigned verity", 0))
	s.add("mount /dev/vsig /mnt/sig erofs", wantErrno("mount signed", 0))
	s.add("mount /dev/vnosig /mnt/nosig erofs", wantErrno("mount unsigned", 0))
	s.add("tmpfs /mnt/tmp", wantErrno("tmpfs", 0))
	s.add("copy /bin/busybox /mnt/tmp/busybox", wantErrno("copy", 0))
	s.add("mount /dev/vdc /mnt/ext ext4 rw", wantErrno("mount ext4", 0))
	s.add("fskey "+s.file("/fsverity/db.der", cert.Raw), wantErrno("add db certificate to .fs-verity", 0))
	wantDigest := func(what string, d *Digest) func(*testing.T, string) {
		return func(t *testing.T, got string) {
			if want := "TEXT " + d.String(); got != want {
				t.Errorf("%s: FS_IOC_MEASURE_VERITY %s, computed here %s", what, describe(got), want)
			}
		}
	}
	s.add("fsverity /mnt/ext/signed/busybox "+s.file("/fsverity/busybox.sig", fsvSign(fsvDigest)), wantDigest("signed fs-verity", fsvDigest))
	s.add("fsverity /mnt/ext/unsigned/busybox", wantDigest("unsigned fs-verity", fsvDigest))
	s.add("fsverity /mnt/ext/kmod/"+kmodName+".ko "+s.file("/fsverity/kmod.sig", fsvSign(kmodDigest)), wantDigest("signed fs-verity module", kmodDigest))
	s.add("copy /kmod/"+kmodName+".ko /mnt/tmp/"+kmodName+".ko", wantErrno("copy module", 0))
	locations := []struct {
		name, path string
		facts      Facts
	}{
		{"initramfs", "/bin/busybox", Facts{BootVerified: true}},
		{"signed-verity", "/mnt/sig/bin/busybox", Facts{DMVerityRootHash: rootDigest, DMVeritySignature: true}},
		{"unsigned-verity", "/mnt/nosig/bin/busybox", Facts{DMVerityRootHash: rootDigest}},
		{"tmpfs", "/mnt/tmp/busybox", Facts{}},
		{"fsverity-signed", "/mnt/ext/signed/busybox", Facts{FSVerityDigest: fsvDigest, FSVeritySignature: true}},
		{"fsverity-unsigned", "/mnt/ext/unsigned/busybox", Facts{FSVerityDigest: fsvDigest}},
		{"ext4", "/mnt/ext/plain/busybox", Facts{}},
	}
	kmodLocations := []struct {
		name, path string
		facts      Facts
	}{
		{"initramfs", "/kmod/" + kmodName + ".ko", Facts{BootVerified: true}},
		{"tmpfs", "/mnt/tmp/" + kmodName + ".ko", Facts{}},
		{"fsverity-signed", "/mnt/ext/kmod/" + kmodName + ".ko", Facts{FSVerityDigest: kmodDigest, FSVeritySignature: true}},
	}
	upper := strings.ToUpper(rootHex)
	evalPolicies := []string{
		string(Generate(GenerateOptions{Name: "ev1", Version: "1.0.0"})),
		"policy_name=ev2 policy_version=2.0.0\nDEFAULT action=ALLOW\nDEFAULT op=EXECUTE action=DENY\n" +
			"op=EXECUTE dmverity_roothash=sha256:" + upper + " action=ALLOW\nop=EXECUTE boot_verified=TRUE action=ALLOW\n",
		"policy_name=ev3 policy_version=3.0.0\nDEFAULT action=ALLOW\nop=EXECUTE dmverity_signature=FALSE action=DENY\n",
		"policy_name=ev4 policy_version=4.0.0\nDEFAULT action=DENY\n" +
			"op=EXECUTE boot_verified=FALSE dmverity_signature=FALSE action=ALLOW\n" +
			"op=EXECUTE dmverity_roothash=sha512:" + rootHex + " action=ALLOW\n",
		"policy_name=ev5 policy_version=5.0.0\nDEFAULT action=ALLOW\nop=EXECUTE boot_verified=TRUE action=DENY\n" +
			"op=EXECUTE fsverity_signature=TRUE action=DENY\nop=EXECUTE fsverity_digest=sha256:" + rootHex + " action=DENY\nop=EXECUTE action=ALLOW\n",
		string(Generate(GenerateOptions{Name: "ev6", Version: "6.0.0", AllowRootHashes: []string{"sha256:" + rootHex}, NoSignedDMVerity: true})),
	}
	parsed := map[string]*Policy{}
	type tally struct{ allow, deny int }
	counts := map[Op]*tally{OpExecute: {}, OpKmodule: {}}
	// judge adds one operation on the file at path (EXECUTE: exec it;
	// KMODULE: finit_module it, then unload it) and checks the kernel's
	// verdict and audited rule against Evaluate.
	judge := func(p *Policy, op Op, where, path string, facts Facts) {
		d := p.Evaluate(op, facts)
		want := map[bool]string{true: "ALLOW", false: "DENY"}[d.Allow]
		if d.Allow {
			counts[op].allow++
		} else {
			counts[op].deny++
		}
		what := fmt.Sprintf("%s: %s from %s (Evaluate: line %d %q)", p.Name, op, where, d.Line, d.Rule)
		// The kernel's audit record names the rule that decided,
		// with digests in uppercase hex.
		wantRule := "rule=" + regexp.MustCompile(`:[0-9a-f]+ `).ReplaceAllStringFunc(d.Rule, strings.ToUpper)
		line := "exec " + path + " true"
		if op == OpKmodule {
			line = "kmod " + path + " " + kmodName
		}
		s.add(line, func(t *testing.T, got string) {
			verdict, rule, _ := strings.Cut(got, " ")
			rule = strings.ReplaceAll(rule, `"`, "")
			if verdict != want {
				t.Errorf("%s: kernel %s, Evaluate %s", what, got, want)
			} else if rule != wantRule {
				t.Errorf("%s: kernel audit %s, Evaluate %s", what, rule, wantRule)
			}
		})
	}
	loadActivate := func(text string) *Policy {
		p, err := Parse([]byte(text))
		if err != nil {
			t.Fatalf("eval policy %q: %v", text, err)
		}
		parsed[p.Name] = p
		s.add("load "+s.file(fmt.Sprintf("/eval/%s.p7s", p.Name), signPolicy([]byte(text))), wantErrno("load "+p.Name, 0))
		s.add("activate "+p.Name, wantErrno("activate "+p.Name, 0))
		return p
	}
	for _, text := range evalPolicies {
		p := loadActivate(text)
		for _, loc := range locations {
			judge(p, OpExecute, loc.name, loc.path, loc.facts)
		}
	}

	// 3. Versions: ev6 (6.0.0) is active.
	active := parsed["ev6"]
	for _, name := range []string{"ev1", "ev5"} {
		want := syscall.Errno(0)
		if !CanActivate(active.Version, parsed[name].Version) {
			want = syscall.EINVAL
		}
		s.add("activate "+name, wantErrno("activate lower "+name+" over ev6", want))
	}
	for _, v := range []string{"5.0.0", "6.0.0", "6.0.1"} {
		text := []byte(string(Generate(GenerateOptions{Name: "ev6", Version: v, NoBootVerified: true})))
		next, err := Parse(text)
		if err != nil {
			t.Fatal(err)
		}
		f := s.file("/eval/ev6-"+v+".p7s", signPolicy(text))
		if v == "6.0.1" {
			s.add("load "+f, wantErrno("new_policy with the name of a loaded policy", syscall.EEXIST))
		}
		old := active
		s.add("update ev6 "+f, func(t *testing.T, got string) {
			if ok := CanUpdate(old, next); ok != (got == "OK") {
				t.Errorf("update ev6 %v -> %v: kernel %s, CanUpdate %v", old.Version, next.Version, describe(got), ok)
			}
		})
		if CanUpdate(active, next) {
			active = next
		}
	}
	s.add("cat /sys/kernel/security/ipe/policies/ev6/version", func(t *testing.T, got string) {
		if want := "TEXT " + active.Version.String(); got != want {
			t.Errorf("active ev6 version: kernel %q, want %q", got, want)
		}
	})
	s.add("exec /mnt/sig/bin/busybox true", func(t *testing.T, got string) {
		if d := active.Evaluate(OpExecute, locations[1].facts); strings.HasPrefix(got, "ALLOW") != d.Allow {
			t.Errorf("after update: exec from signed verity: kernel %s, Evaluate %+v", got, d)
		}
	})

	// 4. fs-verity and KMODULE policies, of versions above ev6's.
	fsvHex := hex.EncodeToString(fsvDigest.Value)
	wrong := bytes.Clone(fsvDigest.Value)
	wrong[31] ^= 1
	fsvPolicies := []string{
		"policy_name=fv1 policy_version=7.0.0\nDEFAULT action=ALLOW\nDEFAULT op=EXECUTE action=DENY\n" +
			"op=EXECUTE fsverity_digest=sha256:" + strings.ToUpper(fsvHex) + " action=ALLOW\n",
		"policy_name=fv2 policy_version=7.1.0\nDEFAULT action=DENY\n" +
			"op=EXECUTE fsverity_digest=sha256:" + hex.EncodeToString(wrong) + " action=ALLOW\n" +
			"op=EXECUTE fsverity_digest=sha512:" + fsvHex + " action=ALLOW\n" +
			"op=EXECUTE fsverity_digest=sha256:" + fsvHex[:62] + " action=ALLOW\n" +
			"op=EXECUTE dmverity_roothash=sha256:" + fsvHex + " action=ALLOW\n" +
			"op=EXECUTE boot_verified=TRUE action=ALLOW\n",
		"policy_name=fv3 policy_version=7.2.0\nDEFAULT action=ALLOW\nDEFAULT op=EXECUTE action=DENY\n" +
			"op=EXECUTE fsverity_signature=TRUE action=ALLOW\n",
		"policy_name=fv4 policy_version=7.3.0\nDEFAULT action=ALLOW\nop=EXECUTE fsverity_signature=FALSE action=DENY\n",
		"policy_name=fv5 policy_version=7.4.0\nDEFAULT action=ALLOW\nDEFAULT op=EXECUTE action=DENY\n" +
			"op=EXECUTE fsverity_digest=sha256:" + fsvHex + " fsverity_signature=FALSE action=ALLOW\n" +
			"op=EXECUTE fsverity_signature=TRUE dmverity_signature=TRUE action=ALLOW\n" +
			"op=EXECUTE boot_verified=TRUE fsverity_signature=FALSE action=ALLOW\n" +
			"op=EXECUTE dmverity_signature=FALSE fsverity_signature=FALSE boot_verified=FALSE action=ALLOW\n",
	}
	for _, text := range fsvPolicies {
		p := loadActivate(text)
		for _, loc := range locations {
			judge(p, OpExecute, loc.name, loc.path, loc.facts)
		}
	}
	kmodPolicies := []string{
		"policy_name=km1 policy_version=8.0.0\nDEFAULT action=ALLOW\nDEFAULT op=KMODULE action=DENY\n" +
			"op=KMODULE boot_verified=TRUE action=ALLOW\n",
		"policy_name=km2 policy_version=8.1.0\nDEFAULT action=ALLOW\nop=KMODULE boot_verified=TRUE action=DENY\n",
		"policy_name=km3 policy_version=8.2.0\nDEFAULT action=DENY\nDEFAULT op=EXECUTE action=ALLOW\n" +
			"op=KMODULE boot_verified=FALSE fsverity_signature=FALSE action=ALLOW\n",
		"policy_name=km4 policy_version=8.3.0\nDEFAULT action=ALLOW\nDEFAULT op=KMODULE action=DENY\n" +
			"op=EXECUTE boot_verified=TRUE action=DENY\nop=KMODULE fsverity_signature=TRUE action=ALLOW\n",
		"policy_name=km5 policy_version=8.4.0\nDEFAULT action=DENY\nop=KMODULE fsverity_digest=sha256:" + fsvHex + " action=ALLOW\n" +
			"op=KMODULE fsverity_digest=" + kmodDigest.String() + " action=DENY\nop=KMODULE action=ALLOW\n",
	}
	for _, text := range kmodPolicies {
		p := loadActivate(text)
		for _, loc := range kmodLocations {
			judge(p, OpKmodule, loc.name, loc.path, loc.facts)
		}
	}
	for _, op := range []Op{OpExecute, OpKmodule} {
		t.Logf("evaluation cases %s: %d allow, %d deny", op, counts[op].allow, counts[op].deny)
	}

	s.files = append(s.files, cpio.StaticFile("kmod/"+kmodName+".ko", string(kmodData), 0o644))
	initrd := buildGuestInitramfs(t, art.Modules, dir, bb, s)

	// One boot: db in .platform; run the script.
	start := time.Now()
	m := vmtest.Start(t, vm.Config{UEFI: true, Kernel: art.Vmlinuz, Initrd: initrd, Vars: vars,
		Append: "console=ttyS0 panic=-1 quiet",
		Drives: []vm.Drive{{Path: data, ReadOnly: true}, {Path: hashImg, ReadOnly: true}, {Path: extImg}}})
	if err := m.Wait(4 * time.Minute); err != nil {
		t.Fatalf("test boot: %v\n%s", err, vmtest.Tail(m.Console(), 60))
	}
	t.Logf("test boot: %v", time.Since(start).Round(time.Second))
	con := strings.ReplaceAll(m.Console(), "\r", "")
	if !strings.Contains(con, "osguard ipe test db") { // the key description is "CN: SKI"
		t.Fatalf(".platform does not hold the test db certificate:\n%s", vmtest.Tail(con, 40))
	}
	results := map[int]string{}
	for _, mm := range regexp.MustCompile(`(?m)^IPETEST (\d+) (.*)$`).FindAllStringSubmatch(con, -1) {
		n, _ := strconv.Atoi(mm[1])
		results[n] = mm[2]
	}
	if f := regexp.MustCompile(`(?m)^IPETEST (FATAL|module) .*$`).FindAllString(con, -1); len(f) > 0 {
		t.Errorf("guest: %s", strings.Join(f, "\n"))
	}
	if strings.Contains(con, "failed (-ENOPKG)") || results[1] == fmt.Sprintf("ERR %d", int(syscall.ENOPKG)) {
		t.Fatalf("the kernel cannot verify our PKCS#7 (ENOPKG): internal/p7 must name rsaEncryption, not sha256WithRSAEncryption, as the signer's digestEncryptionAlgorithm")
	}
	accepted := 0
	for n := 1; n <= len(s.lines); n++ {
		got, ok := results[n]
		if !ok {
			t.Errorf("no result for step %d %q", n, s.lines[n-1])
			continue
		}
		if strings.HasPrefix(got, "FAIL") {
			t.Errorf("step %d %q: %s", n, s.lines[n-1], got)
			continue
		}
		if n <= len(corpus) && got == "OK" {
			accepted++
		}
		if c := s.checks[n]; c != nil {
			c(t, got)
		}
	}
	t.Logf("corpus: %d policies, %d accepted and %d rejected by the kernel", len(corpus), accepted, len(corpus)-accepted)
}

// buildGuestInitramfs packs the guest program as /init with busybox, the
// decompressed modules, the db variable, the script and its files.
func buildGuestInitramfs(t *testing.T, modules, dir string, busybox []byte, s *guestScript) string {
	t.Helper()
	bin := filepath.Join(dir, "guest")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "./testdata/guest")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build guest: %v\n%s", err, out)
	}
	initBin, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	recs := []cpio.Record{
		cpio.Directory("dev", 0o755), cpio.CharDev("dev/console", 0o600, 5, 1),
		cpio.Directory("proc", 0o755), cpio.Directory("sys", 0o755), cpio.Directory("mnt", 0o755),
		cpio.Directory("bin", 0o755), cpio.Directory("mod", 0o755),
		cpio.Directory("corpus", 0o755), cpio.Directory("eval", 0o755), cpio.Directory("verity", 0o755),
		cpio.Directory("fsverity", 0o755), cpio.Directory("kmod", 0o755),
		cpio.StaticFile("init", string(initBin), 0o755),
		cpio.StaticFile("bin/busybox", string(busybox), 0o755),
		cpio.StaticFile("script", strings.Join(s.lines, "\n")+"\n", 0o644),
	}
	var order []string
	for _, m := range moduleOrder {
		name := filepath.Base(m)
		recs = append(recs, cpio.StaticFile("mod/"+name+".ko", string(readModule(t, modules, m)), 0o644))
		order = append(order, name)
	}
	recs = append(recs, cpio.StaticFile("mod/order", strings.Join(order, "\n")+"\n", 0o644))
	recs = append(recs, s.files...)
	out := filepath.Join(dir, "initramfs.cpio")
	vmtest.WriteCPIO(t, out, recs)
	return out
}
