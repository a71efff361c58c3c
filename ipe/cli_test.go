package ipe

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/osguard/osguard/internal/p7"
)

// TestCLI runs `osguard ipe` as a user would and checks the contract of
// the issue: exit codes, "FILE:LINE: reason", the first word of eval.
func TestCLI(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "osguard")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/osguard/osguard/cmd/osguard").CombinedOutput(); err != nil {
		t.Fatalf("build osguard: %v\n%s", err, out)
	}
	osguard := func(args ...string) (stdout, stderr string, code int) {
		var o, e bytes.Buffer
		cmd := exec.Command(bin, append([]string{"ipe"}, args...)...)
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return o.String(), e.String(), code
	}

	corpusDir := filepath.Join("testdata", "corpus")
	for _, c := range loadCorpus(t) {
		path := filepath.Join(corpusDir, c.file)
		_, stderr, code := osguard("check", path)
		p, err := Parse(c.text)
		if err != nil {
			pe := err.(*ParseError)
			want := path + ":" + itoa(pe.Line) + ": " + pe.Reason + "\n"
			if code != 1 || stderr != want {
				t.Errorf("check %s: exit %d, stderr %q; want 1, %q", c.file, code, stderr, want)
			}
			continue
		}
		if code != 0 || stderr != "" {
			t.Errorf("check %s: exit %d, stderr %q", c.file, code, stderr)
		}
		out, _, code := osguard("fmt", path)
		if code != 0 || out != string(p.Format()) {
			t.Errorf("fmt %s: exit %d\n%s", c.file, code, out)
		}
	}

	pol := filepath.Join(corpusDir, "ok-all-props.pol")
	text, _ := os.ReadFile(pol)
	p, _ := Parse(text)
	for _, c := range []struct {
		args  []string
		facts Facts
	}{
		{nil, Facts{}},
		{[]string{"--boot-verified"}, Facts{BootVerified: true}},
		{[]string{"--dmverity-roothash", rootHash.String()}, Facts{DMVerityRootHash: rootHash}},
		{[]string{"--dmverity-roothash", otherHash.String(), "--dmverity-signature"}, Facts{DMVerityRootHash: otherHash, DMVeritySignature: true}},
		{[]string{"--fsverity-digest", "sha256:" + strings.Repeat("cd", 32)}, Facts{FSVerityDigest: &Digest{"sha256", bytes.Repeat([]byte{0xcd}, 32)}}},
		{[]string{"--fsverity-signature"}, Facts{FSVeritySignature: true}},
	} {
		out, stderr, code := osguard(append([]string{"eval", pol, "--op", "EXECUTE"}, c.args...)...)
		d := p.Evaluate(OpExecute, c.facts)
		want := map[bool]string{true: "ALLOW", false: "DENY"}[d.Allow] + " " + pol + ":" + itoa(d.Line) + ": " + d.Rule + "\n"
		if code != 0 || out != want {
			t.Errorf("eval %v: exit %d, %q %q; want %q", c.args, code, out, stderr, want)
		}
	}
	if _, _, code := osguard("eval", pol, "--op", "execute"); code != 2 {
		t.Errorf("eval --op execute: exit %d, want 2", code)
	}

	key, cert := testCert(t)
	keyPath, certPath, out := filepath.Join(dir, "db.key"), filepath.Join(dir, "db.crt"), filepath.Join(dir, "p.p7s")
	os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600)
	os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o644)
	if _, stderr, code := osguard("sign", "--key", keyPath, "--cert", certPath, "-o", out, pol); code != 0 {
		t.Fatalf("sign: exit %d: %s", code, stderr)
	}
	der, _ := os.ReadFile(out)
	if content, err := p7.Verify(der, nil, cert); err != nil || !bytes.Equal(content, text) {
		t.Fatalf("signed policy: %v", err)
	}
	bad := filepath.Join(corpusDir, "bad-odd-hex.pol")
	if _, stderr, code := osguard("sign", "--key", keyPath, "--cert", certPath, "-o", out+"2", bad); code != 1 || !regexp.MustCompile(`^testdata/corpus/bad-odd-hex.pol:3: `).MatchString(stderr) {
		t.Errorf("sign of a bad policy: exit %d, %q", code, stderr)
	}
	if _, err := os.Stat(out + "2"); err == nil {
		t.Error("sign wrote an output for a bad policy")
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
