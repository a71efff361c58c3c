package initrd

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/osguard/osguard/internal/testutil"
)

func sampleArchive(t *testing.T) *Archive {
	t.Helper()
	a := NewArchive()
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(a.AddFile("/init", 0o755, []byte("#!/bin/sh\necho hi\n")))
	must(a.AddFile("etc/osguard/init.json", 0o644, []byte("{}\n")))
	must(a.AddFile("lib/modules/v/a.ko", 0o644, bytes.Repeat([]byte{0xaa}, 4097)))
	must(a.AddFile("empty", 0o600, nil))
	must(a.AddSymlink("bin/sh", "../init"))
	must(a.AddDir("sysroot", 0o700))
	must(a.AddCharDev("dev/console", 0o600, 5, 1))
	return a
}

func TestCPIOListedByGNUCpio(t *testing.T) {
	cpio := testutil.NeedTool(t, "cpio")[0]
	var buf bytes.Buffer
	if _, err := sampleArchive(t).WriteTo(&buf, 1700000000); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(cpio, "-t", "-v", "--quiet")
	cmd.Stdin = bytes.NewReader(buf.Bytes())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -t: %v\n%s", err, out)
	}
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		names = append(names, f[len(f)-1])
		if strings.HasPrefix(line, "l") && f[len(f)-1] != "../init" {
			t.Errorf("symlink line %q", line)
		}
	}
	want := []string{"bin", "../init", "dev", "dev/console", "empty", "etc", "etc/osguard", "etc/osguard/init.json",
		"init", "lib", "lib/modules", "lib/modules/v", "lib/modules/v/a.ko", "sysroot"}
	// cpio -tv prints "name -> target" for links; the last field is the target.
	if !slices.Equal(names, want) {
		t.Fatalf("cpio -t names\n got %v\nwant %v\n%s", names, want, out)
	}
	if !strings.Contains(string(out), "crw-------") || !strings.Contains(string(out), "-rwxr-xr-x") {
		t.Errorf("modes not as written:\n%s", out)
	}

	// Extract and compare the bytes.
	dir := t.TempDir()
	cmd = exec.Command(cpio, "-i", "-d", "--quiet", "--no-absolute-filenames")
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(buf.Bytes())
	// Device nodes need root; everything else must come out.
	out, _ = cmd.CombinedOutput()
	b, err := os.ReadFile(filepath.Join(dir, "lib/modules/v/a.ko"))
	if err != nil || !bytes.Equal(b, bytes.Repeat([]byte{0xaa}, 4097)) {
		t.Fatalf("extracted a.ko: %v (%d bytes)\n%s", err, len(b), out)
	}
	if l, err := os.Readlink(filepath.Join(dir, "bin/sh")); err != nil || l != "../init" {
		t.Fatalf("extracted link: %q %v", l, err)
	}
	st, err := os.Stat(filepath.Join(dir, "init"))
	if err != nil || st.Mode().Perm() != 0o755 {
		t.Fatalf("init mode: %v %v", st, err)
	}
}

func TestCPIOReproducible(t *testing.T) {
	var a, b bytes.Buffer
	if _, err := sampleArchive(t).WriteTo(&a, 0); err != nil {
		t.Fatal(err)
	}
	// Insertion order must not matter.
	x := NewArchive()
	x.AddCharDev("dev/console", 0o600, 5, 1)
	x.AddDir("sysroot", 0o700)
	x.AddSymlink("bin/sh", "../init")
	x.AddFile("empty", 0o600, nil)
	x.AddFile("lib/modules/v/a.ko", 0o644, bytes.Repeat([]byte{0xaa}, 4097))
	x.AddFile("etc/osguard/init.json", 0o644, []byte("{}\n"))
	x.AddFile("init", 0o755, []byte("#!/bin/sh\necho hi\n"))
	if _, err := x.WriteTo(&b, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("same members in another order gave other bytes")
	}
	if a.Len()%4 != 0 || !bytes.Contains(a.Bytes(), []byte("TRAILER!!!")) {
		t.Fatalf("archive not padded or no trailer (%d bytes)", a.Len())
	}
}

func TestCPIOErrors(t *testing.T) {
	a := NewArchive()
	if err := a.AddFile("x", 0o644, nil); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"twice":         a.AddFile("x", 0o644, nil),
		"under a file":  a.AddFile("x/y", 0o644, nil),
		"empty name":    a.AddFile("/", 0o644, nil),
		"dir over file": a.AddDir("x", 0o755),
	} {
		if err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
