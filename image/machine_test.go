package image_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/osguard/osguard/image"
	"github.com/osguard/osguard/internal/testutil"
)

// TestPrepareMachine: the machine state is made once, kept across runs,
// refused for a rebuilt disk, and made again with fresh; the built files
// are never written.
func TestPrepareMachine(t *testing.T) {
	testutil.NeedTool(t, "qemu-img")
	dir := t.TempDir()
	disk, vars := filepath.Join(dir, image.DiskFile), filepath.Join(dir, image.VarsFile)
	head := make([]byte, 1<<20)
	for i := range head {
		head[i] = byte(i)
	}
	os.WriteFile(disk, head, 0o644)
	os.WriteFile(vars, []byte("vars"), 0o644)
	m, err := image.PrepareMachine(disk, vars, false)
	if err != nil {
		t.Fatal(err)
	}
	if !m.Created || m.Dir != filepath.Join(dir, "machine") {
		t.Fatalf("first: %+v", m)
	}
	for _, p := range []string{m.Disk, m.Vars, m.TPM} {
		if _, err := os.Stat(p); err != nil {
			t.Error(err)
		}
	}
	os.WriteFile(m.Vars, []byte("written by the firmware"), 0o644)
	if again, err := image.PrepareMachine(disk, vars, false); err != nil || again.Created {
		t.Fatalf("second: %+v, %v", again, err)
	}
	if b, _ := os.ReadFile(m.Vars); string(b) != "written by the firmware" {
		t.Error("the machine's VARS were replaced")
	}
	head[600] ^= 1 // another build: another GPT
	os.WriteFile(disk, head, 0o644)
	if _, err := image.PrepareMachine(disk, vars, false); err == nil || !strings.Contains(err.Error(), "--fresh") {
		t.Fatalf("rebuilt disk: %v", err)
	}
	if m, err := image.PrepareMachine(disk, vars, true); err != nil || !m.Created {
		t.Fatalf("fresh: %+v, %v", m, err)
	}
	if b, _ := os.ReadFile(vars); string(b) != "vars" {
		t.Error("the built VARS changed")
	}
}
