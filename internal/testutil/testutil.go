// Package testutil holds helpers shared by the tests of several packages:
// finding the oracle tools and the fetched artifacts, with the rule that under
// CI a missing prerequisite fails the test instead of skipping it.
package testutil

import (
	"os"
	"os/exec"
	"testing"

	"github.com/osguard/osguard/internal/artifacts"
)

// InCI reports whether the tests run under CI (CI=true), where nothing may be skipped.
func InCI() bool { return os.Getenv("CI") == "true" }

// Missing stops the test because a prerequisite is absent: a failure under
// CI, a skip (saying why) elsewhere.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf("missing prerequisite (CI never skips): "+format, args...)
	}
	t.Skipf("skipped: "+format+" (run 'make deps')", args...)
}

// NeedTool returns the path of each named program, or stops the test via Missing.
func NeedTool(t testing.TB, names ...string) []string {
	t.Helper()
	paths := make([]string, len(names))
	for i, n := range names {
		p, err := exec.LookPath(n)
		if err != nil {
			// sbin is not always on PATH for non-login shells.
			for _, dir := range []string{"/usr/sbin/", "/sbin/"} {
				if _, err2 := os.Stat(dir + n); err2 == nil {
					p, err = dir+n, nil
					break
				}
			}
		}
		if err != nil {
			Missing(t, "tool %q not found", n)
		}
		paths[i] = p
	}
	return paths
}

// NeedFile stops the test via Missing unless path exists.
func NeedFile(t testing.TB, path string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		Missing(t, "file %s: %v", path, err)
	}
}

// NeedRoot stops the test via Missing unless it runs as root (loop devices, mounts).
func NeedRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "test needs root (loop devices or mounts)")
	}
}

// Artifacts returns the fetched Debian trixie artifacts, or stops the test via Missing.
func Artifacts(t testing.TB) *artifacts.Set {
	t.Helper()
	a, err := artifacts.Load()
	if err != nil {
		Missing(t, "%v", err)
	}
	return a
}

// MountErofs mounts the EROFS image img read-only through a loop device
// (root needed: stops the test via Missing otherwise) and unmounts it when
// the test ends. It returns the mount point.
func MountErofs(t testing.TB, img string) string {
	t.Helper()
	NeedRoot(t)
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "erofs", "-o", "loop,ro", img, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount %s: %v\n%s", img, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount: %v\n%s", err, out)
		}
	})
	return mnt
}
