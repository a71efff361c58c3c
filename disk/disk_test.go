package disk_test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/osguard/osguard/disk"
	"github.com/osguard/osguard/internal/testutil"
)

func g(s string) disk.GUID { return disk.MustGUID(s) }

func espFiles() []disk.File {
	files := []disk.File{
		{Path: `\EFI\BOOT\BOOTX64.EFI`, Data: bytes.Repeat([]byte("uki!"), 300000)},
		{Path: `/loader/loader.conf`, Data: []byte("timeout 0\n")},
		{Path: `EFI/Linux/osguard-6.12.117+deb13-cloud-amd64.efi`, Data: []byte("long name")},
		{Path: `EFI/empty`, Data: nil},
		{Path: `EFI/exact`, Data: bytes.Repeat([]byte{1}, 512)},
		{Path: `EFI/Ünïcode name.txt`, Data: []byte("utf16")},
	}
	// Enough entries to need several directory clusters.
	for i := range 40 {
		files = append(files, disk.File{Path: fmt.Sprintf(`\loader\keys\auto\file-number-%02d.auth`, i), Data: []byte{byte(i)}})
	}
	return files
}

// TestESPOracles formats an ESP and checks it with fsck.vfat -n (no
// repairs needed), mdir and mcopy (every file reads back byte-exact).
func TestESPOracles(t *testing.T) {
	tools := testutil.NeedTool(t, "fsck.vfat", "mcopy", "mdir")
	for _, tc := range []struct {
		name string
		o    disk.FATOptions
	}{
		{"auto-size", disk.FATOptions{VolumeID: 0xDEADBEEF}},
		{"300MiB-8-sectors-per-cluster", disk.FATOptions{Size: 300 << 20, Label: "osguard", VolumeID: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files := espFiles()
			img, err := disk.ESP(tc.o, files...)
			if err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(t.TempDir(), "esp.img")
			if err := os.WriteFile(p, img, 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(tools[0], "-n", "-v", p).CombinedOutput()
			if err != nil {
				t.Fatalf("fsck.vfat: %v\n%s", err, out)
			}
			if bytes.Contains(out, []byte("would")) || bytes.Contains(out, []byte("differ")) {
				t.Errorf("fsck.vfat wants repairs:\n%s", out)
			}
			if !bytes.Contains(out, []byte("32 bit entries")) {
				t.Errorf("not FAT32:\n%s", out)
			}
			env := append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
			label := "ESP"
			if tc.o.Label != "" {
				label = strings.ToUpper(tc.o.Label)
			}
			mdir := exec.Command(tools[2], "-i", p, "::/")
			mdir.Env = env
			if out, err := mdir.CombinedOutput(); err != nil || !bytes.Contains(out, []byte("Volume in drive : is "+label)) {
				t.Errorf("mdir: %v\n%s", err, out)
			}
			for _, f := range files {
				mp := "::/" + strings.ReplaceAll(strings.TrimLeft(f.Path, `\/`), `\`, "/")
				dst := filepath.Join(t.TempDir(), "f")
				c := exec.Command(tools[1], "-n", "-i", p, mp, dst)
				c.Env = env
				if out, err := c.CombinedOutput(); err != nil {
					t.Errorf("mcopy %s: %v\n%s", mp, err, out)
					continue
				}
				got, _ := os.ReadFile(dst)
				if !bytes.Equal(got, f.Data) {
					t.Errorf("%s: read back %d bytes, wrote %d", f.Path, len(got), len(f.Data))
				}
			}
		})
	}
}

// TestGPTSgdisk builds a DPS disk and checks it with sgdisk -v and -i.
func TestGPTSgdisk(t *testing.T) {
	sgdisk := testutil.NeedTool(t, "sgdisk")[0]
	esp, err := disk.ESP(disk.FATOptions{VolumeID: 7}, disk.File{Path: `\EFI\BOOT\BOOTX64.EFI`, Data: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	usr := bytes.Repeat([]byte("usr"), 1<<20)
	l := disk.Layout{
		DiskGUID: g("0f5a0000-1111-4222-8333-444444444444"),
		Partitions: []disk.Partition{
			{TypeGUID: disk.TypeESP, UUID: g("0f5a0001-1111-4222-8333-444444444444"), Name: "esp", Content: bytes.NewReader(esp), ContentSize: int64(len(esp))},
			{TypeGUID: disk.TypeUsrX86_64, UUID: g("0f5a0002-1111-4222-8333-444444444444"), Name: "usr-A", Attributes: disk.AttrReadOnly, Content: bytes.NewReader(usr), ContentSize: int64(len(usr))},
			{TypeGUID: disk.TypeUsrX86_64Verity, UUID: g("0f5a0003-1111-4222-8333-444444444444"), Name: "usr-A-verity", Size: 1 << 20, Attributes: disk.AttrReadOnly},
			{TypeGUID: disk.TypeUsrX86_64VeritySig, UUID: g("0f5a0004-1111-4222-8333-444444444444"), Name: "usr-A-verity-sig", Size: 16 << 10},
			{TypeGUID: disk.TypeVar, UUID: g("0f5a0005-1111-4222-8333-444444444444"), Name: "var", Size: 5 << 20, Attributes: disk.AttrGrowFS},
		},
	}
	p := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	placed, err := disk.Build(f, l)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sgdisk, "-v", p).CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("No problems found")) {
		t.Fatalf("sgdisk -v: %v\n%s", err, out)
	}
	out, _ = exec.Command(sgdisk, "-p", p).CombinedOutput()
	if !bytes.Contains(out, []byte("Disk identifier (GUID): 0F5A0000-1111-4222-8333-444444444444")) {
		t.Errorf("sgdisk -p: disk GUID not found:\n%s", out)
	}
	for i, pl := range placed {
		out, err := exec.Command(sgdisk, "-i", fmt.Sprint(i+1), p).CombinedOutput()
		if err != nil {
			t.Fatalf("sgdisk -i: %v\n%s", err, out)
		}
		s := string(out)
		want := []string{
			"Partition GUID code: " + strings.ToUpper(pl.TypeGUID.String()),
			"Partition unique GUID: " + strings.ToUpper(pl.UUID.String()),
			fmt.Sprintf("First sector: %d ", pl.FirstLBA),
			fmt.Sprintf("Last sector: %d ", pl.LastLBA),
			fmt.Sprintf("Attribute flags: %016x", pl.Attributes),
			"Partition name: '" + pl.Name + "'",
		}
		for _, w := range want {
			if !strings.Contains(s, w) {
				t.Errorf("partition %d: sgdisk lacks %q:\n%s", i+1, w, s)
			}
		}
		if pl.FirstLBA%2048 != 0 {
			t.Errorf("partition %d not 1 MiB aligned", i+1)
		}
	}
	// The ESP inside the disk is readable at its offset by mtools.
	if mdir, err := exec.LookPath("mdir"); err == nil {
		c := exec.Command(mdir, "-i", fmt.Sprintf("%s@@%d", p, placed[0].Offset()), "::/EFI/BOOT")
		c.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
		if out, err := c.CombinedOutput(); err != nil || !regexp.MustCompile(`BOOTX64\s+EFI\s+1 `).Match(out) {
			t.Errorf("mdir on the disk's ESP: %v\n%s", err, out)
		}
	}
	// Content landed where the table says.
	img, _ := os.ReadFile(p)
	if !bytes.Equal(img[placed[1].Offset():placed[1].Offset()+int64(len(usr))], usr) {
		t.Error("usr content not at its partition offset")
	}
}

// TestReproducible: the same inputs give the same bytes.
func TestReproducible(t *testing.T) {
	build := func() [32]byte {
		esp, err := disk.ESP(disk.FATOptions{VolumeID: 42}, espFiles()...)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(t.TempDir(), "d.img")
		f, _ := os.Create(p)
		_, err = disk.Build(f, disk.Layout{DiskGUID: g("00000000-0000-4000-8000-000000000001"), Partitions: []disk.Partition{
			{TypeGUID: disk.TypeESP, UUID: g("00000000-0000-4000-8000-000000000002"), Name: "esp", Content: bytes.NewReader(esp), ContentSize: int64(len(esp))},
		}})
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(p)
		return sha256.Sum256(b)
	}
	if a, b := build(), build(); a != b {
		t.Errorf("two builds differ: %x %x", a, b)
	}
}

func TestErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files []disk.File
		o     disk.FATOptions
	}{
		{"too small for FAT32", nil, disk.FATOptions{Size: 16 << 20}},
		{"not a sector multiple", nil, disk.FATOptions{Size: 40<<20 + 1}},
		{"file twice", []disk.File{{Path: "/A"}, {Path: "/a"}}, disk.FATOptions{}},
		{"file and dir", []disk.File{{Path: "/A"}, {Path: "/A/B"}}, disk.FATOptions{}},
		{"bad name", []disk.File{{Path: "/a:b"}}, disk.FATOptions{}},
		{"does not fit", []disk.File{{Path: "/big", Data: make([]byte, 41<<20)}}, disk.FATOptions{Size: 40 << 20}},
		{"long label", nil, disk.FATOptions{Label: "much too long label"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := disk.ESP(tc.o, tc.files...); err == nil {
				t.Error("ESP succeeded")
			}
		})
	}
	for _, tc := range []struct {
		name string
		l    disk.Layout
	}{
		{"no disk GUID", disk.Layout{}},
		{"no partition UUID", disk.Layout{DiskGUID: g("00000000-0000-4000-8000-000000000001"), Partitions: []disk.Partition{{TypeGUID: disk.TypeESP}}}},
		{"UUID twice", disk.Layout{DiskGUID: g("00000000-0000-4000-8000-000000000001"), Partitions: []disk.Partition{
			{TypeGUID: disk.TypeESP, UUID: g("00000000-0000-4000-8000-000000000002")}, {TypeGUID: disk.TypeVar, UUID: g("00000000-0000-4000-8000-000000000002")}}}},
		{"content over size", disk.Layout{DiskGUID: g("00000000-0000-4000-8000-000000000001"), Partitions: []disk.Partition{
			{TypeGUID: disk.TypeVar, UUID: g("00000000-0000-4000-8000-000000000002"), Size: 1, Content: bytes.NewReader([]byte("ab")), ContentSize: 2}}}},
		{"disk too small", disk.Layout{DiskGUID: g("00000000-0000-4000-8000-000000000001"), Size: 1 << 20, Partitions: []disk.Partition{
			{TypeGUID: disk.TypeVar, UUID: g("00000000-0000-4000-8000-000000000002"), Size: 1}}}},
		{"long name", disk.Layout{DiskGUID: g("00000000-0000-4000-8000-000000000001"), Partitions: []disk.Partition{
			{TypeGUID: disk.TypeVar, UUID: g("00000000-0000-4000-8000-000000000002"), Name: strings.Repeat("n", 37)}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := os.Create(filepath.Join(t.TempDir(), "d"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := disk.Build(f, tc.l); err == nil {
				t.Error("Build succeeded")
			}
		})
	}
	if _, err := disk.ParseGUID("not-a-guid"); err == nil {
		t.Error("ParseGUID accepted garbage")
	}
}
