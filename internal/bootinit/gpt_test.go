package bootinit

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

// TestReadGPTAgainstSgdisk writes a GPT with sgdisk (the oracle) and reads it back.
func TestReadGPTAgainstSgdisk(t *testing.T) {
	sgdisk := testutil.NeedTool(t, "sgdisk")[0]
	img := filepath.Join(t.TempDir(), "d.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Truncate(img, 64<<20)
	usrUUID := "d3f2a1b0-c9e8-d7f6-a5b4-c3d2e1f0a9b8"
	args := []string{
		"-n1:2048:+8M", "-t1:" + disk.TypeUsrX86_64.String(), "-u1:" + usrUUID, "-c1:usr-A",
		"-n2:0:+1M", "-t2:" + disk.TypeUsrX86_64Verity.String(), "-c2:usr-A-verity",
		"-n3:0:+1M", "-t3:" + disk.TypeVar.String(), "-c3:var",
		img,
	}
	if out, err := exec.Command(sgdisk, args...).CombinedOutput(); err != nil {
		t.Fatalf("sgdisk: %v\n%s", err, out)
	}
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ents, err := ReadGPT(f, 512)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 3 {
		t.Fatalf("%d entries: %+v", len(ents), ents)
	}
	if ents[0].Index != 1 || ents[0].Type != disk.TypeUsrX86_64 || ents[0].UUID.String() != usrUUID ||
		ents[0].Name != "usr-A" || ents[0].FirstLBA != 2048 || ents[0].LastLBA != 2048+8*2048-1 {
		t.Errorf("entry 1: %+v", ents[0])
	}
	if ents[2].Index != 3 || ents[2].Type != disk.TypeVar || ents[2].Name != "var" {
		t.Errorf("entry 3: %+v", ents[2])
	}
	// sgdisk -i prints the unique GUID it wrote for partition 2; ours must match.
	out, _ := exec.Command(sgdisk, "-i2", img).CombinedOutput()
	if !strings.Contains(strings.ToLower(string(out)), ents[1].UUID.String()) {
		t.Errorf("sgdisk -i2 does not show %s:\n%s", ents[1].UUID, out)
	}

	// A flipped byte in the entries must fail the CRC check.
	raw, _ := os.ReadFile(img)
	raw[2*512+60] ^= 1
	if _, err := ReadGPT(bytes.NewReader(raw), 512); err == nil || !strings.Contains(err.Error(), "CRC32") {
		t.Errorf("corrupted entries: err = %v", err)
	}
}

func FuzzReadGPT(f *testing.F) {
	f.Add(make([]byte, 4096))
	hdr := make([]byte, 2048)
	copy(hdr[512:], gptSignature)
	f.Add(hdr)
	f.Fuzz(func(t *testing.T, b []byte) {
		ReadGPT(bytes.NewReader(b), 512) // must not panic
	})
}

// TestFindUsr picks the slot by the halves of the root hash and the
// signature partition whose JSON names the same hash (A/B).
func TestFindUsr(t *testing.T) {
	hashA := bytes.Repeat([]byte{0xaa}, 16)
	hashA = append(hashA, bytes.Repeat([]byte{0xab}, 16)...)
	hashB := bytes.Repeat([]byte{0xbb}, 32)
	sigJSON := func(h []byte) []byte {
		return append([]byte(`{"rootHash":"`+hexs(h)+`","signature":"AAEC"}`), make([]byte, 100)...)
	}
	g := func(b []byte) (u disk.GUID) { copy(u[:], b); return }
	parts := []Partition{
		{Dev: "/dev/vda1", Disk: "/dev/vda", GPTEntry: GPTEntry{Index: 1, Type: disk.TypeUsrX86_64, UUID: g(hashA[:16])}},
		{Dev: "/dev/vda2", Disk: "/dev/vda", GPTEntry: GPTEntry{Index: 2, Type: disk.TypeUsrX86_64Verity, UUID: g(hashA[16:])}},
		{Dev: "/dev/vda3", Disk: "/dev/vda", GPTEntry: GPTEntry{Index: 3, Type: disk.TypeUsrX86_64VeritySig}},
		{Dev: "/dev/vda4", Disk: "/dev/vda", GPTEntry: GPTEntry{Index: 4, Type: disk.TypeUsrX86_64, UUID: g(hashB[:16])}},
		{Dev: "/dev/vda5", Disk: "/dev/vda", GPTEntry: GPTEntry{Index: 5, Type: disk.TypeUsrX86_64Verity, UUID: g(hashB[16:])}},
		{Dev: "/dev/vda6", Disk: "/dev/vda", GPTEntry: GPTEntry{Index: 6, Type: disk.TypeUsrX86_64VeritySig}},
	}
	content := map[string][]byte{"/dev/vda3": sigJSON(hashA), "/dev/vda6": sigJSON(hashB)}
	read := func(p Partition) ([]byte, error) { return content[p.Dev], nil }
	for _, c := range []struct {
		hash          []byte
		usr, ver, sig string
	}{{hashA, "/dev/vda1", "/dev/vda2", "/dev/vda3"}, {hashB, "/dev/vda4", "/dev/vda5", "/dev/vda6"}} {
		s, err := FindUsr(parts, c.hash, read)
		if err != nil {
			t.Fatal(err)
		}
		if s.Usr.Dev != c.usr || s.Verity.Dev != c.ver || s.Sig.Dev != c.sig {
			t.Errorf("hash %x: got %s %s %s", c.hash, s.Usr.Dev, s.Verity.Dev, s.Sig.Dev)
		}
	}
	other := bytes.Repeat([]byte{0xcc}, 32)
	if _, err := FindUsr(parts, other, read); err == nil {
		t.Error("a root hash of another build found a slot")
	}
	// The same slot on a second disk: ambiguous, refused.
	dup := append(append([]Partition{}, parts...), Partition{Dev: "/dev/vdb1", Disk: "/dev/vdb", GPTEntry: parts[0].GPTEntry})
	if _, err := FindUsr(dup, hashA, read); err == nil || !strings.Contains(err.Error(), "two usr partitions") {
		t.Errorf("duplicate usr partitions: err = %v", err)
	}
	// Signature JSON for another hash: no slot.
	content["/dev/vda3"] = sigJSON(hashB)
	if _, err := FindUsr(parts, hashA, read); err == nil || !strings.Contains(err.Error(), "no usr-verity-sig") {
		t.Errorf("mismatched signature JSON: err = %v", err)
	}
}

func hexs(b []byte) string {
	const digits = "0123456789abcdef"
	var s strings.Builder
	for _, c := range b {
		s.WriteByte(digits[c>>4])
		s.WriteByte(digits[c&15])
	}
	return s.String()
}
