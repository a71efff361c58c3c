package secureboot_test

import (
	"bytes"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/osguard/osguard/internal/testutil"
	"github.com/osguard/osguard/secureboot"
)

// peInputs are the PE images the Authenticode tests sign: Debian trixie's
// systemd-stub 257 (unsigned) and the Debian-signed 6.12 kernel.
func peInputs(t *testing.T) map[string]string {
	art := testutil.Artifacts(t)
	return map[string]string{"systemd-stub": art.SystemdStub, "vmlinuz": art.Vmlinuz}
}

// oracles runs sbverify and osslsigncode on file against cert and returns
// whether each accepted it, plus osslsigncode's output.
func oracles(t *testing.T, file, certPEM string) (sbOK, osslOK bool, osslOut string) {
	t.Helper()
	sb := exec.Command("sbverify", "--cert", certPEM, file)
	sbOut, err := sb.CombinedOutput()
	sbOK = err == nil
	if sbOK != strings.Contains(string(sbOut), "Signature verification OK") {
		t.Errorf("sbverify exit status and output disagree: %v\n%s", err, sbOut)
	}
	o := exec.Command("osslsigncode", "verify", "-in", file, "-CAfile", certPEM)
	out, err := o.CombinedOutput()
	osslOK = err == nil && strings.Contains(string(out), "Signature verification: ok")
	return sbOK, osslOK, string(out)
}

func writeTemp(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// sectionOffset returns the file offset of the middle of the largest section.
func sectionMiddle(t *testing.T, b []byte) int {
	pe := int(binary.LittleEndian.Uint32(b[0x3c:]))
	n := int(binary.LittleEndian.Uint16(b[pe+6:]))
	tbl := pe + 24 + int(binary.LittleEndian.Uint16(b[pe+20:]))
	best, bestSize := 0, 0
	for i := range n {
		h := b[tbl+40*i:]
		if s := int(binary.LittleEndian.Uint32(h[16:])); s > bestSize {
			best, bestSize = int(binary.LittleEndian.Uint32(h[20:])), s
		}
	}
	return best + bestSize/2
}

func TestSignPEOracles(t *testing.T) {
	testutil.NeedTool(t, "sbverify", "osslsigncode")
	h := loadTestKeys(t)
	dbPEM := filepath.Join(testKeysDir, "db.crt")
	kekPEM := filepath.Join(testKeysDir, "KEK.crt")
	for name, path := range peInputs(t) {
		t.Run(name, func(t *testing.T) {
			in, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			signed, err := secureboot.SignPE(in, h.DB.Key, h.DB.Cert)
			if err != nil {
				t.Fatal(err)
			}
			again, _ := secureboot.SignPE(in, h.DB.Key, h.DB.Cert)
			if !bytes.Equal(signed, again) {
				t.Error("SignPE is not reproducible")
			}
			// In place, with room for the signature or without, and over an
			// old signature, the bytes are SignPE's.
			for _, src := range [][]byte{in, signed} {
				for _, room := range []int{0, secureboot.CertTableRoom} {
					buf := append(make([]byte, 0, len(src)+room), src...)
					inPlace, err := secureboot.SignPEInPlace(buf, h.DB.Key, h.DB.Cert)
					if err != nil || !bytes.Equal(inPlace, signed) {
						t.Errorf("SignPEInPlace with %d bytes of room differs from SignPE (%v)", room, err)
					}
				}
			}
			f := writeTemp(t, name+".signed", signed)

			// Accepted by both oracles and by VerifyPE.
			sbOK, osslOK, osslOut := oracles(t, f, dbPEM)
			if !sbOK || !osslOK {
				t.Errorf("signed file: sbverify ok=%v, osslsigncode ok=%v\n%s", sbOK, osslOK, osslOut)
			}
			if err := secureboot.VerifyPE(signed, h.DB.Cert); err != nil {
				t.Errorf("VerifyPE: %v", err)
			}
			// The checksum and digest agree with osslsigncode's.
			stored, computed, err := secureboot.PEChecksum(signed)
			if err != nil || stored != computed {
				t.Errorf("checksum stored %#x computed %#x (%v)", stored, computed, err)
			}
			if want := fmt.Sprintf("PE checksum   : %08X", stored); !strings.Contains(osslOut, want) || strings.Contains(osslOut, "invalid PE checksum") {
				t.Errorf("osslsigncode disagrees on the checksum, want %q:\n%s", want, osslOut)
			}
			digest, err := secureboot.PEDigest(signed)
			if err != nil {
				t.Fatal(err)
			}
			if want := "Calculated message digest : " + strings.ToUpper(hex.EncodeToString(digest)); !strings.Contains(osslOut, want) {
				t.Errorf("osslsigncode computed another digest, want %q:\n%s", want, osslOut)
			}
			if d2, _ := secureboot.PEDigest(in); name == "systemd-stub" && bytes.Equal(d2, digest) {
				t.Log("digest of the padded image equals the input's (input was 8-byte aligned)")
			}
			// Exactly one signer: ours (an old signature was replaced).
			signers, err := secureboot.Signers(signed)
			if err != nil || len(signers) != 1 || !signers[0].Equal(h.DB.Cert) {
				t.Errorf("Signers = %v, %v", signers, err)
			}
			resigned, err := secureboot.SignPE(signed, h.DB.Key, h.DB.Cert)
			if err != nil || !bytes.Equal(resigned, signed) {
				t.Errorf("re-signing a signed file changed it (%v)", err)
			}

			// Signed by KEK: valid, but not made by db.
			byKEK, err := secureboot.SignPE(in, h.KEK.Key, h.KEK.Cert)
			if err != nil {
				t.Fatal(err)
			}
			if sbOK, _, _ := oracles(t, writeTemp(t, name+".kek", byKEK), dbPEM); sbOK {
				t.Error("sbverify --cert db.crt accepted a KEK signature")
			}
			if sbOK, osslOK, _ := oracles(t, writeTemp(t, name+".kek2", byKEK), kekPEM); !sbOK || !osslOK {
				t.Error("oracles rejected a KEK signature checked against KEK")
			}
			if err := secureboot.VerifyPE(byKEK, h.DB.Cert); !errors.Is(err, secureboot.ErrWrongSigner) {
				t.Errorf("VerifyPE(KEK-signed, db) = %v, want ErrWrongSigner", err)
			}

			// One byte changed in a section after signing.
			mod := bytes.Clone(signed)
			mod[sectionMiddle(t, mod)] ^= 0x40
			sbOK, osslOK, _ = oracles(t, writeTemp(t, name+".mod", mod), dbPEM)
			if sbOK || osslOK {
				t.Errorf("modified file: sbverify ok=%v, osslsigncode ok=%v", sbOK, osslOK)
			}
			if err := secureboot.VerifyPE(mod, h.DB.Cert); !errors.Is(err, secureboot.ErrDigestMismatch) {
				t.Errorf("VerifyPE(modified) = %v, want ErrDigestMismatch", err)
			}
			// A changed header byte outside the excluded fields.
			mod = bytes.Clone(signed)
			mod[0x20] ^= 1 // e_res, in the DOS header
			if err := secureboot.VerifyPE(mod, h.DB.Cert); !errors.Is(err, secureboot.ErrDigestMismatch) {
				t.Errorf("VerifyPE(header modified) = %v, want ErrDigestMismatch", err)
			}
			// A corrupted signature value.
			mod = bytes.Clone(signed)
			mod[len(mod)-16] ^= 1
			if err := secureboot.VerifyPE(mod, h.DB.Cert); err == nil {
				t.Error("VerifyPE accepted a corrupted signature")
			}
			if sbOK, _, _ := oracles(t, writeTemp(t, name+".badsig", mod), dbPEM); sbOK {
				t.Error("sbverify accepted a corrupted signature")
			}
		})
	}
}

// TestVerifyPEUnsigned: the unsigned stub is rejected by everyone.
func TestVerifyPEUnsigned(t *testing.T) {
	testutil.NeedTool(t, "sbverify", "osslsigncode")
	h := loadTestKeys(t)
	stub := testutil.Artifacts(t).SystemdStub
	in, err := os.ReadFile(stub)
	if err != nil {
		t.Fatal(err)
	}
	if err := secureboot.VerifyPE(in, h.DB.Cert); !errors.Is(err, secureboot.ErrUnsigned) {
		t.Errorf("VerifyPE(unsigned) = %v, want ErrUnsigned", err)
	}
	if _, err := secureboot.Signers(in); !errors.Is(err, secureboot.ErrUnsigned) {
		t.Errorf("Signers(unsigned) = %v", err)
	}
	sbOK, osslOK, _ := oracles(t, stub, filepath.Join(testKeysDir, "db.crt"))
	if sbOK || osslOK {
		t.Errorf("unsigned stub: sbverify ok=%v, osslsigncode ok=%v", sbOK, osslOK)
	}
}

// TestVerifyDebianSignature checks VerifyPE against a signature made by
// other tooling: Debian's own signature on its kernel, whose signer
// certificate Signers extracts and sbverify also accepts.
func TestVerifyDebianSignature(t *testing.T) {
	testutil.NeedTool(t, "sbverify", "openssl")
	vmlinuz := testutil.Artifacts(t).Vmlinuz
	in, err := os.ReadFile(vmlinuz)
	if err != nil {
		t.Fatal(err)
	}
	signers, err := secureboot.Signers(in)
	if err != nil || len(signers) == 0 || signers[0] == nil {
		t.Fatalf("Signers(Debian kernel) = %v, %v", signers, err)
	}
	if err := secureboot.VerifyPE(in, signers[0]); err != nil {
		t.Errorf("VerifyPE(Debian kernel, %s) = %v", signers[0].Subject, err)
	}
	h := loadTestKeys(t)
	if err := secureboot.VerifyPE(in, h.DB.Cert); !errors.Is(err, secureboot.ErrWrongSigner) {
		t.Errorf("VerifyPE(Debian kernel, our db) = %v, want ErrWrongSigner", err)
	}
	// sbverify --list names the same signer.
	out, _ := exec.Command("sbverify", "--list", vmlinuz).CombinedOutput()
	cn := signers[0].Subject.CommonName
	if !regexp.MustCompile(regexp.QuoteMeta("CN=" + cn)).Match(out) {
		t.Errorf("sbverify --list does not name %q:\n%s", cn, out)
	}
	_ = x509.Certificate{}
}

func TestParsePEErrors(t *testing.T) {
	h := loadTestKeys(t)
	stub, err := os.ReadFile(testutil.Artifacts(t).SystemdStub)
	if err != nil {
		t.Fatal(err)
	}
	signed, err := secureboot.SignPE(stub, h.DB.Key, h.DB.Cert)
	if err != nil {
		t.Fatal(err)
	}
	pe := int(binary.LittleEndian.Uint32(signed[0x3c:]))
	secDir := pe + 24 + 112 + 4*8
	for name, b := range map[string][]byte{
		"empty":      nil,
		"no MZ":      append([]byte("ZM"), signed[2:]...),
		"bad lfanew": func() []byte { b := bytes.Clone(signed); binary.LittleEndian.PutUint32(b[0x3c:], 0xfffffff0); return b }(),
		"cert past end": func() []byte {
			b := bytes.Clone(signed)
			binary.LittleEndian.PutUint32(b[secDir+4:], 0xffffff00)
			return b
		}(),
		"cert not at end": append(bytes.Clone(signed), 0),
		"truncated":       signed[:len(signed)/2],
	} {
		if _, err := secureboot.PEDigest(b); !errors.Is(err, secureboot.ErrNotPE) {
			t.Errorf("%s: PEDigest err = %v, want ErrNotPE", name, err)
		}
		if err := secureboot.VerifyPE(b, h.DB.Cert); err == nil {
			t.Errorf("%s: VerifyPE accepted", name)
		}
	}
}
