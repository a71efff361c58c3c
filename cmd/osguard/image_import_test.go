package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestImageImportErrors: what `osguard image import` says before it gets to
// containerd (the VM test image.TestSignedContainers covers the import
// itself, on the node's containerd and kernel).
func TestImageImportErrors(t *testing.T) {
	dir := t.TempDir()
	notArchive := filepath.Join(dir, "notes.txt")
	os.WriteFile(notArchive, []byte("not a tar\n"), 0o644)
	emptyLayout := filepath.Join(dir, "layout")
	os.MkdirAll(emptyLayout, 0o755)
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no path", []string{"image", "import"}, 2, "accepts 1 arg"},
		{"missing", []string{"image", "import", filepath.Join(dir, "nope.tar")}, 1, "no such file"},
		{"not an archive", []string{"image", "import", notArchive}, 1, "notes.txt"},
		{"not a layout", []string{"image", "import", emptyLayout}, 1, "layout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, code := imageRunCLI(t, tc.args...)
			if code != tc.code || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, stderr %q; want exit %d and %q", code, stderr, tc.code, tc.want)
			}
		})
	}
}
