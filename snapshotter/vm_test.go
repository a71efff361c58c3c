package snapshotter_test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"context"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/osguard/osguard/image"
	"github.com/osguard/osguard/internal/imagetest"
	"github.com/osguard/osguard/internal/ocitest"
	"github.com/osguard/osguard/internal/registrytest"
	"github.com/osguard/osguard/internal/testutil"
	"github.com/osguard/osguard/internal/vm"
	"github.com/osguard/osguard/internal/vm/vmtest"
	"github.com/osguard/osguard/layersig"
	"github.com/osguard/osguard/oci"
	"github.com/osguard/osguard/registry"
)

// Images of the signed-container tests, all in one OCI archive.
const (
	refGood     = "localhost/osguard-test/good:1"     // signed with the containers key (in db)
	refUnsigned = "localhost/osguard-test/unsigned:1" // no signature
	refForeign  = "localhost/osguard-test/foreign:1"  // signed by a key db does not hold
	refSwapped  = "localhost/osguard-test/swapped:1"  // good's signatures on a changed top layer
	refPulled   = "localhost/osguard-test/pulled:1"   // signed, pushed to the registry, pulled by the node
	refShare    = "localhost/osguard-test/share:1"    // signed, good's base layer under another top
)

// markedLayers is the sample's two layers plus a file that makes the base
// layer of each test image distinct, so that no image borrows another's
// already verified layer.
func markedLayers(t testing.TB, mark string, top []ocitest.Entry) [][]ocitest.Entry {
	base := append(ocitest.BaseLayer(t), ocitest.Entry{Name: "etc/image", Body: []byte(mark + "\n")})
	return [][]ocitest.Entry{base, top}
}

// signedArchive makes the test images and returns the path of their OCI
// archive.
func signedArchive(t testing.TB, b *imagetest.Builder) (string, map[string]*ocitest.Sample, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "layout")
	osguard := filepath.Join(b.Bins, "osguard")
	sign := func(ref, key, cert string) {
		t.Helper()
		cmd := exec.Command(osguard, "image", "sign", "--key", key, "--cert", cert, dir+":"+ref)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("osguard image sign %s: %v\n%s", ref, err, out)
		}
	}
	good := ocitest.SampleLayout(t, dir, ocitest.LayoutOptions{Ref: refGood, Compression: ocitest.Gzip, Layers: markedLayers(t, "good", ocitest.TopLayer())})
	sign(refGood, filepath.Join(b.Keys, "containers.key"), filepath.Join(b.Keys, "containers.crt"))
	shareTop := []ocitest.Entry{{Name: "share.txt", Body: []byte("another top on a shared base\n")}}
	share := ocitest.SampleLayout(t, dir, ocitest.LayoutOptions{Ref: refShare, Compression: ocitest.Gzip, Layers: markedLayers(t, "good", shareTop)})
	sign(refShare, filepath.Join(b.Keys, "containers.key"), filepath.Join(b.Keys, "containers.crt"))
	ocitest.SampleLayout(t, dir, ocitest.LayoutOptions{Ref: refPulled, Compression: ocitest.Gzip, Layers: markedLayers(t, "pulled", ocitest.TopLayer())})
	sign(refPulled, filepath.Join(b.Keys, "containers.key"), filepath.Join(b.Keys, "containers.crt"))

	ocitest.SampleLayout(t, dir, ocitest.LayoutOptions{Ref: refUnsigned, Compression: ocitest.Zstd, Layers: markedLayers(t, "unsigned", ocitest.TopLayer())})

	fkey, fcert := foreignKey(t)
	ocitest.SampleLayout(t, dir, ocitest.LayoutOptions{Ref: refForeign, Layers: markedLayers(t, "foreign", ocitest.TopLayer())})
	sign(refForeign, fkey, fcert)

	// The swap: an image signed like good, whose top layer is then
	// replaced after signing. The attacker rewrites the (unsigned) digests
	// in the signature document so that the node finds a signature for the
	// new layer; only the kernel's check of the root hash is left to stop it.
	swapTop := append(ocitest.TopLayer(), ocitest.Entry{Name: "bin/payload", Body: []byte("#!/bin/sh\necho swapped\n"), Mode: 0o755})
	ocitest.SampleLayout(t, dir, ocitest.LayoutOptions{Ref: "localhost/osguard-test/swap-source:1", Layers: markedLayers(t, "swapped", ocitest.TopLayer())})
	sign("localhost/osguard-test/swap-source:1", filepath.Join(b.Keys, "containers.key"), filepath.Join(b.Keys, "containers.crt"))
	swapped := ocitest.SampleLayout(t, dir, ocitest.LayoutOptions{Ref: refSwapped, Layers: markedLayers(t, "swapped", swapTop)})
	forgeSignatures(t, dir, "localhost/osguard-test/swap-source:1", swapped)

	archive := filepath.Join(t.TempDir(), "images.tar")
	ocitest.Archive(t, dir, archive)
	return archive, map[string]*ocitest.Sample{refGood: good, refShare: share}, dir
}

// foreignKey writes a self-signed RSA key and certificate that no db holds.
func foreignKey(t testing.TB) (keyPath, certPath string) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "not in db"},
		NotBefore: time.Unix(imagetest.Epoch, 0), NotAfter: time.Unix(imagetest.Epoch, 0).AddDate(20, 0, 0),
		KeyUsage: x509.KeyUsageDigitalSignature, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	p8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keyPath, certPath = filepath.Join(dir, "foreign.key"), filepath.Join(dir, "foreign.crt")
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return keyPath, certPath
}

// forgeSignatures attaches the signature document of ref, with its layer
// digests rewritten to those of target, to target's manifest.
func forgeSignatures(t testing.TB, dir, ref string, target *ocitest.Sample) {
	t.Helper()
	l, err := oci.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	src, err := l.Resolve(ref)
	if err != nil {
		t.Fatal(err)
	}
	refs, err := l.Referrers(src.Digest, layersig.ArtifactType)
	if err != nil || len(refs) != 1 {
		t.Fatalf("referrers of %s: %v %v", ref, refs, err)
	}
	mb, err := l.ReadBlob(refs[0], 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(mb, &m); err != nil {
		t.Fatal(err)
	}
	db, err := l.ReadBlob(m.Layers[0], 1<<22)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := layersig.Parse(strings.NewReader(string(db)))
	if err != nil {
		t.Fatal(err)
	}
	for i := range doc.Layers {
		doc.Layers[i].Digest = target.Layers[i].Digest.String()
		doc.Layers[i].DiffID = target.DiffIDs[i].String()
	}
	b, err := doc.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	blob, err := l.PutBlob(layersig.ArtifactType, b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.AddReferrer(oci.Referrer{Subject: target.Manifest, ArtifactType: layersig.ArtifactType, Blobs: []ocispec.Descriptor{blob}}); err != nil {
		t.Fatal(err)
	}
}

// TestSignedContainers boots a containerhost node twice on one persistent
// disk and runs containers from signed dm-verity layers, then attacks 1-6
// of issue 12. The evidence is what containerd, crun and the kernel say.
func TestSignedContainers(t *testing.T) {
	b := imagetest.Get(t)
	testutil.NeedTool(t, "debugfs", "apt-get")
	out := b.Profile(t, "containerhost-debug", "containerhost", image.Overrides{DebugConsole: true})
	archive, samples, layout := signedArchive(t, b)
	good, share := samples[refGood], samples[refShare]

	// A registry on the host's 127.0.0.1 holds the pulled image with its
	// signature referrer; the node reaches it only through QEMU's forward.
	reg := registrytest.Start(t)
	if _, err := registry.Push(context.Background(), layout, refPulled, reg.Addr+"/osguard-test/pulled:1", registry.Options{}); err != nil {
		t.Fatal(err)
	}

	// A writable copy of the disk: the node must keep /var across boots.
	diskCopy := filepath.Join(t.TempDir(), "disk.img")
	if b, err := exec.Command("cp", "--sparse=always", filepath.Join(out, image.DiskFile), diskCopy).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, b)
	}
	boot := func() (*vm.Machine, func(string) string, func(string) string) {
		node := vmtest.Start(t, vm.Config{
			UEFI: true, Vars: filepath.Join(out, image.VarsFile), TPM: true,
			Drives: []vm.Drive{{Path: diskCopy}, {Path: archive, ReadOnly: true}},
			Net:    &vm.UserNet{GuestFwd: map[string]string{"10.0.2.100:5000": reg.Addr}},
		})
		waitShell(t, node)
		run := func(cmd string) string {
			t.Helper()
			got, err := node.Run(cmd, 4*time.Minute)
			if err != nil {
				t.Fatalf("%s: %v\n%s", cmd, err, got)
			}
			return strings.TrimSpace(got)
		}
		// fail runs a command that must fail and returns its output.
		fail := func(cmd string) string {
			t.Helper()
			got, err := node.Run(cmd+" 2>&1", 4*time.Minute)
			var ee *vm.ExitError
			if !errors.As(err, &ee) {
				t.Fatalf("%s: want a failure, got %v\n%s", cmd, err, got)
			}
			return strings.TrimSpace(got)
		}
		return node, run, fail
	}

	node, run, fail := boot()
	run("systemctl is-system-running --wait >/dev/null || true")
	if got := run("systemctl is-active osguard-snapshotter containerd"); got != "active\nactive" {
		t.Fatalf("osguard-snapshotter, containerd: %q\n%s", got, run("journalctl -b -u osguard-snapshotter --no-pager | tail -20"))
	}

	var goodLayers []string
	t.Run("run-signed", func(t *testing.T) {
		start := time.Now()
		got := run("osguard image import --ref " + refGood + " /dev/vdb")
		t.Logf("osguard image import (2 layers, gzip): %v", time.Since(start).Round(time.Millisecond))
		if !strings.HasSuffix(got, refGood) {
			t.Errorf("import printed %q, want the image name last", got)
		}
		// The kernel's own record of the layers: two verity devices,
		// created with a signature, read-only.
		devs := run("for d in /sys/block/dm-*; do n=$(cat $d/dm/name); case $n in osguard-layer-*) echo $n $(cat $d/ro);; esac; done")
		for _, l := range strings.Split(devs, "\n") {
			if name, ro, ok := strings.Cut(l, " "); ok && ro == "1" {
				goodLayers = append(goodLayers, name)
			}
		}
		if len(goodLayers) != 2 {
			t.Errorf("want 2 read-only osguard-layer verity devices, got:\n%s", devs)
		}
		start = time.Now()
		if got := run("ctr run --rm --snapshotter osguard " + refGood + " c1 /bin/cat /hello.txt"); got != "hello from a signed layer" {
			t.Errorf("container printed %q", got)
		}
		t.Logf("ctr run to exit (signed layers): %v", time.Since(start).Round(time.Millisecond))
		// Whiteout and opaque directory of the top layer, through overlayfs.
		if got := run("ctr run --rm --snapshotter osguard " + refGood + " c2 /bin/sh -c 'ls /opt/old; test -e /etc/motd || echo motd-gone'"); got != "new\nmotd-gone" {
			t.Errorf("whiteouts: %q", got)
		}
	})

	t.Run("pull", func(t *testing.T) {
		run("nic=$(ls /sys/class/net | grep -v '^lo$' | head -1); ip link set $nic up && ip addr add 10.0.2.15/24 dev $nic")
		start := time.Now()
		got := run("osguard image pull --plain-http 10.0.2.100:5000/osguard-test/pulled:1")
		t.Logf("osguard image pull (2 layers, gzip, with the signature referrer): %v", time.Since(start).Round(time.Millisecond))
		if !strings.HasSuffix(got, "10.0.2.100:5000/osguard-test/pulled:1") || !strings.Contains(got, "the kernel accepted its signature") {
			t.Errorf("pull printed:\n%s", got)
		}
		if got := run("ctr run --rm --snapshotter osguard 10.0.2.100:5000/osguard-test/pulled:1 c0 /bin/cat /etc/image"); got != "pulled" {
			t.Errorf("pulled container printed %q", got)
		}
	})

	t.Run("attack1-unsigned", func(t *testing.T) {
		got := fail("osguard image import --ref " + refUnsigned + " /dev/vdb")
		if !regexp.MustCompile(`layer sha256:[0-9a-f]{64} is not signed`).MatchString(got) {
			t.Errorf("import of an unsigned image: %s", got)
		}
		if got := run("ctr images ls -q"); strings.Contains(got, refUnsigned) {
			t.Errorf("the refused image is in containerd: %s", got)
		}
		// containerd's own import, then a run through osguard: containerd
		// asks the snapshotter to unpack, which it refuses.
		run("ctr images import --no-unpack --all-platforms /dev/vdb >/dev/null")
		got = fail("ctr run --rm --snapshotter osguard " + refUnsigned + " c3 /bin/echo STARTED")
		if strings.Contains(got, "STARTED") || !strings.Contains(got, "refusing to unpack layer sha256:") {
			t.Errorf("ctr run of an unsigned image: %s", got)
		}
	})

	t.Run("attack2-foreign-key", func(t *testing.T) {
		got := fail("osguard image import --ref " + refForeign + " /dev/vdb")
		if !strings.Contains(got, "required key not available") { // ENOKEY
			t.Errorf("import of an image signed by a key outside db: %s", got)
		}
		if !regexp.MustCompile(`layer sha256:[0-9a-f]{64}`).MatchString(got) {
			t.Errorf("the error names no layer: %s", got)
		}
		t.Logf("kernel: %s", lastLine(got))
	})

	t.Run("attack3-swapped-layer", func(t *testing.T) {
		got := fail("osguard image import --ref " + refSwapped + " /dev/vdb")
		if !strings.Contains(got, "key was rejected by service") { // EKEYREJECTED
			t.Errorf("import of a layer swapped after signing: %s", got)
		}
		if !strings.Contains(got, "the signature is for root hash") {
			t.Errorf("the error does not say the root hash changed: %s", got)
		}
		if got := run("ls /var/lib/osguard/snapshotter/staging | wc -l"); got != "0" {
			t.Errorf("refused imports left staged layers: %s", run("ls -l /var/lib/osguard/snapshotter/staging"))
		}
	})

	t.Run("attack5-written-binary", func(t *testing.T) {
		// A copy of a signed binary, written into the container's writable
		// layer (ext4 under overlayfs) and onto a tmpfs: IPE judges the real
		// inode, which is on no signed volume. (The container's /dev is a
		// tmpfs without noexec; its /dev/shm has noexec, which would answer
		// before IPE.) Without auditd the kernel
		// prints audit records under printk's rate limit, which permissive
		// SELinux's records can use up: switch the limit off so that every
		// record is kept.
		run("echo 0 > /proc/sys/kernel/printk_ratelimit")
		for _, tc := range []struct{ name, path, dev string }{{"upper", "/bb", "overlay"}, {"tmpfs", "/dev/bb", "tmpfs"}} {
			got, _ := node.Run("ctr run --rm --snapshotter osguard "+refGood+" c5"+tc.name+" /bin/sh -c 'cp /bin/busybox "+tc.path+" && "+tc.path+" echo RAN; echo status $?' 2>&1", 4*time.Minute)
			if strings.Contains(got, "RAN") || !strings.Contains(got, "Permission denied") || !strings.Contains(got, "status 126") {
				t.Errorf("%s: a binary written in a signed container: %s", tc.name, got)
			}
			rec := run(fmt.Sprintf("dmesg | grep 'ipe_op=EXECUTE' | grep 'path=\"%s\" dev=\"%s\"' | tail -1", tc.path, tc.dev))
			if !strings.Contains(rec, "enforcing=1") || !strings.Contains(rec, `rule="DEFAULT action=DENY"`) {
				t.Errorf("%s: no IPE audit record for %s: %q\n%s", tc.name, tc.path, rec, run("dmesg | grep -i 'ipe_op=\\|suppressed' | tail -5"))
			}
		}
	})

	t.Run("attack6-stock-overlayfs", func(t *testing.T) {
		got, _ := node.Run("ctr run --rm --snapshotter overlayfs "+refUnsigned+" c6 /bin/echo STARTED 2>&1", 4*time.Minute)
		if strings.Contains(got, "STARTED") || !strings.Contains(got, "ermission denied") {
			t.Errorf("unsigned image on containerd's overlayfs: %s", got)
		}
		if got := run("dmesg | grep 'ipe_op=EXECUTE' | grep 'action=DENY' | grep -c 'comm=\"crun\"\\|comm=\"runc' || true"); got == "0" {
			t.Errorf("no IPE denial of crun's exec: %s", run("dmesg | grep ipe_op= | tail -5"))
		}
	})

	// Power off, change one converted layer on /var offline, boot again.
	run("sync")
	node.Send("poweroff\n")
	if err := node.Wait(3 * time.Minute); err != nil {
		t.Fatalf("poweroff: %v", err)
	}
	corruptLayer(t, diskCopy, good.DiffIDs[len(good.DiffIDs)-1].Encoded())

	node, run, fail = boot()
	run("systemctl is-system-running --wait >/dev/null || true")
	t.Run("attack4-offline-change", func(t *testing.T) {
		got := fail("ctr run --rm --snapshotter osguard " + refGood + " c7 /bin/cat /hello.txt")
		if strings.Contains(got, "hello from a signed layer") {
			t.Errorf("the changed layer ran: %s", got)
		}
		if k := run("dmesg | grep -i 'verity.*corrupted' | head -3"); k == "" {
			t.Errorf("no dm-verity corruption from the kernel; ctr said: %s", got)
		} else {
			t.Logf("kernel: %s", k)
		}
	})

	t.Run("shared-layers-and-cleanup", func(t *testing.T) {
		// share has good's base layer: the import finds it on the node.
		got := run("osguard image import --ref " + refShare + " /dev/vdb 2>&1")
		if !strings.Contains(got, good.Layers[0].Digest.String()+": already on the node") {
			t.Errorf("import of an image sharing a layer:\n%s", got)
		}
		// Containers whose task never started (attack 4) keep their
		// snapshots, as containerd does; remove them first.
		run("for c in $(ctr containers ls -q); do ctr containers rm $c; done")
		layers := func() string { return run("ls /var/lib/osguard/snapshotter/layers | sort | tr '\\n' ' '") }
		base, shareTop := good.DiffIDs[0].Encoded(), share.DiffIDs[1].Encoded()
		run("ctr images rm --sync " + refGood)
		if got := layers(); !strings.Contains(got, base) || !strings.Contains(got, shareTop) {
			t.Errorf("after removing good, layers %s; want its base, which share uses too", got)
		}
		run("ctr images rm --sync " + refShare)
		if got := layers(); strings.Contains(got, base) || strings.Contains(got, shareTop) {
			t.Errorf("after removing share too, layers %s; want neither the base nor share's top", got)
		}
		t.Logf("snapshotter:\n%s", run("journalctl -b -u osguard-snapshotter --no-pager -o cat | tail -8"))
		run("ctr images rm --sync $(ctr images ls -q)")
		if got := layers(); got != "" {
			t.Errorf("layers left after every image was removed: %s", got)
		}
		if got := run("cat /sys/block/dm-*/dm/name 2>/dev/null | grep -c osguard-layer || true"); got != "0" {
			t.Errorf("verity devices left: %s", got)
		}
		if got := run("grep -c ' /var/lib/osguard/snapshotter/' /proc/mounts || true"); got != "0" {
			t.Errorf("mounts left: %s", got)
		}
	})
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndex(s, "\n")+1:]
}

// corruptLayer flips one byte in every data block of the layer's EROFS
// image but the first (the superblock), in the var partition of the disk
// image: found with debugfs, written to the disk file directly, as an
// attacker with the powered-off disk would.
func corruptLayer(t *testing.T, diskPath, layerHex string) {
	t.Helper()
	off := varOffset(t, diskPath)
	file := "/lib/osguard/snapshotter/layers/" + layerHex + "/layer.img"
	fs := fmt.Sprintf("%s?offset=%d", diskPath, off)
	stat, err := exec.Command("debugfs", "-R", "cat "+strings.TrimSuffix(file, "layer.img")+"layer.json", fs).Output()
	if err != nil {
		t.Fatalf("debugfs cat layer.json: %v", err)
	}
	var rec struct {
		DataBlocks int64 `json:"dataBlocks"`
	}
	if err := json.Unmarshal(stat, &rec); err != nil || rec.DataBlocks == 0 {
		t.Fatalf("layer.json %q: %v", stat, err)
	}
	flipped := 0
	for blk := int64(1); blk < rec.DataBlocks; blk++ {
		b, err := exec.Command("debugfs", "-R", fmt.Sprintf("bmap %s %d", file, blk), fs).Output()
		if err != nil {
			t.Fatalf("debugfs bmap: %v", err)
		}
		phys, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil || phys == 0 {
			continue
		}
		pos := off + phys*4096 + 100
		d, err := os.OpenFile(diskPath, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		var one [1]byte
		d.ReadAt(one[:], pos)
		one[0] ^= 0xff
		d.WriteAt(one[:], pos)
		d.Close()
		flipped++
	}
	if flipped == 0 {
		t.Fatalf("no block of %s found to change", file)
	}
	t.Logf("changed %d of %d data blocks of layer %s offline", flipped, rec.DataBlocks, layerHex[:12])
}

// bootTimeout bounds a TCG boot to the debug shell.
const bootTimeout = 4 * time.Minute

func TestMain(m *testing.M) { imagetest.Main(m) }

// waitShell waits for the node's debug shell and quiets the kernel's
// console messages, which would interleave with command output.
func waitShell(t testing.TB, m *vm.Machine) {
	t.Helper()
	if _, err := m.WaitForText(vm.ShellPrompt, 0, bootTimeout); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Run("dmesg -n 1", time.Minute); err != nil {
		t.Fatal(err)
	}
}

// varOffset is the byte offset of the var partition in a disk image.
func varOffset(t testing.TB, diskPath string) int64 {
	t.Helper()
	for _, e := range imagetest.Partitions(t, diskPath) {
		if e.Name == "var" {
			return int64(e.FirstLBA) * 512
		}
	}
	t.Fatalf("%s: no var partition", diskPath)
	return 0
}
