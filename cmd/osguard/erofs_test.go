package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/osguard/osguard/internal/testutil"
)

func erofsCLI(t *testing.T, stdin []byte, args ...string) (string, int) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetIn(bytes.NewReader(stdin))
	root.SetArgs(args)
	err := root.Execute()
	var ee *exitError
	switch {
	case err == nil:
		return out.String(), 0
	case errors.As(err, &ee):
		return out.String() + ee.Error(), ee.code
	}
	return out.String() + err.Error(), 1
}

// TestErofsBuildCLI: a directory, its tar file and its tar on stdin give
// the same image; bad input leaves no output behind; blkid reads the UUID.
func TestErofsBuildCLI(t *testing.T) {
	gnutar := testutil.NeedTool(t, "tar")[0]
	blkid := testutil.NeedTool(t, "blkid")[0]
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	os.MkdirAll(filepath.Join(src, "bin"), 0o755)
	os.WriteFile(filepath.Join(src, "bin", "tool"), bytes.Repeat([]byte("x"), 5000), 0o755)
	os.Symlink("bin/tool", filepath.Join(src, "link"))
	tarFile := filepath.Join(dir, "src.tar")
	if out, err := exec.Command(gnutar, "--format=posix", "--numeric-owner", "-C", src, "-cf", tarFile, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, out)
	}
	tarBytes, _ := os.ReadFile(tarFile)
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	flags := []string{"--uuid", "0f0e0d0c-0b0a-0908-0706-050403020100", "--label", "usr", "--all-root",
		"--clamp-mtime", "--mount-point", "/usr"}
	var images [][]byte
	for i, source := range []string{src, tarFile, "-"} {
		out := filepath.Join(dir, "img"+string(rune('a'+i)))
		args := append(append([]string{"erofs", "build", "--json"}, flags...), source, out)
		stdout, code := erofsCLI(t, tarBytes, args...)
		if code != 0 {
			t.Fatalf("build %s: exit %d: %s", source, code, stdout)
		}
		var res struct {
			Size      int64
			BuildTime int64
		}
		if err := json.Unmarshal([]byte(stdout), &res); err != nil || res.BuildTime != 1700000000 {
			t.Fatalf("json %q: %v", stdout, err)
		}
		b, _ := os.ReadFile(out)
		if int64(len(b)) != res.Size {
			t.Fatalf("size %d, file %d", res.Size, len(b))
		}
		images = append(images, b)
	}
	if !bytes.Equal(images[0], images[1]) || !bytes.Equal(images[0], images[2]) {
		t.Fatal("directory, tar file and stdin tar give different images")
	}
	out, _ := exec.Command(blkid, "-p", "-o", "export", filepath.Join(dir, "imga")).Output()
	if !strings.Contains(string(out), "UUID=0f0e0d0c-0b0a-0908-0706-050403020100") {
		t.Errorf("blkid: %s", out)
	}
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"erofs", "build", "-", filepath.Join(dir, "bad")}, 1}, // garbage on stdin
		{[]string{"erofs", "build", "--uuid", "nope", src, filepath.Join(dir, "bad")}, 2},
		{[]string{"erofs", "build", "--mount-point", "usr", src, filepath.Join(dir, "bad")}, 2},
		{[]string{"erofs", "build", "--bogus", src, filepath.Join(dir, "bad")}, 2},
		{[]string{"erofs", "build", filepath.Join(dir, "missing"), filepath.Join(dir, "bad")}, 1},
	} {
		if out, code := erofsCLI(t, []byte("garbage"), tc.args...); code != tc.code {
			t.Errorf("%v: exit %d, want %d: %s", tc.args, code, tc.code, out)
		}
	}
	left, _ := filepath.Glob(filepath.Join(dir, "*bad*"))
	if len(left) != 0 {
		t.Errorf("failed builds left %v", left)
	}
}
