package erofs_test

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/osguard/osguard/erofs"
	"github.com/osguard/osguard/internal/tarfs"
	"github.com/osguard/osguard/internal/testutil"
)

type member struct {
	hdr  tar.Header
	data string
}

func mkTar(t testing.TB, ms ...member) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, m := range ms {
		h := m.hdr
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Typeflag == tar.TypeReg && h.Size == 0 {
			h.Size = int64(len(m.data))
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if h.ModTime.IsZero() {
			h.ModTime = time.Unix(buildTime, 0)
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if m.data != "" {
			if _, err := io.WriteString(tw, m.data); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// memImage is an io.WriterAt in memory.
type memImage struct{ b []byte }

func (m *memImage) WriteAt(p []byte, off int64) (int, error) {
	if end := int(off) + len(p); end > len(m.b) {
		m.b = append(m.b, make([]byte, end-len(m.b))...)
	}
	return copy(m.b[off:], p), nil
}

func readTree(t *testing.T, tr *erofs.Tree, p string) string {
	t.Helper()
	ino := tr.Get(p)
	if ino == nil {
		t.Fatalf("%s missing", p)
	}
	if ino.Size == 0 {
		return ""
	}
	rc, err := ino.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	return string(b)
}

func TestHostileTar(t *testing.T) {
	reg := func(name, data string) member { return member{hdr: tar.Header{Name: name}, data: data} }
	dir := func(name string) member {
		return member{hdr: tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: 0o755}}
	}
	link := func(name, target string) member {
		return member{hdr: tar.Header{Name: name, Typeflag: tar.TypeLink, Linkname: target}}
	}
	ok := func(check func(t *testing.T, tr *erofs.Tree)) func(t *testing.T, tr *erofs.Tree, err error) {
		return func(t *testing.T, tr *erofs.Tree, err error) {
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			check(t, tr)
		}
	}
	fails := func(want string, target error) func(t *testing.T, tr *erofs.Tree, err error) {
		return func(t *testing.T, tr *erofs.Tree, err error) {
			if err == nil || !strings.Contains(err.Error(), want) || (target != nil && !errors.Is(err, target)) {
				t.Fatalf("error %v, want %q (%v)", err, want, target)
			}
		}
	}
	plain := mkTar(t, reg("a", strings.Repeat("x", 5000)))
	for _, tc := range []struct {
		name  string
		tar   []byte
		check func(t *testing.T, tr *erofs.Tree, err error)
	}{
		{"dotdot", mkTar(t, reg("../evil", "x")), fails("insecure path", tarfs.ErrInsecurePath)},
		{"inner dotdot", mkTar(t, reg("a/../../evil", "x")), fails("insecure path", tarfs.ErrInsecurePath)},
		{"link dotdot", mkTar(t, reg("a", "x"), link("b", "../a")), fails("insecure path", tarfs.ErrInsecurePath)},
		{"absolute", mkTar(t, reg("/etc/passwd", "root"), reg("./x/./y", "z")), ok(func(t *testing.T, tr *erofs.Tree) {
			if got := readTree(t, tr, "etc/passwd"); got != "root" {
				t.Errorf("etc/passwd = %q", got)
			}
			readTree(t, tr, "x/y")
		})},
		{"duplicate last wins", mkTar(t, reg("f", "first"), reg("f", "second")), ok(func(t *testing.T, tr *erofs.Tree) {
			if got := readTree(t, tr, "f"); got != "second" {
				t.Errorf("f = %q", got)
			}
		})},
		{"dir replaced by file", mkTar(t, dir("d"), reg("d/x", "1"), reg("d", "file")), ok(func(t *testing.T, tr *erofs.Tree) {
			if tr.Get("d/x") != nil || readTree(t, tr, "d") != "file" {
				t.Error("d not replaced")
			}
		})},
		{"dir metadata updated", mkTar(t, dir("d"), reg("d/x", "1"), member{hdr: tar.Header{Name: "./d", Typeflag: tar.TypeDir, Mode: 0o700}}),
			ok(func(t *testing.T, tr *erofs.Tree) {
				if tr.Get("d").Mode&0o777 != 0o700 || tr.Get("d/x") == nil {
					t.Error("second dir entry not merged")
				}
			})},
		{"link survives replaced target", mkTar(t, reg("f", "old"), link("l", "f"), reg("f", "new")), ok(func(t *testing.T, tr *erofs.Tree) {
			if readTree(t, tr, "l") != "old" || readTree(t, tr, "f") != "new" {
				t.Error("hard link semantics")
			}
		})},
		{"missing link target", mkTar(t, link("l", "nothere")), fails("does not exist", nil)},
		{"link to dir", mkTar(t, dir("d"), link("l", "d")), fails("is a directory", nil)},
		{"file under file", mkTar(t, reg("f", "x"), reg("f/g", "y")), fails("not a directory", nil)},
		{"root not dir", mkTar(t, reg(".", "x")), fails("root must be a directory", nil)},
		{"bad xattr namespace", mkTar(t, member{hdr: tar.Header{Name: "f", PAXRecords: map[string]string{"SCHILY.xattr.system.nfs4_acl": "x"}}}),
			fails("namespace not supported", nil)},
		{"long name", mkTar(t, reg(strings.Repeat("n", 256), "x")), fails("longer than 255", nil)},
		{"truncated data", plain[:512+1000], fails("unexpected EOF", io.ErrUnexpectedEOF)},
		{"truncated header", plain[:300], fails("unexpected EOF", io.ErrUnexpectedEOF)},
		{"giant size", giant(t), fails("unexpected EOF", io.ErrUnexpectedEOF)},
		{"garbage", bytes.Repeat([]byte("garbage!"), 200), fails("tar", nil)},
		{"gzip garbage", append([]byte{0x1f, 0x8b}, bytes.Repeat([]byte{1}, 100)...), fails("gzip", nil)},
		{"giant sparse", giantSparse(t), fails("exceeds the limit", nil)},
		{"empty", nil, ok(func(t *testing.T, tr *erofs.Tree) {})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, asFile := range []bool{false, true} {
				spool := t.TempDir()
				var r io.Reader = bytes.NewReader(tc.tar)
				if asFile {
					p := filepath.Join(t.TempDir(), "in.tar")
					os.WriteFile(p, tc.tar, 0o644)
					f, err := os.Open(p)
					if err != nil {
						t.Fatal(err)
					}
					defer f.Close()
					r = f
				}
				tr, err := erofs.TreeFromTar(r, spool)
				tc.check(t, tr, err)
				if tr != nil {
					img := &memImage{}
					if _, err := tr.WriteImage(img, erofs.Options{}); err != nil {
						t.Errorf("write: %v", err)
					}
					tr.Close()
				}
				if left, _ := os.ReadDir(spool); len(left) != 0 {
					t.Errorf("spool dir not empty: %v", left)
				}
			}
		})
	}
}

// giant returns a tar whose only member claims 1 TiB but holds 10 bytes.
func giant(t *testing.T) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "big", Typeflag: tar.TypeReg, Size: 1 << 40, Mode: 0o644})
	tw.Write([]byte("0123456789"))
	return buf.Bytes() // no Close: the writer would pad 1 TiB
}

// giantSparse returns a GNU tar (PAX sparse format) of a 2 TiB file that
// is one hole.
func giantSparse(t *testing.T) []byte {
	gnutar := testutil.NeedTool(t, "tar")[0]
	dir := t.TempDir()
	if err := os.Truncate(filepath.Join(dir, "holes"), 0); err != nil {
		os.WriteFile(filepath.Join(dir, "holes"), nil, 0o644)
	}
	if err := os.Truncate(filepath.Join(dir, "holes"), 2<<40); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(gnutar, "-S", "--format=posix", "-C", dir, "-cf", "-", "holes").Output()
	if err != nil {
		t.Fatalf("tar: %v", err)
	}
	return out
}

func FuzzTreeFromTar(f *testing.F) {
	f.Add(mkTar(f, member{hdr: tar.Header{Name: "a"}, data: "hello"},
		member{hdr: tar.Header{Name: "d/", Typeflag: tar.TypeDir}},
		member{hdr: tar.Header{Name: "d/l", Typeflag: tar.TypeSymlink, Linkname: "../a"}},
		member{hdr: tar.Header{Name: "d/h", Typeflag: tar.TypeLink, Linkname: "a"}},
		member{hdr: tar.Header{Name: "c", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}},
		member{hdr: tar.Header{Name: "x", PAXRecords: map[string]string{"SCHILY.xattr.user.k": "v"}}, data: strings.Repeat("y", 4100)}))
	f.Add(mkTar(f, member{hdr: tar.Header{Name: strings.Repeat("long/", 40) + "name", Format: tar.FormatGNU}, data: "g"}))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 1<<20 {
			return
		}
		tr, err := erofs.TreeFromTar(bytes.NewReader(data), t.TempDir())
		if err != nil {
			return
		}
		defer tr.Close()
		var total int64
		tr.Walk(func(p string, ino *erofs.Inode) error { total += ino.Size; return nil })
		if total > 64<<20 {
			return // valid, but too big to write to memory here
		}
		img := &memImage{}
		if _, err := tr.WriteImage(img, erofs.Options{}); err != nil {
			if !strings.HasPrefix(err.Error(), "erofs: ") {
				t.Fatalf("unwrapped error: %v", err)
			}
		}
	})
}

// A PAX name of "a/a/a/..." made a tree tens of thousands of directories
// deep from a few KB of tar, and Walk and WriteImage quadratic in its depth
// (6 s for 42 KB, hours for 1 MiB). Names longer than PATH_MAX are refused.
func TestTarPathTooLong(t *testing.T) {
	for _, h := range []tar.Header{
		{Name: strings.Repeat("a/", 20000) + "f", Typeflag: tar.TypeReg, Mode: 0o644, Format: tar.FormatPAX},
		{Name: "l", Typeflag: tar.TypeSymlink, Linkname: strings.Repeat("x/", 3000), Format: tar.FormatPAX},
	} {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		tw.Close()
		tr, err := erofs.TreeFromTar(bytes.NewReader(buf.Bytes()), t.TempDir())
		if err == nil {
			tr.Close()
			t.Fatalf("%.20q: accepted", h.Name)
		}
		if !strings.Contains(err.Error(), "longer than 4095 bytes") {
			t.Fatalf("err = %v", err)
		}
	}
}
