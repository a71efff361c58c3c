package pcr_test

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/osguard/osguard/internal/artifacts"
	"github.com/osguard/osguard/internal/testutil"
	"github.com/osguard/osguard/pcr"
	"github.com/osguard/osguard/pe"
	"github.com/osguard/osguard/uki"
)

// systemdMeasure returns a command prefix that runs trixie's
// systemd-measure 257 on this host, through trixie's dynamic loader.
func systemdMeasure(t *testing.T, a *artifacts.Set) []string {
	t.Helper()
	root := filepath.Dir(a.SystemdBootEFIRoot) // .cache/debian/trixie/root
	bin := filepath.Join(root, "systemd/usr/lib/systemd/systemd-measure")
	ld := filepath.Join(root, "libc6/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
	for _, p := range []string{bin, ld, filepath.Join(root, "libsystemd-shared"), filepath.Join(root, "libssl3t64")} {
		if _, err := os.Stat(p); err != nil {
			testutil.Missing(t, "%s missing: run pcr/testdata/fetch-systemd-measure", p)
		}
	}
	lp := strings.Join([]string{
		filepath.Join(root, "libc6/usr/lib/x86_64-linux-gnu"),
		filepath.Join(root, "libssl3t64/usr/lib/x86_64-linux-gnu"),
		filepath.Join(root, "libsystemd-shared/usr/lib/x86_64-linux-gnu/systemd"),
	}, ":")
	return []string{ld, "--library-path", lp, bin}
}

type ukiCase struct {
	name string
	o    uki.Options
}

func ukiCases(t *testing.T, a *artifacts.Set) []ukiCase {
	t.Helper()
	stub, err := os.ReadFile(a.SystemdStub)
	if err != nil {
		t.Fatal(err)
	}
	linux, err := os.ReadFile(a.Vmlinuz)
	if err != nil {
		t.Fatal(err)
	}
	return []ukiCase{
		{"full", uki.Options{Stub: stub, Linux: linux, Initrds: [][]byte{[]byte("initrd-1"), []byte("two")}, Cmdline: "console=ttyS0", OSRelease: "ID=osguard\n", Uname: a.KernelVersion}},
		{"no-uname-no-initrd", uki.Options{Stub: stub, Linux: linux, Cmdline: "quiet", OSRelease: "ID=a\n"}},
		{"linux-only", uki.Options{Stub: stub, Linux: linux}},
	}
}

// sectionFiles writes the measured sections of img to dir, as pefile
// (Debian python3-pefile) extracts them, and returns systemd-measure's
// --NAME=FILE arguments.
func sectionFiles(t *testing.T, img []byte, dir string) []string {
	t.Helper()
	p := filepath.Join(dir, "uki.efi")
	if err := os.WriteFile(p, img, 0o644); err != nil {
		t.Fatal(err)
	}
	py := testutil.NeedTool(t, "/usr/bin/python3")[0]
	out, err := exec.Command(py, "-c", `
import sys, os, pefile
pe = pefile.PE(sys.argv[1])
for s in pe.sections:
    n = s.Name.rstrip(b"\0").decode()
    if n in (".linux", ".osrel", ".cmdline", ".initrd", ".ucode", ".splash", ".dtb", ".uname", ".sbat", ".pcrpkey"):
        f = os.path.join(sys.argv[2], n[1:])
        open(f, "wb").write(s.get_data()[:s.Misc_VirtualSize])
        print("--%s=%s" % (n[1:], f))
`, p, dir).CombinedOutput()
	if err != nil {
		t.Fatalf("pefile: %v\n%s", err, out)
	}
	return strings.Fields(string(out))
}

// TestPredictMatchesSystemdMeasure compares PredictUKI with systemd-measure
// calculate (systemd 257) over the sections python3-pefile extracts: the
// stub's value (phase path ":") and the four default phase paths.
func TestPredictMatchesSystemdMeasure(t *testing.T) {
	a := testutil.Artifacts(t)
	measure := systemdMeasure(t, a)
	for _, tc := range ukiCases(t, a) {
		t.Run(tc.name, func(t *testing.T) {
			img, err := uki.Build(tc.o)
			if err != nil {
				t.Fatal(err)
			}
			pred, err := pcr.PredictUKI(img)
			if err != nil {
				t.Fatal(err)
			}
			args := append(sectionFiles(t, img, t.TempDir()), "--bank=sha256", "--json=short", "--phase=:")
			for _, ph := range pred.Phases {
				args = append(args, "--phase="+ph.Phase)
			}
			cmd := exec.Command(measure[0], append(append(measure[1:], "calculate"), args...)...)
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("systemd-measure: %v\n%s", err, out)
			}
			var res struct {
				SHA256 []struct {
					Phase string `json:"phase"`
					PCR   int    `json:"pcr"`
					Hash  string `json:"hash"`
				} `json:"sha256"`
			}
			if err := json.Unmarshal(out, &res); err != nil {
				t.Fatalf("systemd-measure output %q: %v", out, err)
			}
			got := map[string]string{"": hex.EncodeToString(pred.PCR11)}
			for _, ph := range pred.Phases {
				got[ph.Phase] = ph.Hex
			}
			if len(res.SHA256) != len(got) {
				t.Fatalf("systemd-measure gave %d values, want %d: %s", len(res.SHA256), len(got), out)
			}
			for _, r := range res.SHA256 {
				if r.PCR != 11 || got[r.Phase] != r.Hash {
					t.Errorf("phase %q: systemd-measure %s (pcr %d), PredictUKI %s", r.Phase, r.Hash, r.PCR, got[r.Phase])
				}
			}
		})
	}
}

// TestPredictMatchesUkifyMeasure lets ukify build a UKI and compute its
// measurements itself (ukify --measure calls systemd-measure), and checks
// PredictUKI on ukify's output file against ukify's report.
func TestPredictMatchesUkifyMeasure(t *testing.T) {
	a := testutil.Artifacts(t)
	measure := systemdMeasure(t, a)
	py := testutil.NeedTool(t, "/usr/bin/python3")[0]
	dir := t.TempDir()
	tools := filepath.Join(dir, "tools")
	if err := os.Mkdir(tools, 0o755); err != nil {
		t.Fatal(err)
	}
	wrapper := "#!/bin/sh\nexec"
	for _, m := range measure {
		wrapper += " '" + m + "'"
	}
	if err := os.WriteFile(filepath.Join(tools, "systemd-measure"), []byte(wrapper+` "$@"`+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	osrel := filepath.Join(dir, "osrel")
	initrd := filepath.Join(dir, "initrd")
	os.WriteFile(osrel, []byte("ID=ukify\n"), 0o644)
	os.WriteFile(initrd, bytes.Repeat([]byte("i"), 12345), 0o644)
	out := filepath.Join(dir, "ref.efi")
	cmd := exec.Command(py, filepath.Join(a.UkifyRoot, "usr/bin/ukify"), "build", "--measure", "--tools", tools,
		"--pcr-banks", "sha256", "--stub", a.SystemdStub, "--linux", a.Vmlinuz, "--initrd", initrd,
		"--cmdline", "console=ttyS0 x=y", "--os-release", "@"+osrel, "--uname", a.KernelVersion, "--output", out)
	report, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("ukify: %v\n%s", err, report)
	}
	img, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	pred, err := pcr.PredictUKI(img)
	if err != nil {
		t.Fatal(err)
	}
	// systemd-measure prints "# PCR[11] Phase <path>" on stderr and
	// "11:sha256=<hex>" on stdout, in the same order.
	hashes := regexp.MustCompile(`11:sha256=([0-9a-f]{64})`).FindAllStringSubmatch(string(report), -1)
	if len(hashes) != len(pred.Phases) {
		t.Fatalf("ukify reported %d PCR 11 values, want %d:\n%s", len(hashes), len(pred.Phases), report)
	}
	for i, ph := range pred.Phases {
		if hashes[i][1] != ph.Hex {
			t.Errorf("phase %s: ukify %s, PredictUKI %s", ph.Phase, hashes[i][1], ph.Hex)
		}
	}
}

// TestExtendKnownAnswer checks the extend arithmetic against Python's
// hashlib: sha256(32 zero bytes || sha256("abc")).
func TestExtendKnownAnswer(t *testing.T) {
	py := testutil.NeedTool(t, "/usr/bin/python3")[0]
	out, err := exec.Command(py, "-c", `import hashlib; print(hashlib.sha256(bytes(32) + hashlib.sha256(b"abc").digest()).hexdigest())`).Output()
	if err != nil {
		t.Fatal(err)
	}
	var z pcr.Bank
	got := z.ExtendData([]byte("abc"))
	if strings.TrimSpace(string(out)) != hex.EncodeToString(got[:]) {
		t.Errorf("ExtendData = %x, hashlib = %s", got, out)
	}
}

func TestPredictErrors(t *testing.T) {
	a := testutil.Artifacts(t)
	stub, err := os.ReadFile(a.SystemdStub)
	if err != nil {
		t.Fatal(err)
	}
	im, _ := pe.Parse(stub)
	withProfile := im.Clone()
	_ = withProfile.Append(pe.NewSection{Name: ".linux", Data: []byte("k")})
	_ = withProfile.Append(pe.NewSection{Name: ".profile", Data: []byte("ID=1")})
	tests := []struct {
		name string
		in   []byte
		is   error
	}{
		{"garbage", []byte("garbage"), pe.ErrFormat},
		{"stub without .linux", stub, nil},
		{"profiles", withProfile.Bytes(), pcr.ErrProfiles},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := pcr.PredictUKI(tc.in)
			if err == nil || tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("PredictUKI: %v, want %v", err, tc.is)
			}
		})
	}
}

func FuzzPredictUKI(f *testing.F) {
	f.Add([]byte("MZ"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := pcr.PredictUKI(b)
		if err == nil && len(p.PCR11) != 32 {
			t.Fatalf("PCR11 of %d bytes", len(p.PCR11))
		}
	})
}
