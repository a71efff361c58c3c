package erofs_test

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/u-root/u-root/pkg/cpio"
	"github.com/ulikunitz/xz"

	"github.com/osguard/osguard/erofs"
	"github.com/osguard/osguard/internal/testutil"
	"github.com/osguard/osguard/internal/vm"
	"github.com/osguard/osguard/internal/vm/vmtest"
)

// listScript prints one digest of everything busybox sees below the
// current directory: names, types, modes, owners, sizes, mtimes, link
// counts, device numbers, symlink targets and file contents.
const listScript = `find . | LC_ALL=C sort | while read -r f; do
  stat -c '%n %f %u %g %s %Y %y %h %t %T' "$f"
  if [ -L "$f" ]; then readlink "$f"; elif [ -f "$f" ]; then sha256sum "$f"; fi
done | sha256sum`

// TestTargetKernelReadsImage boots the Debian trixie 6.12 kernel (the
// target) with the image as a virtio disk and checks that it sees the same
// tree as the host kernel does through a loop mount, with the same busybox.
func TestTargetKernelReadsImage(t *testing.T) {
	testutil.NeedRoot(t)
	art := testutil.Artifacts(t)
	bb := testutil.NeedTool(t, "busybox")[0]
	if testing.Short() {
		t.Skip("boots a VM")
	}
	src := fixture(t, true)
	// A TCG guest lists 10,000 files slowly; the host tests cover them.
	entries, _ := filepath.Glob(filepath.Join(src, "bigdir", "entry-0[1-9]*"))
	for _, e := range entries {
		os.Remove(e)
	}
	img := buildDir(t, src, erofs.Options{BuildTime: buildTime, UUID: [16]byte{7}})
	mnt := mount(t, img)
	cmd := exec.Command(bb, "sh", "-c", listScript)
	cmd.Dir = mnt
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("host listing: %v", err)
	}
	want := strings.Fields(string(out))[0]

	initrd := filepath.Join(t.TempDir(), "initrd.cpio")
	script := "#!/bin/busybox sh\n/bin/busybox --install -s /bin\nexport PATH=/bin\n" +
		"mount -t proc proc /proc; mount -t devtmpfs dev /dev\n" +
		"insmod /lib/libcrc32c.ko; insmod /lib/virtio_blk.ko; insmod /lib/erofs.ko\n" +
		"mkdir /mnt; mount -t erofs -o ro /dev/vda /mnt && echo MOUNTED\n" +
		"cd /mnt && echo LISTING $(" + listScript + ")\n" +
		"poweroff -f\n"
	bbData, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	recs := []cpio.Record{
		cpio.Directory("bin", 0o755), cpio.Directory("dev", 0o755), cpio.Directory("lib", 0o755),
		cpio.CharDev("dev/console", 0o600, 5, 1), cpio.Directory("proc", 0o755),
		cpio.StaticFile("bin/busybox", string(bbData), 0o755),
		cpio.StaticFile("init", script, 0o755),
	}
	for name, rel := range map[string]string{
		"libcrc32c": "kernel/lib/libcrc32c.ko.xz", "virtio_blk": "kernel/drivers/block/virtio_blk.ko.xz",
		"erofs": "kernel/fs/erofs/erofs.ko.xz",
	} {
		f, err := os.Open(filepath.Join(art.Modules, rel))
		if err != nil {
			t.Fatal(err)
		}
		zr, err := xz.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		ko, err := io.ReadAll(zr)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", rel, err)
		}
		recs = append(recs, cpio.StaticFile("lib/"+name+".ko", string(ko), 0o644))
	}
	vmtest.WriteCPIO(t, initrd, recs)
	m := vmtest.Start(t, vm.Config{
		Kernel: art.Vmlinuz, Initrd: initrd, Append: "console=ttyS0 panic=-1 quiet",
		Drives: []vm.Drive{{Path: img, ReadOnly: true}},
	})
	if _, err := m.WaitFor(`MOUNTED`, 4*time.Minute); err != nil {
		t.Fatalf("guest did not mount the image: %v", err)
	}
	subs, err := m.WaitFor(`LISTING ([0-9a-f]{64})`, 4*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if subs[1] != want {
		t.Errorf("the 6.12 guest sees a different tree: %s, host %s", subs[1], want)
	}
	t.Logf("guest kernel %s and host kernel agree on the tree (%s)", art.KernelVersion, want[:16])
}
