package disk_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/osguard/osguard/disk"
	"github.com/osguard/osguard/internal/testutil"
)

// TestSetPartitionUUIDs edits both GPTs and lets sgdisk judge the result
// (-v checks the CRCs and that primary and backup agree).
func TestSetPartitionUUIDs(t *testing.T) {
	sgdisk := testutil.NeedTool(t, "sgdisk")[0]
	l := disk.Layout{
		DiskGUID: g("0f5a0000-1111-4222-8333-444444444444"),
		Partitions: []disk.Partition{
			{TypeGUID: disk.TypeUsrX86_64, UUID: g("0f5a0001-1111-4222-8333-444444444444"), Name: "usr-A", Size: 1 << 20},
			{TypeGUID: disk.TypeUsrX86_64, UUID: g("0f5a0002-1111-4222-8333-444444444444"), Name: "usr-B", Size: 1 << 20},
		},
	}
	p := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := disk.Build(f, l); err != nil {
		t.Fatal(err)
	}
	want := g("12345678-9abc-def0-1122-334455667788")
	if err := disk.SetPartitionUUIDs(f, map[int]disk.GUID{2: want}); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sgdisk, "-v", p).CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("No problems found")) {
		t.Fatalf("sgdisk -v: %v\n%s", err, out)
	}
	out, _ = exec.Command(sgdisk, "-i", "2", p).CombinedOutput()
	if !strings.Contains(string(out), "Partition unique GUID: "+strings.ToUpper(want.String())) {
		t.Errorf("sgdisk -i 2:\n%s", out)
	}
	for _, c := range []struct {
		name  string
		uuids map[int]disk.GUID
	}{
		{"taken", map[int]disk.GUID{2: g("0f5a0001-1111-4222-8333-444444444444")}},
		{"unused", map[int]disk.GUID{3: want}},
		{"out of range", map[int]disk.GUID{0: want}},
	} {
		if err := disk.SetPartitionUUIDs(f, c.uuids); err == nil {
			t.Errorf("%s: no error", c.name)
		}
	}
	// A swap in one call is fine.
	if err := disk.SetPartitionUUIDs(f, map[int]disk.GUID{1: want, 2: g("0f5a0001-1111-4222-8333-444444444444")}); err != nil {
		t.Errorf("swap: %v", err)
	}
	// A broken primary CRC is refused, not rewritten.
	f.WriteAt([]byte{0xff}, 512+16)
	if err := disk.SetPartitionUUIDs(f, map[int]disk.GUID{2: want}); err == nil {
		t.Error("a header with a bad CRC was edited")
	}
}
