package pe_test

import (
	"encoding/binary"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/osguard/osguard/internal/testutil"
	"github.com/osguard/osguard/pe"
)

// minimalPE returns a small valid PE32+ EFI application image with one
// .text section, for tests that need no fetched artifacts.
func minimalPE() []byte {
	const fa, sa = 0x200, 0x1000
	b := make([]byte, 0x600)
	b[0], b[1] = 'M', 'Z'
	binary.LittleEndian.PutUint32(b[0x3c:], 0x80)
	copy(b[0x80:], "PE\x00\x00")
	coff := b[0x84:]
	binary.LittleEndian.PutUint16(coff[0:], 0x8664) // AMD64
	binary.LittleEndian.PutUint16(coff[2:], 1)
	binary.LittleEndian.PutUint16(coff[16:], 240) // PE32+ optional header with 16 data dirs
	binary.LittleEndian.PutUint16(coff[18:], 0x0206)
	opt := b[0x98:]
	binary.LittleEndian.PutUint16(opt[0:], 0x20b)
	binary.LittleEndian.PutUint32(opt[16:], 0x1000) // entry point
	binary.LittleEndian.PutUint32(opt[32:], sa)
	binary.LittleEndian.PutUint32(opt[36:], fa)
	binary.LittleEndian.PutUint32(opt[56:], 0x2000) // SizeOfImage
	binary.LittleEndian.PutUint32(opt[60:], 0x400)  // SizeOfHeaders
	binary.LittleEndian.PutUint16(opt[68:], 10)     // EFI application
	binary.LittleEndian.PutUint16(opt[70:], pe.IMAGE_DLLCHARACTERISTICS_NX_COMPAT)
	binary.LittleEndian.PutUint32(opt[108:], 16)
	sec := b[0x98+240:]
	copy(sec, ".text")
	binary.LittleEndian.PutUint32(sec[8:], 4)
	binary.LittleEndian.PutUint32(sec[12:], 0x1000)
	binary.LittleEndian.PutUint32(sec[16:], 0x200)
	binary.LittleEndian.PutUint32(sec[20:], 0x400)
	binary.LittleEndian.PutUint32(sec[36:], pe.IMAGE_SCN_CNT_CODE|pe.IMAGE_SCN_MEM_READ|pe.IMAGE_SCN_MEM_EXECUTE)
	copy(b[0x400:], []byte{0xc3, 0xcc, 0xcc, 0xcc})
	return b
}

// pefileOracle runs Debian's python3-pefile on path and returns its view:
// one line per section "name va vsize rawptr rawsize chars", then
// "sizeofimage N", "checksum stored computed".
func pefileOracle(t *testing.T, path string) []string {
	t.Helper()
	py := testutil.NeedTool(t, "/usr/bin/python3")[0]
	if err := exec.Command(py, "-c", "import pefile").Run(); err != nil {
		testutil.Missing(t, "python3-pefile (Debian) not importable by /usr/bin/python3")
	}
	out, err := exec.Command(py, "-c", `
import sys, pefile
pe = pefile.PE(sys.argv[1])
for w in pe.get_warnings():
    if not w.startswith("Byte 0x00 makes up"):  # a statement about content, not structure
        print("warning", w)
for s in pe.sections:
    print(s.Name.rstrip(b"\0").decode(), s.VirtualAddress, s.Misc_VirtualSize, s.PointerToRawData, s.SizeOfRawData, s.Characteristics)
print("sizeofimage", pe.OPTIONAL_HEADER.SizeOfImage)
print("checksum", pe.OPTIONAL_HEADER.CheckSum, pe.generate_checksum())
`, path).CombinedOutput()
	if err != nil {
		t.Fatalf("pefile: %v\n%s", err, out)
	}
	return strings.Split(strings.TrimSpace(string(out)), "\n")
}

func ourView(t *testing.T, b []byte) []string {
	t.Helper()
	im, err := pe.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	var l []string
	for _, s := range im.Sections {
		l = append(l, strings.Join([]string{s.Name, u(s.VirtualAddress), u(s.VirtualSize), u(s.PointerToRawData), u(s.SizeOfRawData), u(s.Characteristics)}, " "))
	}
	ck, err := pe.Checksum(b)
	if err != nil {
		t.Fatal(err)
	}
	return append(l, "sizeofimage "+u(im.SizeOfImage), "checksum "+u(im.CheckSum)+" "+u(ck))
}

func u(v uint32) string { return strconv.FormatUint(uint64(v), 10) }

func TestAppendAgainstPefile(t *testing.T) {
	inputs := map[string][]byte{"minimal": minimalPE()}
	if a := artifactsOrNil(t); a != "" {
		stub, err := os.ReadFile(a)
		if err != nil {
			t.Fatal(err)
		}
		inputs["systemd-stub"] = stub
	}
	add := []pe.NewSection{
		{Name: ".osrel", Data: []byte("ID=test\n"), Characteristics: pe.IMAGE_SCN_MEM_READ | pe.IMAGE_SCN_CNT_INITIALIZED_DATA},
		{Name: ".linux", Data: make([]byte, 70001), Characteristics: pe.IMAGE_SCN_MEM_READ | pe.IMAGE_SCN_CNT_CODE},
		{Name: ".initrd", Data: []byte{1, 2, 3}, Characteristics: pe.IMAGE_SCN_MEM_READ | pe.IMAGE_SCN_CNT_INITIALIZED_DATA},
		{Name: ".empty", Data: nil, Characteristics: pe.IMAGE_SCN_MEM_READ | pe.IMAGE_SCN_CNT_INITIALIZED_DATA},
	}
	for name, in := range inputs {
		t.Run(name, func(t *testing.T) {
			im, err := pe.Parse(in)
			if err != nil {
				t.Fatal(err)
			}
			w := im.Clone()
			for _, s := range add {
				if err := w.Append(s); err != nil {
					t.Fatal(err)
				}
			}
			out := w.Bytes()
			p := filepath.Join(t.TempDir(), "out.efi")
			if err := os.WriteFile(p, out, 0o644); err != nil {
				t.Fatal(err)
			}
			got, want := ourView(t, out), pefileOracle(t, p)
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("headers differ:\nours:\n%s\npefile:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			// The appended data is where the headers say.
			im2, err := pe.Parse(out)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range add {
				h, ok := im2.Section(s.Name)
				if !ok || string(im2.SectionData(h)) != string(s.Data) {
					t.Errorf("section %s content not found intact", s.Name)
				}
				if h.VirtualAddress%im2.SectAlign != 0 || h.PointerToRawData%im2.FileAlign != 0 {
					t.Errorf("section %s misaligned: %+v", s.Name, h)
				}
			}
			if len(in) != len(im.Bytes()) || string(in) != string(im.Bytes()) {
				t.Error("Append changed its input")
			}
		})
	}
}

// artifactsOrNil returns the fetched systemd-stub path, or "" when absent
// outside CI (the minimal image still runs).
func artifactsOrNil(t *testing.T) string {
	t.Helper()
	if testutil.InCI() {
		return testutil.Artifacts(t).SystemdStub
	}
	p := os.Getenv("SYSTEMD_STUB")
	if p == "" {
		if top, err := filepath.Abs("../.cache/debian/trixie/root/systemd-boot-efi/usr/lib/systemd/boot/efi/linuxx64.efi.stub"); err == nil {
			if _, err := os.Stat(top); err == nil {
				return top
			}
		}
		return ""
	}
	return p
}

func TestReplace(t *testing.T) {
	im, err := pe.Parse(minimalPE())
	if err != nil {
		t.Fatal(err)
	}
	w := im.Clone()
	if err := w.Replace(".text", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	h, _ := w.Section(".text")
	if got := string(w.SectionData(h)); got != "hello" || h.VirtualSize != 5 {
		t.Errorf("after Replace: %q, VirtualSize %d", got, h.VirtualSize)
	}
	if err := w.Replace(".text", make([]byte, 0x201)); err == nil {
		t.Error("Replace accepted data larger than SizeOfRawData")
	}
	if err := w.Replace(".nope", nil); err == nil {
		t.Error("Replace of a missing section succeeded")
	}
}

func TestRefusesSigned(t *testing.T) {
	b := minimalPE()
	// Security directory (index 4) of the PE32+ optional header: offset 112+8*4.
	binary.LittleEndian.PutUint32(b[0x98+112+32:], 0x300)
	binary.LittleEndian.PutUint32(b[0x98+112+36:], 8)
	im, err := pe.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := im.Clone().Append(pe.NewSection{Name: ".x", Data: []byte{1}}); !errors.Is(err, pe.ErrSigned) {
		t.Errorf("Append to a signed image: %v, want ErrSigned", err)
	}
}

func TestParseErrors(t *testing.T) {
	good := minimalPE()
	mod := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	tests := []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"no MZ", mod(func(b []byte) []byte { b[0] = 'X'; return b })},
		{"PE offset outside", mod(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[0x3c:], 0xfffffff0); return b })},
		{"no PE signature", mod(func(b []byte) []byte { b[0x80] = 'X'; return b })},
		{"bad magic", mod(func(b []byte) []byte { b[0x98] = 0; return b })},
		{"section outside", mod(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[0x98+240+20:], 0x10000); return b })},
		{"too many sections", mod(func(b []byte) []byte { binary.LittleEndian.PutUint16(b[0x86:], 200); return b })},
		{"truncated table", good[:0x98+240+20]},
		{"bad alignment", mod(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[0x98+36:], 3); return b })},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := pe.Parse(tc.in)
			if !errors.Is(err, pe.ErrFormat) {
				t.Errorf("Parse: %v, want ErrFormat", err)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add(minimalPE())
	f.Fuzz(func(t *testing.T, b []byte) {
		im, err := pe.Parse(b)
		if err != nil {
			return
		}
		for _, s := range im.Sections {
			if _, err := io.Copy(io.Discard, im.SectionReader(s)); err != nil {
				t.Fatal(err)
			}
		}
		_, _ = pe.Checksum(b)
		w := im.Clone()
		if err := w.Append(pe.NewSection{Name: ".fuzz", Data: []byte("x")}); err == nil {
			if _, err := pe.Parse(w.Bytes()); err != nil {
				t.Fatalf("re-parse after Append: %v", err)
			}
		}
	})
}

// referenceChecksum is the loaders' algorithm word by word, folding the
// carry after each addition.
func referenceChecksum(b []byte, skip int) uint32 {
	var sum uint64
	n := len(b) &^ 1
	for i := 0; i < n; i += 2 {
		if i == skip || i == skip+2 {
			continue
		}
		sum += uint64(binary.LittleEndian.Uint16(b[i:]))
		sum = (sum & 0xffff) + (sum >> 16)
	}
	if len(b)&1 == 1 {
		sum += uint64(b[len(b)-1])
		sum = (sum & 0xffff) + (sum >> 16)
	}
	sum = (sum & 0xffff) + (sum >> 16)
	return uint32(sum) + uint32(len(b))
}

func FuzzComputeChecksum(f *testing.F) {
	f.Add([]byte("MZ\xff\xff\xff\xff\xff\xff\xff\xff\x01"), 2)
	f.Add(make([]byte, 17), -2)
	f.Add([]byte{0xff, 0xff, 0x01, 0x00, 0, 0, 0, 0, 0xff}, 4)
	f.Fuzz(func(t *testing.T, b []byte, skip int) {
		if got, want := pe.ComputeChecksum(b, skip), referenceChecksum(b, skip); got != want {
			t.Fatalf("ComputeChecksum(%x, %d) = %#x, want %#x", b, skip, got, want)
		}
	})
}

// Appends after Grow, in place, give the bytes of Appends that copy.
func TestGrowAppend(t *testing.T) {
	secs := []pe.NewSection{
		{Name: ".a", Data: []byte("alpha"), Characteristics: pe.IMAGE_SCN_MEM_READ},
		{Name: ".b", Data: make([]byte, 5000), Characteristics: pe.IMAGE_SCN_MEM_READ},
		{Name: ".c", Data: []byte{1, 2, 3}, Characteristics: pe.IMAGE_SCN_MEM_READ},
	}
	build := func(grow int) []byte {
		im, err := pe.Parse(minimalPE())
		if err != nil {
			t.Fatal(err)
		}
		im = im.Clone()
		im.Grow(grow)
		for _, s := range secs {
			if err := im.Append(s); err != nil {
				t.Fatal(err)
			}
		}
		return im.Bytes()
	}
	want := build(0)
	for _, grow := range []int{1, 6000, 1 << 20} {
		if got := build(grow); string(got) != string(want) {
			t.Errorf("Grow(%d): the image differs", grow)
		}
	}
}
