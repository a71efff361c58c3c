package layer_test

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/osguard/osguard/internal/ocitest"
	"github.com/osguard/osguard/internal/testutil"
	"github.com/osguard/osguard/layer"
	"github.com/osguard/osguard/verity"
)

type E = ocitest.Entry

// convertCase is a layer and what its mounted image must show.
type convertCase struct {
	name    string
	entries []E
	check   func(t *testing.T, mnt string)
}

func convertCases() []convertCase {
	big := bytes.Repeat([]byte("0123456789abcdef"), 1000) // 16000 bytes: full blocks and a tail
	return []convertCase{
		{"files", []E{
			{Name: "etc/", Type: tar.TypeDir, Mode: 0o755},
			{Name: "etc/hostname", Body: []byte("box\n"), Mode: 0o600, UID: 1000, GID: 100},
			{Name: "big", Body: big},
			{Name: "bin/sh", Type: tar.TypeSymlink, Link: "/bin/busybox"},
			{Name: "setuid", Body: []byte("x"), Mode: 0o4755},
		}, func(t *testing.T, mnt string) {
			st := lstat(t, mnt, "etc/hostname")
			if st.Mode != unix.S_IFREG|0o600 || st.Uid != 1000 || st.Gid != 100 || st.Mtim.Sec != ocitest.Epoch.Unix() {
				t.Errorf("etc/hostname: mode %o uid %d gid %d mtime %d", st.Mode, st.Uid, st.Gid, st.Mtim.Sec)
			}
			if b, _ := os.ReadFile(filepath.Join(mnt, "big")); !bytes.Equal(b, big) {
				t.Errorf("big: content differs (%d bytes)", len(b))
			}
			if l, _ := os.Readlink(filepath.Join(mnt, "bin/sh")); l != "/bin/busybox" {
				t.Errorf("bin/sh -> %q", l)
			}
			if st := lstat(t, mnt, "setuid"); st.Mode != unix.S_IFREG|0o4755 {
				t.Errorf("setuid: mode %o", st.Mode)
			}
		}},
		{"whiteouts", []E{
			{Name: ".wh.gone", UID: 5, GID: 6},
			{Name: "dir/", Type: tar.TypeDir},
			{Name: "dir/.wh.x"},
			{Name: "kept"},
			{Name: ".wh.kept"}, // same layer: the entry stays
		}, func(t *testing.T, mnt string) {
			for _, p := range []string{"gone", "dir/x"} {
				st := lstat(t, mnt, p)
				if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
					t.Errorf("%s: mode %o rdev %d, want a 0:0 character device", p, st.Mode, st.Rdev)
				}
			}
			if st := lstat(t, mnt, "gone"); st.Uid != 5 || st.Gid != 6 {
				t.Errorf("gone: owner %d:%d, want the whiteout's 5:6", st.Uid, st.Gid)
			}
			if st := lstat(t, mnt, "kept"); st.Mode&unix.S_IFMT != unix.S_IFREG {
				t.Errorf("kept: mode %o, want a regular file", st.Mode)
			}
			noEntry(t, mnt, ".wh.gone", "dir/.wh.x", ".wh.kept")
		}},
		{"opaque", []E{
			{Name: "opq/", Type: tar.TypeDir},
			{Name: "opq/.wh..wh..opq"},
			{Name: "opq/keep", Body: []byte("k")},
			{Name: "implicit/.wh..wh..opq"},
			{Name: "plain/", Type: tar.TypeDir, Xattrs: map[string]string{"trusted.overlay.opaque": "y"}},
		}, func(t *testing.T, mnt string) {
			for _, p := range []string{"opq", "implicit"} {
				if v := xattr(t, mnt, p, layer.OpaqueXattr); v != "y" {
					t.Errorf("%s: %s=%q, want y", p, layer.OpaqueXattr, v)
				}
			}
			// Only the conversion makes directories opaque.
			if v := xattr(t, mnt, "plain", layer.OpaqueXattr); v != "" {
				t.Errorf("plain: %s=%q from the tar was kept", layer.OpaqueXattr, v)
			}
			noEntry(t, mnt, "opq/.wh..wh..opq", "implicit/.wh..wh..opq")
			if _, err := os.Stat(filepath.Join(mnt, "opq/keep")); err != nil {
				t.Error(err)
			}
		}},
		{"aufs-metadata", []E{
			{Name: ".wh..wh.plnk/", Type: tar.TypeDir},
			{Name: ".wh..wh.plnk/123.456", Body: []byte("x")},
			{Name: "f", Body: []byte("f")},
		}, func(t *testing.T, mnt string) {
			noEntry(t, mnt, ".wh..wh.plnk")
		}},
		{"xattrs", []E{
			{Name: "cap", Body: []byte("bin"), Xattrs: map[string]string{
				"security.capability":      "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
				"user.comment":             "hello",
				"trusted.overlay.redirect": "/elsewhere",
			}},
		}, func(t *testing.T, mnt string) {
			if v := xattr(t, mnt, "cap", "user.comment"); v != "hello" {
				t.Errorf("user.comment=%q", v)
			}
			if v := xattr(t, mnt, "cap", "security.capability"); len(v) != 20 || v[0] != 1 {
				t.Errorf("security.capability=%x", v)
			}
			if v := xattr(t, mnt, "cap", "trusted.overlay.redirect"); v != "" {
				t.Errorf("trusted.overlay.redirect=%q kept", v)
			}
		}},
		{"hardlinks", []E{
			{Name: "usr/bin/a", Body: []byte("same")},
			{Name: "usr/bin/b", Type: tar.TypeLink, Link: "usr/bin/a"},
			{Name: "/usr/bin/c", Type: tar.TypeLink, Link: "./usr/bin/a"},
		}, func(t *testing.T, mnt string) {
			a, b, c := lstat(t, mnt, "usr/bin/a"), lstat(t, mnt, "usr/bin/b"), lstat(t, mnt, "usr/bin/c")
			if a.Ino != b.Ino || a.Ino != c.Ino || a.Nlink != 3 {
				t.Errorf("inodes %d %d %d, nlink %d: want one inode with 3 links", a.Ino, b.Ino, c.Ino, a.Nlink)
			}
		}},
		{"devices", []E{
			{Name: "dev/null", Type: tar.TypeChar, Devmajor: 1, Devminor: 3, Mode: 0o666},
			{Name: "dev/sda", Type: tar.TypeBlock, Devmajor: 8, Devminor: 0, Mode: 0o660},
			{Name: "fifo", Type: tar.TypeFifo},
		}, func(t *testing.T, mnt string) {
			if st := lstat(t, mnt, "dev/null"); st.Mode != unix.S_IFCHR|0o666 || st.Rdev != unix.Mkdev(1, 3) {
				t.Errorf("dev/null: mode %o rdev %d", st.Mode, st.Rdev)
			}
			if st := lstat(t, mnt, "dev/sda"); st.Mode&unix.S_IFMT != unix.S_IFBLK || st.Rdev != unix.Mkdev(8, 0) {
				t.Errorf("dev/sda: mode %o rdev %d", st.Mode, st.Rdev)
			}
		}},
		{"empty", nil, func(t *testing.T, mnt string) {
			ents, err := os.ReadDir(mnt)
			if err != nil || len(ents) != 0 {
				t.Errorf("root holds %v (%v)", ents, err)
			}
		}},
	}
}

func lstat(t *testing.T, mnt, p string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(mnt, p), &st); err != nil {
		t.Fatalf("lstat %s: %v", p, err)
	}
	return st
}

func xattr(t *testing.T, mnt, p, name string) string {
	t.Helper()
	buf := make([]byte, 256)
	n, err := unix.Lgetxattr(filepath.Join(mnt, p), name, buf)
	if errors.Is(err, unix.ENODATA) {
		return ""
	}
	if err != nil {
		t.Fatalf("getxattr %s %s: %v", p, name, err)
	}
	return string(buf[:n])
}

func noEntry(t *testing.T, mnt string, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if _, err := os.Lstat(filepath.Join(mnt, p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: exists (%v), want it gone", p, err)
		}
	}
}

func convertFile(t *testing.T, blob []byte, out string) *layer.Result {
	t.Helper()
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := layer.Convert(bytes.NewReader(blob), f, layer.Options{TempDir: t.TempDir()})
	if err != nil {
		t.Fatalf("Convert: %v", err)
	}
	if fi, _ := f.Stat(); fi.Size() != res.Size() {
		t.Fatalf("output is %d bytes, Result says %d", fi.Size(), res.Size())
	}
	return res
}

// TestConvert converts each case in every compression and checks: the
// DiffID, that all compressions and Measure agree, the tree with our
// verifier and with veritysetup, the image with fsck.erofs, and (as
// root) what the mounted image shows.
func TestConvert(t *testing.T) {
	vs := testutil.NeedTool(t, "veritysetup")[0]
	for _, c := range convertCases() {
		t.Run(c.name, func(t *testing.T) {
			plain := ocitest.Tar(t, c.entries)
			sum := sha256.Sum256(plain)
			wantDiff := "sha256:" + hex.EncodeToString(sum[:])
			dir := t.TempDir()
			var first []byte
			var firstRes *layer.Result
			for _, comp := range ocitest.Compressions {
				out := filepath.Join(dir, string(comp)+".img")
				res := convertFile(t, ocitest.Compress(t, plain, comp), out)
				if res.DiffID != wantDiff {
					t.Fatalf("%s: DiffID %s, want %s", comp, res.DiffID, wantDiff)
				}
				b, err := os.ReadFile(out)
				if err != nil {
					t.Fatal(err)
				}
				if first == nil {
					first, firstRes = b, res
				} else if !bytes.Equal(b, first) {
					t.Fatalf("%s: bytes differ from the %s conversion", comp, ocitest.Compressions[0])
				}
				m, err := layer.Measure(bytes.NewReader(ocitest.Compress(t, plain, comp)), layer.Options{TempDir: dir})
				if err != nil {
					t.Fatalf("Measure: %v", err)
				}
				if fmt.Sprint(m) != fmt.Sprint(res) {
					t.Fatalf("Measure gives %+v, Convert %+v", m, res)
				}
			}
			// An uncompressed file takes the in-place path, with and
			// without the expected DiffID: the same bytes.
			tarFile := filepath.Join(dir, "layer.tar")
			os.WriteFile(tarFile, plain, 0o644)
			for _, want := range []string{"", wantDiff} {
				f, err := os.Open(tarFile)
				if err != nil {
					t.Fatal(err)
				}
				out, _ := os.Create(filepath.Join(dir, "file.img"))
				res, err := layer.Convert(f, out, layer.Options{TempDir: dir, DiffID: want})
				f.Close()
				out.Close()
				if err != nil {
					t.Fatalf("Convert(file, DiffID %q): %v", want, err)
				}
				if b, _ := os.ReadFile(filepath.Join(dir, "file.img")); !bytes.Equal(b, first) || fmt.Sprint(res) != fmt.Sprint(firstRes) {
					t.Fatalf("Convert(file, DiffID %q) differs from the stream conversion", want)
				}
			}
			res := firstRes
			if res.ImageSize%4096 != 0 || res.HashOffset != res.ImageSize || res.Verity.DataBlocks*4096 != uint64(res.ImageSize) {
				t.Fatalf("bad geometry %+v", res)
			}
			if !bytes.Equal(res.Verity.Salt, layer.Salt(res.DiffID)) {
				t.Fatalf("salt %x, want Salt(DiffID)", res.Verity.Salt)
			}
			img := filepath.Join(dir, string(ocitest.Compressions[0])+".img")
			p := verity.Params{Salt: res.Verity.Salt, HashFormat: 1, DataBlocks: res.Verity.DataBlocks,
				HashOffset: uint64(res.HashOffset), NoSuperblock: true}
			if err := verity.Verify(bytes.NewReader(first), bytes.NewReader(first), res.Verity.RootHash, p); err != nil {
				t.Fatalf("verity.Verify: %v", err)
			}
			args := []string{"verify", "--no-superblock", "--hash-offset", strconv.FormatInt(res.HashOffset, 10),
				"--data-blocks", strconv.FormatUint(res.Verity.DataBlocks, 10), "--salt", hex.EncodeToString(res.Verity.Salt),
				img, img, hex.EncodeToString(res.Verity.RootHash)}
			if out, err := exec.Command(vs, args...).CombinedOutput(); err != nil {
				t.Fatalf("veritysetup %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			fsck(t, img, res.ImageSize)
			if os.Geteuid() != 0 {
				testutil.Missing(t, "mounting the image needs root")
			}
			c.check(t, mount(t, img))
		})
	}
}

// TestOracleCanFail flips a byte of the image and checks that veritysetup
// and our verifier notice: the oracles of TestConvert are not blind.
func TestOracleCanFail(t *testing.T) {
	vs := testutil.NeedTool(t, "veritysetup")[0]
	plain := ocitest.Tar(t, convertCases()[0].entries)
	img := filepath.Join(t.TempDir(), "l.img")
	res := convertFile(t, plain, img)
	b, _ := os.ReadFile(img)
	b[4096+100] ^= 1
	os.WriteFile(img, b, 0o644)
	args := []string{"verify", "--no-superblock", "--hash-offset", strconv.FormatInt(res.HashOffset, 10),
		"--data-blocks", strconv.FormatUint(res.Verity.DataBlocks, 10), "--salt", hex.EncodeToString(res.Verity.Salt),
		img, img, hex.EncodeToString(res.Verity.RootHash)}
	if out, err := exec.Command(vs, args...).CombinedOutput(); err == nil {
		t.Fatalf("veritysetup verified a corrupted image:\n%s", out)
	}
}

// TestDeterministic: same tar, same bytes; a different tar, another salt.
func TestDeterministic(t *testing.T) {
	dir := t.TempDir()
	a := ocitest.Tar(t, convertCases()[0].entries)
	r1 := convertFile(t, a, filepath.Join(dir, "1"))
	r2 := convertFile(t, a, filepath.Join(dir, "2"))
	b1, _ := os.ReadFile(filepath.Join(dir, "1"))
	b2, _ := os.ReadFile(filepath.Join(dir, "2"))
	if !bytes.Equal(b1, b2) || !bytes.Equal(r1.Verity.RootHash, r2.Verity.RootHash) {
		t.Fatal("two conversions of one tar differ")
	}
	b := ocitest.Tar(t, convertCases()[1].entries)
	r3 := convertFile(t, b, filepath.Join(dir, "3"))
	if bytes.Equal(r3.Verity.Salt, r1.Verity.Salt) || bytes.Equal(r3.Verity.RootHash, r1.Verity.RootHash) {
		t.Fatal("two different layers share salt or root hash")
	}
	// Padding after the tar's end marker is part of the DiffID.
	padded := append(append([]byte(nil), a...), make([]byte, 10240)...)
	r4 := convertFile(t, padded, filepath.Join(dir, "4"))
	if r4.DiffID == r1.DiffID {
		t.Fatal("padding after the end marker did not change the DiffID")
	}
}

// TestHostile: each bad layer gives a clear error, never a panic.
func TestHostile(t *testing.T) {
	good := ocitest.Tar(t, []E{{Name: "f", Body: bytes.Repeat([]byte("x"), 100000)}})
	gz := ocitest.Compress(t, good, ocitest.Gzip)
	zs := ocitest.Compress(t, good, ocitest.Zstd)
	// A header that claims 1 TiB of data, followed by nothing.
	huge := ocitest.Tar(t, []E{{Name: "f", Body: []byte("x")}})
	copy(huge[124:136], fmt.Sprintf("%011o\x00", int64(1)<<40))
	copy(huge[148:156], "        ")
	var sum int64
	for _, c := range huge[:512] {
		sum += int64(c)
	}
	copy(huge[148:156], fmt.Sprintf("%06o\x00 ", sum))
	cases := []struct {
		name string
		blob []byte
		want string
	}{
		{"dotdot", ocitest.Tar(t, []E{{Name: "../etc/passwd", Body: []byte("x")}}), "insecure path"},
		{"dotdot-inner", ocitest.Tar(t, []E{{Name: "a/../../b", Body: []byte("x")}}), "insecure path"},
		{"hardlink-dotdot", ocitest.Tar(t, []E{{Name: "a", Body: []byte("x")}, {Name: "b", Type: tar.TypeLink, Link: "../a"}}), "insecure path"},
		{"hardlink-missing", ocitest.Tar(t, []E{{Name: "b", Type: tar.TypeLink, Link: "nope"}}), "does not exist"},
		{"whiteout-empty", ocitest.Tar(t, []E{{Name: ".wh."}}), "invalid name"},
		{"whiteout-dot", ocitest.Tar(t, []E{{Name: "d/.wh.."}}), "invalid name"},
		{"parent-not-dir", ocitest.Tar(t, []E{{Name: "a"}, {Name: "a/b"}}), "not a directory"},
		{"truncated-gzip", gz[:len(gz)/2], "unexpected EOF"},
		{"truncated-zstd", zs[:len(zs)/2], "unexpected EOF"},
		{"truncated-tar", good[:700], "unexpected EOF"},
		{"huge-size", huge, "unexpected EOF"},
		{"garbage", bytes.Repeat([]byte{0x42}, 4096), "tar"},
		{"gzip-garbage", append([]byte{0x1f, 0x8b}, bytes.Repeat([]byte{7}, 100)...), "gzip"},
		{"device-range", ocitest.Tar(t, []E{{Name: "d", Type: tar.TypeChar, Devmajor: 1 << 20}}), "out of range"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := layer.Measure(bytes.NewReader(c.blob), layer.Options{TempDir: t.TempDir()})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
			if !strings.HasPrefix(err.Error(), "layer: ") {
				t.Errorf("error %q does not say where it comes from", err)
			}
		})
	}
}

// TestExpectedDiffID: a layer whose content is not the expected DiffID
// fails, whether read as a file or as a stream.
func TestExpectedDiffID(t *testing.T) {
	dir := t.TempDir()
	plain := ocitest.Tar(t, convertCases()[0].entries)
	p := filepath.Join(dir, "l.tar")
	os.WriteFile(p, plain, 0o644)
	wrong := "sha256:" + strings.Repeat("0", 64)
	for _, asFile := range []bool{false, true} {
		var blob io.Reader = bytes.NewReader(plain)
		if asFile {
			f, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			blob = f
		}
		_, err := layer.Measure(blob, layer.Options{TempDir: dir, DiffID: wrong})
		if !errors.Is(err, layer.ErrDiffID) || !strings.Contains(err.Error(), wrong) {
			t.Fatalf("file %v: %v, want ErrDiffID", asFile, err)
		}
	}
}

// TestSpoolCleaned: nothing is left in TempDir, after success or failure.
func TestSpoolCleaned(t *testing.T) {
	dir := t.TempDir()
	good := ocitest.Compress(t, ocitest.Tar(t, convertCases()[0].entries), ocitest.Gzip)
	if _, err := layer.Measure(bytes.NewReader(good), layer.Options{TempDir: dir}); err != nil {
		t.Fatal(err)
	}
	if _, err := layer.Measure(bytes.NewReader(good[:len(good)-20]), layer.Options{TempDir: dir}); err == nil {
		t.Fatal("truncated gzip accepted")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("TempDir holds %v", ents)
	}
}

func fsck(t *testing.T, img string, size int64) {
	t.Helper()
	tool := testutil.NeedTool(t, "fsck.erofs")[0]
	// fsck.erofs checks the image alone: cut off the hash tree.
	only := img + ".erofs"
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(only, b[:size], 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(tool, "--extract", only).CombinedOutput(); err != nil || bytes.Contains(out, []byte("<E>")) {
		t.Fatalf("fsck.erofs %s: %v\n%s", only, err, out)
	}
}

func mount(t *testing.T, img string) string {
	t.Helper()
	return testutil.MountErofs(t, img)
}

// TestOverlay stacks the sample image's two converted layers with the
// kernel's overlayfs, the judge of what whiteouts and opaque directories
// mean: /etc/motd is gone, /opt/old holds only "new", the rest shows.
func TestOverlay(t *testing.T) {
	testutil.NeedRoot(t)
	dir := t.TempDir()
	var mnts []string
	for i, ents := range [][]E{ocitest.BaseLayer(t), ocitest.TopLayer()} {
		img := filepath.Join(dir, fmt.Sprintf("l%d.img", i))
		convertFile(t, ocitest.Tar(t, ents), img)
		mnts = append(mnts, mount(t, img))
	}
	ov := t.TempDir()
	// lowerdir lists the top layer first.
	if out, err := exec.Command("mount", "-t", "overlay", "overlay", "-o", "ro,lowerdir="+mnts[1]+":"+mnts[0], ov).CombinedOutput(); err != nil {
		t.Fatalf("mount overlay: %v\n%s", err, out)
	}
	defer func() {
		if out, err := exec.Command("umount", ov).CombinedOutput(); err != nil {
			t.Errorf("umount overlay: %v\n%s", err, out)
		}
	}()
	noEntry(t, ov, "etc/motd", "opt/old/a", "opt/old/b")
	for p, want := range map[string]string{"opt/old/new": "new\n", "etc/passwd": "root:x:0:0:root:/:/bin/sh\n", "hello.txt": "hello from a signed layer\n"} {
		if b, err := os.ReadFile(filepath.Join(ov, p)); err != nil || string(b) != want {
			t.Errorf("%s: %q, %v; want %q", p, b, err, want)
		}
	}
	if out, err := exec.Command(filepath.Join(ov, "bin/busybox"), "true").CombinedOutput(); err != nil {
		t.Errorf("busybox from the lower layer: %v\n%s", err, out)
	}
}
