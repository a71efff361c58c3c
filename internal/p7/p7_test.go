package p7_test

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/osguard/osguard/internal/keyfile"
	"github.com/osguard/osguard/internal/p7"
	"github.com/osguard/osguard/internal/testutil"
)

// newPair makes a self-signed RSA key and certificate with openssl, as the
// Secure Boot db key is made.
func newPair(t *testing.T, openssl, dir, name string) (keyPath, certPath string) {
	t.Helper()
	keyPath, certPath = filepath.Join(dir, name+".key"), filepath.Join(dir, name+".crt")
	out, err := exec.Command(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
		"-subj", "/CN=osguard p7 test "+name, "-keyout", keyPath, "-out", certPath).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl req: %v\n%s", err, out)
	}
	return keyPath, certPath
}

// noSignedAttrs matches `openssl cms -cmsout -print` for a signer without
// authenticated attributes.
var noSignedAttrs = regexp.MustCompile(`(?m)^\s+signedAttrs:\n\s+<ABSENT>$`)

func run(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

func TestOpenSSLAcceptsOurSignatures(t *testing.T) {
	openssl := testutil.NeedTool(t, "openssl")[0]
	dir := t.TempDir()
	keyPath, certPath := newPair(t, openssl, dir, "db")
	key, cert, err := keyfile.LoadPair(keyPath, certPath)
	if err != nil {
		t.Fatal(err)
	}
	content := []byte("5f4dcc3b5aa765d61d8327deb882cf99aa765d61d8327deb882cf995f4dcc3b")
	contentPath := filepath.Join(dir, "content.txt")
	if err := os.WriteFile(contentPath, content, 0o644); err != nil {
		t.Fatal(err)
	}
	otherPath := filepath.Join(dir, "other.txt")
	if err := os.WriteFile(otherPath, append(content[:len(content)-1:len(content)-1], 'x'), 0o644); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name   string
		detach bool
	}{{"detached", true}, {"attached", false}} {
		t.Run(tc.name, func(t *testing.T) {
			sign := p7.SignAttached
			if tc.detach {
				sign = p7.SignDetached
			}
			der, err := sign(content, key, cert)
			if err != nil {
				t.Fatal(err)
			}
			sigPath := filepath.Join(dir, tc.name+".p7s")
			if err := os.WriteFile(sigPath, der, 0o644); err != nil {
				t.Fatal(err)
			}
			outPath := filepath.Join(dir, tc.name+".out")
			args := []string{"cms", "-verify", "-binary", "-inform", "DER", "-in", sigPath,
				"-certfile", certPath, "-CAfile", certPath, "-out", outPath}
			if tc.detach {
				args = append(args, "-content", contentPath)
			}
			if out, err := run(openssl, args...); err != nil {
				t.Fatalf("openssl cms -verify refused our signature: %v\n%s", err, out)
			}
			if got, _ := os.ReadFile(outPath); !bytes.Equal(got, content) {
				t.Errorf("openssl recovered %q, want %q", got, content)
			}
			if tc.detach {
				args[len(args)-1] = otherPath
				if out, err := run(openssl, args...); err == nil {
					t.Errorf("openssl accepted the signature over other content:\n%s", out)
				}
			}
			// The kernel's root hash and IPE checks want no authenticated attributes.
			out, err := run(openssl, "cms", "-cmsout", "-print", "-inform", "DER", "-in", sigPath)
			if err != nil {
				t.Fatalf("openssl cms -print: %v\n%s", err, out)
			}
			if !noSignedAttrs.MatchString(out) || strings.Contains(out, "messageDigest") {
				t.Errorf("signature carries authenticated attributes:\n%s", out)
			}
			if !strings.Contains(out, "sha256") {
				t.Errorf("signature does not use sha256:\n%s", out)
			}
			if strings.Contains(out, "eContent: <ABSENT>") != tc.detach {
				t.Errorf("detached=%v but eContent presence disagrees:\n%s", tc.detach, out)
			}
		})
	}
}

func TestVerifyOpenSSLSignatures(t *testing.T) {
	openssl := testutil.NeedTool(t, "openssl")[0]
	dir := t.TempDir()
	keyPath, certPath := newPair(t, openssl, dir, "db")
	_, otherCertPath := newPair(t, openssl, dir, "kek")
	cert, err := keyfile.LoadCert(certPath)
	if err != nil {
		t.Fatal(err)
	}
	other, err := keyfile.LoadCert(otherCertPath)
	if err != nil {
		t.Fatal(err)
	}
	content := []byte("policy_name=test policy_version=0.0.1\n")
	contentPath := filepath.Join(dir, "content.txt")
	if err := os.WriteFile(contentPath, content, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		detach  bool
		nocerts bool
	}{{"detached", true, false}, {"attached", false, false}, {"detached-nocerts", true, true}} {
		t.Run(tc.name, func(t *testing.T) {
			sigPath := filepath.Join(dir, tc.name+".p7s")
			args := []string{"smime", "-sign", "-in", contentPath, "-signer", certPath, "-inkey", keyPath,
				"-noattr", "-binary", "-outform", "DER", "-md", "sha256", "-out", sigPath}
			if !tc.detach {
				args = append(args, "-nodetach")
			}
			if tc.nocerts {
				args = append(args, "-nocerts")
			}
			if out, err := run(openssl, args...); err != nil {
				t.Fatalf("openssl smime -sign: %v\n%s", err, out)
			}
			der, err := os.ReadFile(sigPath)
			if err != nil {
				t.Fatal(err)
			}
			arg := content
			if !tc.detach {
				arg = nil
			}
			got, err := p7.Verify(der, arg, cert)
			if err != nil {
				t.Fatalf("Verify of openssl's signature: %v", err)
			}
			if !bytes.Equal(got, content) {
				t.Errorf("content %q, want %q", got, content)
			}
			if _, err := p7.Verify(der, arg, other); !errors.Is(err, p7.ErrWrongSigner) {
				t.Errorf("Verify with another certificate = %v, want ErrWrongSigner", err)
			}
			if _, err := p7.Verify(der, []byte("policy_name=evil"), cert); err == nil {
				t.Error("Verify accepted other content")
			}
			bad := append([]byte{}, der...)
			bad[len(bad)-10] ^= 1 // inside the RSA signature value
			if _, err := p7.Verify(bad, arg, cert); err == nil {
				t.Error("Verify accepted a damaged signature")
			}
		})
	}
}
