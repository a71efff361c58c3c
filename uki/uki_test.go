package uki_test

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/osguard/osguard/internal/artifacts"
	"github.com/osguard/osguard/internal/testutil"
	"github.com/osguard/osguard/pe"
	"github.com/osguard/osguard/secureboot"
	"github.com/osguard/osguard/uki"
)

// ukify returns the command line to run trixie's ukify with the host's
// Debian python3 (which has python3-pefile).
func ukify(t *testing.T, a *artifacts.Set) []string {
	t.Helper()
	py := testutil.NeedTool(t, "/usr/bin/python3")[0]
	if err := exec.Command(py, "-c", "import pefile").Run(); err != nil {
		testutil.Missing(t, "python3-pefile (Debian) not importable by /usr/bin/python3")
	}
	script := filepath.Join(a.UkifyRoot, "usr/bin/ukify")
	testutil.NeedFile(t, script)
	return []string{py, script}
}

type inputs struct {
	name      string
	initrds   [][]byte
	cmdline   string
	osrel     string
	uname     string
	sbat      []byte
	wantNoNX  bool
	skipUkify bool
}

func cases() []inputs {
	return []inputs{
		{name: "one-initrd", initrds: [][]byte{bytes.Repeat([]byte("A"), 1001)}, cmdline: "console=ttyS0 panic=-1", osrel: "ID=osguard\nNAME=\"osguard test\"\n", uname: "6.12.117+deb13-cloud-amd64"},
		{name: "three-initrds-unaligned", initrds: [][]byte{[]byte("a"), bytes.Repeat([]byte{7}, 4096), []byte("xyz12")}, cmdline: "usrhash=0123 ro", osrel: "ID=x\n", uname: "6.12"},
		{name: "no-initrd-own-sbat", cmdline: "quiet", osrel: "ID=y\n", uname: "6.12",
			sbat: []byte("sbat,1,SBAT Version,sbat,1,https://github.com/rhboot/shim/blob/main/SBAT.md\nosguard,1,osguard,osguard,1,https://example.invalid/\n")},
		{name: "big-initrd", initrds: [][]byte{bytes.Repeat([]byte{0x5a}, 3<<20+17)}, cmdline: "a b c", osrel: "ID=z\n", uname: "6.12.117"},
	}
}

func buildBoth(t *testing.T, a *artifacts.Set, tc inputs) (ours, ref []byte) {
	t.Helper()
	stub, err := os.ReadFile(a.SystemdStub)
	if err != nil {
		t.Fatal(err)
	}
	linux, err := os.ReadFile(a.Vmlinuz)
	if err != nil {
		t.Fatal(err)
	}
	ours, err = uki.Build(uki.Options{Stub: stub, Linux: linux, Initrds: tc.initrds, Cmdline: tc.cmdline, OSRelease: tc.osrel, Uname: tc.uname, SBAT: tc.sbat})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	args := append(ukify(t, a), "build", "--stub", a.SystemdStub, "--linux", a.Vmlinuz,
		"--cmdline", tc.cmdline, "--uname", tc.uname, "--os-release", "@"+write(t, dir, "osrel", []byte(tc.osrel)),
		"--output", filepath.Join(dir, "ref.efi"))
	for i, ir := range tc.initrds {
		args = append(args, "--initrd", write(t, dir, "initrd"+string(rune('0'+i)), ir))
	}
	if tc.sbat != nil {
		args = append(args, "--sbat", "@"+write(t, dir, "sbat", tc.sbat))
	}
	cmd := exec.Command(args[0], args[1:]...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ukify: %v\n%s", err, out)
	}
	ref, err = os.ReadFile(filepath.Join(dir, "ref.efi"))
	if err != nil {
		t.Fatal(err)
	}
	return ours, ref
}

func write(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestBuildMatchesUkify builds the same UKI with uki.Build and with
// trixie's ukify 257. The files must be identical except the PE CheckSum,
// which ukify leaves 0 and we compute.
func TestBuildMatchesUkify(t *testing.T) {
	a := testutil.Artifacts(t)
	for _, tc := range cases() {
		t.Run(tc.name, func(t *testing.T) {
			ours, ref := buildBoth(t, a, tc)
			if len(ours) != len(ref) {
				t.Fatalf("size: ours %d, ukify %d", len(ours), len(ref))
			}
			im, err := pe.Parse(ours)
			if err != nil {
				t.Fatal(err)
			}
			rim, err := pe.Parse(ref)
			if err != nil {
				t.Fatal(err)
			}
			if rim.CheckSum != 0 {
				t.Errorf("ukify wrote CheckSum %#x; expected 0", rim.CheckSum)
			}
			ck, _ := pe.Checksum(ours)
			if im.CheckSum != ck || ck == 0 {
				t.Errorf("our CheckSum %#x, computed %#x", im.CheckSum, ck)
			}
			// Blank our checksum field and compare everything else.
			off := int(binary.LittleEndian.Uint32(ours[0x3c:])) + 4 + 20 + 64
			c := bytes.Clone(ours)
			binary.LittleEndian.PutUint32(c[off:], 0)
			if !bytes.Equal(c, ref) {
				for i := range c {
					if c[i] != ref[i] {
						t.Fatalf("first difference from ukify at byte %#x", i)
					}
				}
			}
			var names []string
			for _, s := range im.Sections {
				names = append(names, s.Name)
			}
			t.Logf("sections: %s", strings.Join(names, " "))
		})
	}
}

// TestPefileSeesSections: Debian's python3-pefile parses our UKI without
// warnings, finds every section with our sizes, and agrees on the checksum.
func TestPefileSeesSections(t *testing.T) {
	a := testutil.Artifacts(t)
	tc := cases()[1]
	stub, _ := os.ReadFile(a.SystemdStub)
	linux, _ := os.ReadFile(a.Vmlinuz)
	img, err := uki.Build(uki.Options{Stub: stub, Linux: linux, Initrds: tc.initrds, Cmdline: tc.cmdline, OSRelease: tc.osrel, Uname: tc.uname})
	if err != nil {
		t.Fatal(err)
	}
	p := write(t, t.TempDir(), "uki.efi", img)
	py := ukify(t, a)[0]
	out, err := exec.Command(py, "-c", `
import sys, hashlib, pefile
pe = pefile.PE(sys.argv[1])
for w in pe.get_warnings():
    if not w.startswith("Byte 0x00 makes up"):
        print("warning", w)
for s in pe.sections:
    print(s.Name.rstrip(b"\0").decode(), s.Misc_VirtualSize, hashlib.sha256(s.get_data()[:s.Misc_VirtualSize]).hexdigest())
print("checksum", pe.OPTIONAL_HEADER.CheckSum == pe.generate_checksum())
`, p).CombinedOutput()
	if err != nil {
		t.Fatalf("pefile: %v\n%s", err, out)
	}
	info, err := uki.Inspect(bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, s := range info.Sections {
		want = append(want, s.Name+" "+itoa(s.Size)+" "+s.SHA256)
	}
	want = append(want, "checksum True")
	if got := strings.TrimSpace(string(out)); got != strings.Join(want, "\n") {
		t.Errorf("pefile sees:\n%s\nInspect says:\n%s", got, strings.Join(want, "\n"))
	}
	for _, n := range []string{".osrel", ".cmdline", ".uname", ".linux", ".initrd", ".sbat"} {
		if !strings.Contains(string(out), n+" ") {
			t.Errorf("pefile does not list %s", n)
		}
	}
}

func itoa(v uint32) string { return strconv.FormatUint(uint64(v), 10) }

// TestSignedUKI signs a UKI with a db key and checks it with sbverify and
// osslsigncode; a modified copy must be rejected by both and by VerifyPE.
func TestSignedUKI(t *testing.T) {
	a := testutil.Artifacts(t)
	tools := testutil.NeedTool(t, "sbverify", "osslsigncode")
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	if err := secureboot.GenerateKeys(keys, secureboot.KeygenOptions{}); err != nil {
		t.Fatal(err)
	}
	h, err := secureboot.LoadHierarchy(keys)
	if err != nil {
		t.Fatal(err)
	}
	stub, _ := os.ReadFile(a.SystemdStub)
	linux, _ := os.ReadFile(a.Vmlinuz)
	img, err := uki.Build(uki.Options{Stub: stub, Linux: linux, Initrds: [][]byte{[]byte("070701")}, Cmdline: "x", OSRelease: "ID=s\n"})
	if err != nil {
		t.Fatal(err)
	}
	signed, err := secureboot.SignPE(img, h.DB.Key, h.DB.Cert)
	if err != nil {
		t.Fatal(err)
	}
	info, err := uki.Inspect(bytes.NewReader(signed))
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Signers) != 1 || !strings.Contains(info.Signers[0].Subject, h.DB.Cert.Subject.CommonName) {
		t.Errorf("Inspect signers = %+v", info.Signers)
	}
	if info.Checksum != info.ComputedChecksum {
		t.Errorf("signed UKI checksum stored %#x, computed %#x", info.Checksum, info.ComputedChecksum)
	}
	tampered := bytes.Clone(signed)
	s, _ := mustParse(t, signed).Section(".cmdline")
	tampered[s.PointerToRawData] ^= 1
	dbCrt := filepath.Join(keys, "db.crt")
	for _, tc := range []struct {
		name string
		img  []byte
		ok   bool
	}{{"signed", signed, true}, {"tampered", tampered, false}, {"unsigned", img, false}} {
		t.Run(tc.name, func(t *testing.T) {
			p := write(t, t.TempDir(), "uki.efi", tc.img)
			sb := exec.Command(tools[0], "--cert", dbCrt, p)
			sbOut, sbErr := sb.CombinedOutput()
			ossl := exec.Command(tools[1], "verify", "-CAfile", dbCrt, "-in", p)
			osOut, osErr := ossl.CombinedOutput()
			vErr := secureboot.VerifyPE(tc.img, h.DB.Cert)
			if (sbErr == nil) != tc.ok {
				t.Errorf("sbverify: %v\n%s", sbErr, sbOut)
			}
			if (osErr == nil) != tc.ok {
				t.Errorf("osslsigncode verify: %v\n%s", osErr, osOut)
			}
			if (vErr == nil) != tc.ok {
				t.Errorf("VerifyPE: %v", vErr)
			}
		})
	}
}

func mustParse(t *testing.T, b []byte) *pe.Image {
	t.Helper()
	im, err := pe.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	return im
}

func TestBuildErrors(t *testing.T) {
	a := testutil.Artifacts(t)
	stub, _ := os.ReadFile(a.SystemdStub)
	linux, _ := os.ReadFile(a.Vmlinuz)
	tests := []struct {
		name string
		o    uki.Options
	}{
		{"stub not PE", uki.Options{Stub: []byte("nope"), Linux: linux}},
		{"linux not PE", uki.Options{Stub: stub, Linux: []byte("\x1f\x8b gzip")}},
		{"sbat without header", uki.Options{Stub: stub, Linux: linux, SBAT: []byte("foo,1,x\n")}},
		{"sbat too large for the stub's section", uki.Options{Stub: stub, Linux: linux,
			SBAT: []byte("sbat,1,SBAT Version,sbat,1,x\n" + strings.Repeat("e,1,e,e,1,https://example.invalid/\n", 20))}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := uki.Build(tc.o); err == nil {
				t.Error("Build succeeded")
			} else {
				t.Log(err)
			}
		})
	}
	// A UKI cannot be a stub again.
	img, err := uki.Build(uki.Options{Stub: stub, Linux: linux})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := uki.Build(uki.Options{Stub: img, Linux: linux}); err == nil {
		t.Error("Build accepted a UKI as stub")
	}
}

func TestJoinInitrds(t *testing.T) {
	got := uki.JoinInitrds([][]byte{[]byte("a"), []byte("bcdef"), []byte("1234")})
	want := "a\x00\x00\x00bcdef\x00\x00\x001234"
	if string(got) != want {
		t.Errorf("JoinInitrds = %q, want %q", got, want)
	}
	if got := uki.JoinInitrds([][]byte{[]byte("abc")}); string(got) != "abc" {
		t.Errorf("one initrd changed: %q", got)
	}
}

func FuzzInspect(f *testing.F) {
	f.Add([]byte("MZ"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = uki.Inspect(bytes.NewReader(b))
	})
}
