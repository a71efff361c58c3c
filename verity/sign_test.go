package verity_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/osguard/osguard/internal/keyfile"
	"github.com/osguard/osguard/internal/testutil"
	"github.com/osguard/osguard/verity"
)

func newPair(t *testing.T, openssl, dir, name string) (keyPath, certPath string) {
	t.Helper()
	keyPath, certPath = filepath.Join(dir, name+".key"), filepath.Join(dir, name+".crt")
	out, err := exec.Command(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
		"-subj", "/CN=osguard verity test "+name, "-keyout", keyPath, "-out", certPath).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl req: %v\n%s", err, out)
	}
	return keyPath, certPath
}

var testRoot, _ = hex.DecodeString("41ace9c83ce6cc3c50bff97c9d96e927f84d7dffff21e4eee7b0091c517aa3b2")

func TestRootHashSignatureOpenSSL(t *testing.T) {
	openssl := testutil.NeedTool(t, "openssl")[0]
	dir := t.TempDir()
	keyPath, certPath := newPair(t, openssl, dir, "db")
	otherKeyPath, otherCertPath := newPair(t, openssl, dir, "kek")
	key, cert, err := keyfile.LoadPair(keyPath, certPath)
	if err != nil {
		t.Fatal(err)
	}
	otherKey, err := keyfile.LoadKey(otherKeyPath)
	if err != nil {
		t.Fatal(err)
	}
	other, err := keyfile.LoadCert(otherCertPath)
	if err != nil {
		t.Fatal(err)
	}
	rootPath := filepath.Join(dir, "roothash.txt")
	if err := os.WriteFile(rootPath, []byte(hex.EncodeToString(testRoot)), 0o644); err != nil {
		t.Fatal(err)
	}

	// openssl accepts ours, with the exact command.
	sig, err := verity.SignRootHash(testRoot, key, cert)
	if err != nil {
		t.Fatal(err)
	}
	sigPath := filepath.Join(dir, "ours.p7s")
	if err := os.WriteFile(sigPath, sig, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(openssl, "cms", "-verify", "-binary", "-inform", "DER", "-in", sigPath,
		"-content", rootPath, "-certfile", certPath, "-CAfile", certPath, "-out", os.DevNull).CombinedOutput(); err != nil {
		t.Fatalf("openssl cms -verify refused our root hash signature: %v\n%s", err, out)
	}
	// ... and refuses it for another root hash (the content really is the hex).
	upper := filepath.Join(dir, "upper.txt")
	if err := os.WriteFile(upper, []byte(strings.ToUpper(hex.EncodeToString(testRoot))), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(openssl, "cms", "-verify", "-binary", "-inform", "DER", "-in", sigPath,
		"-content", upper, "-certfile", certPath, "-CAfile", certPath, "-out", os.DevNull).CombinedOutput(); err == nil {
		t.Errorf("openssl accepted the signature over the uppercase hex:\n%s", out)
	}

	// We accept openssl's, as made for veritysetup --root-hash-signature.
	osslPath := filepath.Join(dir, "openssl.p7s")
	if out, err := exec.Command(openssl, "smime", "-sign", "-in", rootPath, "-signer", certPath, "-inkey", keyPath,
		"-noattr", "-binary", "-outform", "DER", "-out", osslPath).CombinedOutput(); err != nil {
		t.Fatalf("openssl smime -sign: %v\n%s", err, out)
	}
	osslSig, err := os.ReadFile(osslPath)
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string][]byte{"ours": sig, "openssl": osslSig} {
		if err := verity.VerifyRootHashSignature(testRoot, s, cert); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if err := verity.VerifyRootHashSignature(testRoot, s, other); err == nil {
			t.Errorf("%s: accepted with another certificate", name)
		}
		wrong := bytes.Clone(testRoot)
		wrong[0] ^= 1
		if err := verity.VerifyRootHashSignature(wrong, s, cert); err == nil {
			t.Errorf("%s: accepted for another root hash", name)
		}
	}

	if _, err := verity.SignRootHash(testRoot, otherKey, cert); !errors.Is(err, verity.ErrKeyMismatch) {
		t.Errorf("SignRootHash with a foreign key = %v, want ErrKeyMismatch", err)
	}

	// DPS signature JSON round trip.
	sj := verity.NewSignatureJSON(testRoot, sig, cert)
	padded, err := sj.MarshalPadded(4096)
	if err != nil {
		t.Fatal(err)
	}
	if len(padded) != 4096 || padded[4095] != 0 || padded[0] != '{' {
		t.Fatalf("padded JSON: %d bytes, starts %q", len(padded), padded[:1])
	}
	back, err := verity.ParseSignatureJSON(padded)
	if err != nil {
		t.Fatal(err)
	}
	if *back != *sj {
		t.Errorf("round trip: %+v, want %+v", back, sj)
	}
	if err := back.Verify(cert); err != nil {
		t.Errorf("signature JSON Verify: %v", err)
	}
	if err := back.Verify(other); err == nil {
		t.Error("signature JSON Verify accepted another certificate")
	}
	// The fingerprint is openssl's SHA-256 fingerprint of the certificate.
	out, err := exec.Command(openssl, "x509", "-in", certPath, "-noout", "-fingerprint", "-sha256").Output()
	if err != nil {
		t.Fatal(err)
	}
	fp := strings.ToLower(strings.ReplaceAll(strings.TrimSpace(string(out[strings.IndexByte(string(out), '=')+1:])), ":", ""))
	if sj.CertificateFingerprint != fp {
		t.Errorf("certificateFingerprint %s, openssl says %s", sj.CertificateFingerprint, fp)
	}
	if _, err := sj.MarshalPadded(100); err == nil {
		t.Error("MarshalPadded into too small a size succeeded")
	}
}

func TestParseSignatureJSONErrors(t *testing.T) {
	sig := base64.StdEncoding.EncodeToString([]byte{0x30, 0x03, 0x02, 0x01, 0x01})
	root := hex.EncodeToString(testRoot)
	for name, in := range map[string]string{
		"empty":            "",
		"all NULs":         "\x00\x00\x00",
		"not JSON":         "hello",
		"array":            `["rootHash"]`,
		"no rootHash":      `{"signature":"` + sig + `"}`,
		"no signature":     `{"rootHash":"` + root + `"}`,
		"bad hex":          `{"rootHash":"zz","signature":"` + sig + `"}`,
		"short root":       `{"rootHash":"abcd","signature":"` + sig + `"}`,
		"bad base64":       `{"rootHash":"` + root + `","signature":"!!!"}`,
		"bad fingerprint":  `{"rootHash":"` + root + `","signature":"` + sig + `","certificateFingerprint":"12"}`,
		"trailing garbage": `{"rootHash":"` + root + `","signature":"` + sig + `"}x` + "\x00",
		"NUL then garbage": `{"rootHash":"` + root + `","signature":"` + sig + `"}` + "\x00x\x00",
		"unknown field":    `{"rootHash":"` + root + `","signature":"` + sig + `","extra":1}`,
	} {
		if _, err := verity.ParseSignatureJSON([]byte(in)); err == nil {
			t.Errorf("%s: accepted", name)
		} else if !strings.HasPrefix(err.Error(), "verity: signature JSON") {
			t.Errorf("%s: error %q lacks context", name, err)
		}
	}
	ok := `{"rootHash":"` + root + `","signature":"` + sig + `"}` + "\n\x00\x00"
	if _, err := verity.ParseSignatureJSON([]byte(ok)); err != nil {
		t.Errorf("valid JSON without fingerprint: %v", err)
	}
}
