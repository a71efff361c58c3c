package erofs_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/osguard/osguard/erofs"
	"github.com/osguard/osguard/internal/testutil"
	"github.com/osguard/osguard/selinux"
)

const buildTime = 1700000000

// fixture makes a tree with every file type and attribute the issue
// lists. Root is needed for devices, ownership and trusted.* xattrs.
func fixture(t *testing.T, withSockets bool) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "src")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	write := func(name string, data []byte, mode os.FileMode) {
		t.Helper()
		p := filepath.Join(dir, name)
		must(os.MkdirAll(filepath.Dir(p), 0o755))
		must(os.WriteFile(p, data, mode))
		must(os.Chmod(p, mode))
	}
	pattern := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*7 + i/4096)
		}
		return b
	}
	must(os.MkdirAll(dir, 0o755))
	write("empty", nil, 0o644)
	write("small", []byte("hello\n"), 0o644)
	write("tail", pattern(4096+1000), 0o755)
	write("block", pattern(8192), 0o600)
	write("multi", pattern(5*4096+4095), 0o644)
	write("nearlyblock", pattern(4090), 0o644) // tail too big to inline
	write("setuid", []byte("#!/bin/sh\n"), 0o4755|os.ModeSetuid)
	must(os.Chmod(filepath.Join(dir, "setuid"), 0o755|os.ModeSetuid))
	write("sgid/file", []byte("x"), 0o644)
	must(os.Chmod(filepath.Join(dir, "sgid"), 0o755|os.ModeSetgid))
	must(os.Mkdir(filepath.Join(dir, "sticky"), 0o755))
	must(os.Chmod(filepath.Join(dir, "sticky"), 0o777|os.ModeSticky))
	// Sparse-looking: a hole in the middle, data at the end.
	f, err := os.Create(filepath.Join(dir, "sparse"))
	must(err)
	_, err = f.WriteAt([]byte("end"), 3<<20)
	must(err)
	must(f.Close())
	// Large directory.
	for i := 0; i < 10000; i++ {
		write(fmt.Sprintf("bigdir/entry-%05d-%s", i, strings.Repeat("x", i%40)), nil, 0o644)
	}
	must(os.Symlink("small", filepath.Join(dir, "link")))
	must(os.Symlink(strings.Repeat("long/", 800)+"target", filepath.Join(dir, "longlink")))
	must(os.Symlink("/nonexistent/abs", filepath.Join(dir, "dangling")))
	must(os.Link(filepath.Join(dir, "tail"), filepath.Join(dir, "sgid/hard1")))
	must(os.Link(filepath.Join(dir, "tail"), filepath.Join(dir, "hard2")))
	must(unix.Mknod(filepath.Join(dir, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(unix.Mknod(filepath.Join(dir, "bigdev"), unix.S_IFCHR|0o600, int(unix.Mkdev(300, 70000))))
	must(unix.Mknod(filepath.Join(dir, "sda"), unix.S_IFBLK|0o660, int(unix.Mkdev(8, 0))))
	must(unix.Mkfifo(filepath.Join(dir, "fifo"), 0o600))
	if withSockets {
		must(unix.Mknod(filepath.Join(dir, "sock"), unix.S_IFSOCK|0o755, 0))
	}
	must(os.Lchown(filepath.Join(dir, "small"), 1000, 1000))
	must(os.Lchown(filepath.Join(dir, "block"), 70000, 80000)) // needs an extended inode
	must(os.Lchown(filepath.Join(dir, "link"), 12, 34))
	must(unix.Lsetxattr(filepath.Join(dir, "small"), "user.comment", []byte("a user xattr"), 0))
	must(unix.Lsetxattr(filepath.Join(dir, "small"), "trusted.overlay.opaque", []byte("y"), 0))
	must(unix.Lsetxattr(filepath.Join(dir, "tail"), "security.capability",
		[]byte{1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 0))
	must(unix.Lsetxattr(filepath.Join(dir, "multi"), "security.selinux", []byte("system_u:object_r:bin_t:s0\x00"), 0))
	must(unix.Lsetxattr(filepath.Join(dir, "sgid"), "user.big", bytes.Repeat([]byte("v"), 3000), 0))
	must(unix.Lsetxattr(filepath.Join(dir, "nearlyblock"), "user.x", bytes.Repeat([]byte("w"), 900), 0))
	// Timestamps: some equal to the build time (compact inodes), some not,
	// one with nanoseconds, one before the epoch.
	times := map[string]unix.Timespec{
		"empty": {Sec: buildTime}, "small": {Sec: 1600000000, Nsec: 123456789}, "tail": {Sec: buildTime},
		"multi": {Sec: 1800000000}, "sparse": {Sec: 86400}, "bigdir": {Sec: buildTime},
	}
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(dir, p)
		ts, ok := times[rel]
		if !ok {
			ts = unix.Timespec{Sec: buildTime}
			if strings.HasPrefix(rel, "s") {
				ts = unix.Timespec{Sec: 1500000000, Nsec: 5}
			}
		}
		must(unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW))
		return nil
	})
	// Directory mtimes last, since creating entries changed them.
	for _, d := range []string{"sgid", "sticky", "bigdir", "."} {
		ts := unix.Timespec{Sec: 1650000000, Nsec: 42}
		must(unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(dir, d), []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW))
	}
	return dir
}

func buildDir(t *testing.T, dir string, opts erofs.Options) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "img.erofs")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n, err := erofs.BuildFromDir(dir, f, opts)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := f.Stat(); fi.Size() != n {
		t.Fatalf("returned size %d, file is %d", n, fi.Size())
	}
	return out
}

func fsck(t *testing.T, img string) {
	t.Helper()
	tool := testutil.NeedTool(t, "fsck.erofs")[0]
	// --extract without a directory decodes every file: a full data check.
	// erofs-utils 1.5 exits 0 on some errors it prints: check both.
	if out, err := exec.Command(tool, "--extract", img).CombinedOutput(); err != nil || bytes.Contains(out, []byte("<E>")) {
		t.Fatalf("fsck.erofs %s: %v\n%s", img, err, out)
	}
}

// TestFsckCatchesCorruption makes sure the oracle can fail: a flipped
// superblock byte breaks the checksum.
func TestFsckCatchesCorruption(t *testing.T) {
	tool := testutil.NeedTool(t, "fsck.erofs")[0]
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644)
	img := buildDir(t, dir, erofs.Options{})
	fsck(t, img)
	b := readAll(t, img)
	b[1024+40]++ // meta_blkaddr
	os.WriteFile(img, b, 0o644)
	if out, err := exec.Command(tool, "--extract", img).CombinedOutput(); err == nil && !bytes.Contains(out, []byte("<E>")) {
		t.Fatalf("fsck.erofs accepted a corrupt superblock:\n%s", out)
	}
}

func mount(t *testing.T, img string) string {
	t.Helper()
	return testutil.MountErofs(t, img)
}

type entry struct {
	mode      uint32
	uid, gid  uint32
	size      int64
	mtime     unix.Timespec
	nlink     uint64
	rdev      uint64
	sum       [32]byte
	target    string
	xattrs    string
	linkGroup string // first path of the hard-link group
}

// scan describes every path below root as lstat and getxattr see it.
func scan(t *testing.T, root string) map[string]entry {
	t.Helper()
	m := map[string]entry{}
	groups := map[uint64]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		e := entry{mode: st.Mode, uid: st.Uid, gid: st.Gid, mtime: st.Mtim, nlink: uint64(st.Nlink), rdev: st.Rdev}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			e.size = st.Size
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			e.sum = sha256.Sum256(b)
			if g, ok := groups[st.Ino]; ok {
				e.linkGroup = g
			} else {
				groups[st.Ino] = rel
				e.linkGroup = rel
			}
		case unix.S_IFLNK:
			e.target, _ = os.Readlink(p)
			e.size = st.Size
		case unix.S_IFDIR:
			e.nlink = uint64(st.Nlink)
		}
		m[rel] = e
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Every xattr as getfattr prints it.
	cmd := exec.Command("getfattr", "-R", "-h", "-d", "-m", "-", "-e", "hex", ".")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("getfattr: %v", err)
	}
	for _, block := range strings.Split(string(out), "\n\n") {
		lines := strings.Split(strings.TrimSpace(block), "\n")
		if len(lines) < 2 || !strings.HasPrefix(lines[0], "# file: ") {
			continue
		}
		rel := filepath.Clean(strings.TrimPrefix(lines[0], "# file: "))
		e := m[rel]
		sort.Strings(lines[1:])
		e.xattrs = strings.Join(lines[1:], "\n")
		m[rel] = e
	}
	return m
}

func compareTrees(t *testing.T, src, img string, allRoot bool) {
	t.Helper()
	a, b := scan(t, src), scan(t, img)
	if len(a) != len(b) {
		t.Errorf("source has %d paths, image %d", len(a), len(b))
	}
	for p, want := range a {
		got, ok := b[p]
		if !ok {
			t.Errorf("%s: missing in image", p)
			continue
		}
		if allRoot {
			want.uid, want.gid = 0, 0
		}
		if p == "." {
			// The mount point's ".." differs; nothing else.
		}
		if want.mode&unix.S_IFMT == unix.S_IFDIR {
			want.size, got.size = 0, 0
		}
		if got != want {
			t.Errorf("%s:\n image  %+v\n source %+v", p, got, want)
		}
	}
	t.Logf("compared %d paths", len(a))
}

func TestDirImageMatchesSource(t *testing.T) {
	testutil.NeedRoot(t)
	testutil.NeedTool(t, "getfattr")
	src := fixture(t, true)
	for _, tc := range []struct {
		name string
		opts erofs.Options
	}{
		{"plain", erofs.Options{BuildTime: buildTime}},
		{"allroot", erofs.Options{BuildTime: buildTime, AllRoot: true, UUID: [16]byte{1, 2, 3}, Label: "usr"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := buildDir(t, src, tc.opts)
			fsck(t, img)
			mnt := mount(t, img)
			compareTrees(t, src, mnt, tc.opts.AllRoot)
		})
	}
}

func TestUUIDAndLabel(t *testing.T) {
	tool := testutil.NeedTool(t, "blkid")[0]
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644)
	uuid := [16]byte{0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88}
	img := buildDir(t, dir, erofs.Options{UUID: uuid, Label: "osguard-usr"})
	fsck(t, img)
	out, err := exec.Command(tool, "-p", "-o", "export", img).Output()
	if err != nil {
		t.Fatalf("blkid: %v", err)
	}
	for _, want := range []string{"UUID=12345678-9abc-def0-1122-334455667788", "LABEL=osguard-usr", "TYPE=erofs"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("blkid output lacks %s:\n%s", want, out)
		}
	}
}

func TestClampMtime(t *testing.T) {
	dir := t.TempDir()
	for name, sec := range map[string]int64{"old": 100, "new": buildTime + 1000} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(name), 0o644)
		ts := unix.Timespec{Sec: sec, Nsec: 7}
		unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, 0)
	}
	img := buildDir(t, dir, erofs.Options{BuildTime: buildTime, ClampMtime: true})
	fsck(t, img)
	mnt := mount(t, img)
	for name, want := range map[string]unix.Timespec{"old": {Sec: 100, Nsec: 7}, "new": {Sec: buildTime}} {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(mnt, name), &st); err != nil {
			t.Fatal(err)
		}
		if st.Mtim != want {
			t.Errorf("%s: mtime %v, want %v", name, st.Mtim, want)
		}
	}
}

func readAll(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestReproducibleAndTar: the same directory twice, and GNU tar of it in
// every compression, plain from a file and from a pipe, give identical
// bytes.
func TestReproducibleAndTar(t *testing.T) {
	testutil.NeedRoot(t)
	gnutar := testutil.NeedTool(t, "tar")[0]
	src := fixture(t, false) // tar cannot hold sockets
	opts := erofs.Options{BuildTime: buildTime, UUID: [16]byte{9}}
	first := readAll(t, buildDir(t, src, opts))
	if second := readAll(t, buildDir(t, src, opts)); !bytes.Equal(first, second) {
		t.Fatal("two builds of the same directory differ")
	}
	tmp := t.TempDir()
	tarPath := filepath.Join(tmp, "src.tar")
	cmd := exec.Command(gnutar, "--format=posix", "--xattrs", "--xattrs-include=*", "--numeric-owner",
		"-C", src, "-cf", tarPath, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, out)
	}
	inputs := map[string]string{"plain": tarPath}
	for name, c := range map[string][]string{"gz": {"gzip", "-k"}, "zst": {"zstd", "-q", "-k"}, "xz": {"xz", "-k", "-T1"}} {
		tool := testutil.NeedTool(t, c[0])[0]
		if out, err := exec.Command(tool, append(c[1:], tarPath)...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", c[0], err, out)
		}
		inputs[name] = tarPath + "." + name
	}
	for name, p := range inputs {
		for _, pipe := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/pipe=%v", name, pipe), func(t *testing.T) {
				f, err := os.Open(p)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				var r io.Reader = f
				if pipe {
					r = struct{ io.Reader }{f} // hides *os.File: the spool path
				}
				out := filepath.Join(t.TempDir(), "tar.erofs")
				w, _ := os.Create(out)
				defer w.Close()
				if _, err := erofs.BuildFromTar(r, w, opts); err != nil {
					t.Fatal(err)
				}
				if got := readAll(t, out); !bytes.Equal(got, first) {
					t.Errorf("image from %s differs from the directory's image", name)
					if name == "plain" && !pipe {
						fsck(t, out)
						compareTrees(t, src, mount(t, out), false)
					}
				}
			})
		}
	}
}

// TestLabels labels a tree mounted at /usr with Debian's refpolicy and
// checks every security.selinux in the mounted image against matchpathcon.
func TestLabels(t *testing.T) {
	testutil.NeedRoot(t)
	mp := testutil.NeedTool(t, "matchpathcon")[0]
	const fc = "/etc/selinux/default/contexts/files/file_contexts"
	testutil.NeedFile(t, fc)
	c, err := selinux.LoadFileContexts(fc)
	if err != nil {
		t.Fatal(err)
	}
	src := fixture(t, true)
	// Paths typical of /usr.
	for _, p := range []string{"bin/ls", "sbin/init", "lib/x86_64-linux-gnu/libc.so.6", "share/doc/x/README",
		"libexec/osguard/helper", "lib/systemd/systemd", "local/bin/tool"} {
		os.MkdirAll(filepath.Join(src, filepath.Dir(p)), 0o755)
		os.WriteFile(filepath.Join(src, p), []byte(p), 0o755)
	}
	img := buildDir(t, src, erofs.Options{BuildTime: buildTime, Labeler: c, MountPoint: "/usr"})
	fsck(t, img)
	mnt := mount(t, img)
	types := map[uint32]string{unix.S_IFREG: "file", unix.S_IFDIR: "dir", unix.S_IFLNK: "lnk_file",
		unix.S_IFCHR: "chr_file", unix.S_IFBLK: "blk_file", unix.S_IFIFO: "pipe", unix.S_IFSOCK: "sock_file"}
	byType := map[string][]string{}
	got := map[string]string{}
	filepath.WalkDir(mnt, func(p string, d fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(mnt, p)
		key := filepath.Join("/usr", rel)
		var st unix.Stat_t
		unix.Lstat(p, &st)
		buf := make([]byte, 256)
		n, err := unix.Lgetxattr(p, "security.selinux", buf)
		if err == nil {
			got[key] = strings.TrimSuffix(string(buf[:n]), "\x00")
		} else {
			got[key] = "<<none>>"
		}
		// matchpathcon resolves paths that exist on this host; leave
		// those to the selinux package's tests.
		if _, err := os.Lstat(key); err == nil {
			return nil
		}
		byType[types[st.Mode&unix.S_IFMT]] = append(byType[types[st.Mode&unix.S_IFMT]], key)
		return nil
	})
	n := 0
	for typ, paths := range byType {
		out, err := exec.Command(mp, append([]string{"-N", "-f", fc, "-m", typ}, paths...)...).Output()
		if err != nil {
			t.Fatalf("matchpathcon: %v", err)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			p, want, _ := strings.Cut(line, "\t")
			if got[p] != want {
				t.Errorf("%s (%s): image has %q, matchpathcon %q", p, typ, got[p], want)
			}
			n++
		}
	}
	if n < 100 {
		t.Fatalf("only %d paths compared", n)
	}
	t.Logf("%d labels equal matchpathcon", n)
}

func TestFileDigest(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "a"), []byte("hello"), 0o644)
	os.Link(filepath.Join(dir, "a"), filepath.Join(dir, "b"))
	os.WriteFile(filepath.Join(dir, "c"), nil, 0o644)
	got := map[string]string{}
	opts := erofs.Options{FileDigest: func(p string, size int64, sum [32]byte) {
		got[p] = fmt.Sprintf("%d %x", size, sum)
	}}
	buildDir(t, dir, opts)
	want := map[string]string{
		"/a": fmt.Sprintf("5 %x", sha256.Sum256([]byte("hello"))),
		"/b": fmt.Sprintf("5 %x", sha256.Sum256([]byte("hello"))),
		"/c": fmt.Sprintf("0 %x", sha256.Sum256(nil)),
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("digests %v, want %v", got, want)
	}
}

func TestTreeAPI(t *testing.T) {
	tr := erofs.NewTree()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(tr.Add("usr/bin/osguard", &erofs.Inode{Mode: erofs.S_IFREG | 0o755, Size: 3, Open: erofs.BytesOpener([]byte("abc"))}))
	must(tr.Link("usr/bin/og", "usr/bin/osguard"))
	must(tr.Add("etc", &erofs.Inode{Mode: erofs.S_IFDIR | 0o755}))
	must(tr.Remove("etc"))
	if tr.Get("etc") != nil {
		t.Error("etc not removed")
	}
	if err := tr.Add("usr/bin/osguard/x", &erofs.Inode{Mode: erofs.S_IFDIR | 0o755}); err == nil {
		t.Error("child of a file accepted")
	}
	if err := tr.Add("../x", &erofs.Inode{Mode: erofs.S_IFDIR | 0o755}); !errors.Is(err, erofs.ErrInsecurePath) {
		t.Errorf("../x: %v", err)
	}
	if err := tr.Add("x", &erofs.Inode{Mode: erofs.S_IFREG, Xattrs: map[string][]byte{"system.nfs4_acl": nil}}); err == nil {
		t.Error("unsupported xattr namespace accepted")
	}
	var paths []string
	tr.Walk(func(p string, ino *erofs.Inode) error { paths = append(paths, p); return nil })
	if want := "[/ /usr /usr/bin /usr/bin/og /usr/bin/osguard]"; fmt.Sprint(paths) != want {
		t.Errorf("walk %v, want %s", paths, want)
	}
	out := filepath.Join(t.TempDir(), "img")
	f, _ := os.Create(out)
	defer f.Close()
	if _, err := tr.WriteImage(f, erofs.Options{}); err != nil {
		t.Fatal(err)
	}
	fsck(t, out)
}

// TestGNUTarLongNames: GNU-format tar (long names and link targets through
// ././@LongLink) of a tree without xattrs or sub-second times gives the
// same image as the directory.
func TestGNUTarLongNames(t *testing.T) {
	testutil.NeedRoot(t)
	gnutar := testutil.NeedTool(t, "tar")[0]
	dir := t.TempDir()
	long := filepath.Join(dir, strings.Repeat("long-directory-name/", 12), strings.Repeat("f", 200))
	if err := os.MkdirAll(filepath.Dir(long), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(long, bytes.Repeat([]byte("data"), 3000), 0o640)
	os.Symlink(strings.Repeat("../", 60)+"target", filepath.Join(dir, "longlink"))
	os.Link(long, filepath.Join(dir, "hard"))
	unix.Mknod(filepath.Join(dir, "tty"), unix.S_IFCHR|0o620, int(unix.Mkdev(4, 64)))
	unix.Mkfifo(filepath.Join(dir, "fifo"), 0o644)
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		ts := unix.Timespec{Sec: 1234567890}
		return unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
	})
	opts := erofs.Options{BuildTime: buildTime}
	want := readAll(t, buildDir(t, dir, opts))
	out, err := exec.Command(gnutar, "--format=gnu", "--numeric-owner", "-C", dir, "-cf", "-", ".").Output()
	if err != nil {
		t.Fatalf("tar: %v", err)
	}
	if !bytes.Contains(out, []byte("././@LongLink")) {
		t.Fatal("tar did not use GNU long names")
	}
	img := &memImage{}
	if _, err := erofs.BuildFromTar(bytes.NewReader(out), img, opts); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(img.b, want) {
		t.Fatal("image from GNU tar differs from the directory's image")
	}
}

// TestHugeXattrs: xattrs larger than a block put the inode into blocks of
// its own; the kernel must read them back intact.
func TestHugeXattrs(t *testing.T) {
	tr := erofs.NewTree()
	big := bytes.Repeat([]byte("0123456789abcdef"), 1250) // 20000 bytes
	for i, name := range []string{"a", "b", "c"} {
		x := map[string][]byte{"user.big": big[:len(big)-i], "trusted.t": []byte(name)}
		if err := tr.Add(name, &erofs.Inode{Mode: erofs.S_IFREG | 0o644, Size: 5000, Open: erofs.BytesOpener(bytes.Repeat([]byte(name), 5000)), Xattrs: x}); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(t.TempDir(), "img")
	f, _ := os.Create(out)
	if _, err := tr.WriteImage(f, erofs.Options{}); err != nil {
		t.Fatal(err)
	}
	f.Close()
	fsck(t, out)
	mnt := mount(t, out)
	for i, name := range []string{"a", "b", "c"} {
		buf := make([]byte, 65536)
		n, err := unix.Lgetxattr(filepath.Join(mnt, name), "user.big", buf)
		if err != nil || !bytes.Equal(buf[:n], big[:len(big)-i]) {
			t.Errorf("%s: user.big: %v (%d bytes)", name, err, n)
		}
		if got := readAll(t, filepath.Join(mnt, name)); !bytes.Equal(got, bytes.Repeat([]byte(name), 5000)) {
			t.Errorf("%s: content differs", name)
		}
	}
}

// TestSizeMismatch: a source that is shorter or longer than its recorded
// size (a file changed during the build) is an error, not a bad image.
func TestSizeMismatch(t *testing.T) {
	for _, tc := range []struct {
		name string
		data string
		want string
	}{
		{"shorter", strings.Repeat("s", 5000), "shorter than its size"},
		{"longer", strings.Repeat("l", 7000), "longer than its size"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := erofs.NewTree()
			tr.Add("f", &erofs.Inode{Mode: erofs.S_IFREG | 0o644, Size: 6000, Open: erofs.BytesOpener([]byte(tc.data))})
			_, err := tr.WriteImage(&memImage{}, erofs.Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
}
