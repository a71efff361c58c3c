package ipe

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/osguard/osguard/internal/testutil"
)

type corpusCase struct {
	file  string
	text  []byte
	errno syscall.Errno // 0: accepted
}

var errnos = map[string]syscall.Errno{
	"OK": 0, "EBADMSG": syscall.EBADMSG, "EINVAL": syscall.EINVAL, "ERANGE": syscall.ERANGE,
	"EACCES": syscall.EACCES, "ENAMETOOLONG": syscall.ENAMETOOLONG,
}

// loadCorpus reads testdata/corpus/EXPECT and the policies it names.
func loadCorpus(t testing.TB) []corpusCase {
	t.Helper()
	dir := filepath.Join("testdata", "corpus")
	f, err := os.Open(filepath.Join(dir, "EXPECT"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cases []corpusCase
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		file, verdict, ok := strings.Cut(line, " ")
		errno, known := errnos[verdict]
		if !ok || !known {
			t.Fatalf("EXPECT: bad line %q", line)
		}
		text, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		cases = append(cases, corpusCase{file, text, errno})
	}
	if len(cases) < 40 {
		t.Fatalf("corpus has %d cases, want at least 40", len(cases))
	}
	return cases
}

func errnoOf(err error) syscall.Errno {
	var pe *ParseError
	if errors.As(err, &pe) {
		return pe.Errno
	}
	return 0
}

// TestCorpus checks the parser against the verdicts predicted from the
// kernel sources; TestKernel checks the same corpus against the kernel.
func TestCorpus(t *testing.T) {
	for _, c := range loadCorpus(t) {
		t.Run(c.file, func(t *testing.T) {
			p, err := Parse(c.text)
			if got := errnoOf(err); got != c.errno {
				t.Fatalf("Parse: errno %v (%v), want %v", got, err, c.errno)
			}
			if err != nil {
				var pe *ParseError
				if !errors.As(err, &pe) || pe.Line < 1 || pe.Reason == "" {
					t.Fatalf("error without line or reason: %#v", err)
				}
				return
			}
			checkRoundTrip(t, p)
		})
	}
}

// stripLines zeroes the line numbers so that policies compare by meaning.
func stripLines(p *Policy) *Policy {
	q := *p
	q.HeaderLine = 0
	if p.Default != nil {
		q.Default = &Default{Action: p.Default.Action}
	}
	q.OpDefaults = map[Op]*Default{}
	for op, d := range p.OpDefaults {
		q.OpDefaults[op] = &Default{Action: d.Action}
	}
	q.Rules = nil
	for _, op := range Ops() {
		for _, r := range p.RulesFor(op) {
			r.Line = 0
			for i := range r.Props {
				if r.Props[i].Digest.Value == nil {
					r.Props[i].Digest.Value = []byte{}
				}
			}
			q.Rules = append(q.Rules, r)
		}
	}
	return &q
}

func checkRoundTrip(t testing.TB, p *Policy) {
	t.Helper()
	text := p.Format()
	q, err := Parse(text)
	if err != nil {
		t.Fatalf("Format output does not parse: %v\n%s", err, text)
	}
	if !reflect.DeepEqual(stripLines(p), stripLines(q)) {
		t.Fatalf("Format changed the policy:\n%s", text)
	}
	if again := q.Format(); !bytes.Equal(again, text) {
		t.Fatalf("Format is not stable:\n%s\n---\n%s", text, again)
	}
}

func TestErrorLines(t *testing.T) {
	for _, c := range []struct {
		text string
		line int
	}{
		{"policy_name=a policy_version=0.0.1\nDEFAULT action=ALLOW\nop=BAD action=ALLOW\n", 3},
		{"policy_name=a policy_version=0.0.1\r\nDEFAULT action=ALLOW\r\n\r\nop=BAD action=ALLOW\r\n", 4},
		{"policy_name=a policy_version=0.0.1\rDEFAULT action=ALLOW\rop=BAD action=ALLOW", 3},
		{"# c\n\npolicy_name=a policy_version=0.0\n", 3},
		{"\n\npolicy_name=a policy_version=0.0.1\nDEFAULT op=EXECUTE action=DENY\n", 3},
	} {
		_, err := Parse([]byte(c.text))
		var pe *ParseError
		if !errors.As(err, &pe) || pe.Line != c.line {
			t.Errorf("%q: got %v, want line %d", c.text, err, c.line)
		}
	}
}

var (
	rootHash  = &Digest{Alg: "sha256", Value: bytes.Repeat([]byte{0xab}, 32)}
	otherHash = &Digest{Alg: "sha256", Value: bytes.Repeat([]byte{0x01}, 32)}
)

func TestEvaluate(t *testing.T) {
	const pol = `policy_name=eval policy_version=1.2.3
DEFAULT action=ALLOW
DEFAULT op=EXECUTE action=DENY
op=EXECUTE boot_verified=TRUE action=ALLOW
op=EXECUTE dmverity_roothash=sha256:` + "ABAB" + `abababababababababababababababababababababababababababababab action=ALLOW
op=EXECUTE dmverity_signature=TRUE fsverity_signature=FALSE action=ALLOW
op=KMODULE dmverity_signature=FALSE action=DENY
op=FIRMWARE action=DENY
op=FIRMWARE boot_verified=TRUE action=ALLOW
`
	p, err := Parse([]byte(pol))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		op    Op
		f     Facts
		allow bool
		line  int
	}{
		{"initramfs", OpExecute, Facts{BootVerified: true}, true, 4},
		{"tmpfs", OpExecute, Facts{}, false, 3},
		{"listed hash", OpExecute, Facts{DMVerityRootHash: rootHash}, true, 5},
		{"listed hash other alg", OpExecute, Facts{DMVerityRootHash: &Digest{"sha512", rootHash.Value}}, false, 3},
		{"signed", OpExecute, Facts{DMVerityRootHash: otherHash, DMVeritySignature: true}, true, 6},
		{"signed fsverity-signed", OpExecute, Facts{DMVerityRootHash: otherHash, DMVeritySignature: true, FSVeritySignature: true}, false, 3},
		{"unsigned", OpExecute, Facts{DMVerityRootHash: otherHash}, false, 3},
		{"kmodule unsigned", OpKmodule, Facts{}, false, 7},
		{"kmodule signed", OpKmodule, Facts{DMVeritySignature: true}, true, 2},
		{"firmware first match wins", OpFirmware, Facts{BootVerified: true}, false, 8},
		{"x509 global", OpX509Cert, Facts{}, true, 2},
	} {
		d := p.Evaluate(c.op, c.f)
		if d.Allow != c.allow || d.Line != c.line {
			t.Errorf("%s: got %+v, want allow=%v line=%d", c.name, d, c.allow, c.line)
		}
	}
	if d := p.Evaluate(OpExecute, Facts{}); d.Rule != "DEFAULT op=EXECUTE action=DENY" {
		t.Errorf("rule text %q", d.Rule)
	}
}

func TestGenerate(t *testing.T) {
	h := "sha256:" + strings.Repeat("ab", 32)
	o := GenerateOptions{Name: "node", Version: "2.0.1", AllowRootHashes: []string{h}}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	p, err := Parse(Generate(o))
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "node" || p.Version != (Version{2, 0, 1}) {
		t.Fatalf("header %q %v", p.Name, p.Version)
	}
	for _, op := range Ops() {
		trusted := op == OpExecute || op == OpKmodule || op == OpFirmware
		for _, c := range []struct {
			f     Facts
			allow bool
		}{
			{Facts{BootVerified: true}, trusted},
			{Facts{DMVerityRootHash: otherHash, DMVeritySignature: true}, trusted},
			{Facts{DMVerityRootHash: rootHash}, trusted},
			{Facts{DMVerityRootHash: otherHash}, false},
			{Facts{}, false},
		} {
			if d := p.Evaluate(op, c.f); d.Allow != c.allow {
				t.Errorf("%v %+v: %+v", op, c.f, d)
			}
		}
	}
	if err := (GenerateOptions{Name: "a b"}).Validate(); err == nil {
		t.Error("a name with a space validated")
	}
	if err := (GenerateOptions{AllowRootHashes: []string{"sha256:abc"}}).Validate(); err == nil {
		t.Error("an odd-length digest validated")
	}
}

// testCert makes a throwaway self-signed RSA signing certificate, like the
// db certificates of the prototype (CA, SKI, sha256).
func testCert(t testing.TB) (*rsa.PrivateKey, *x509.Certificate) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "osguard ipe test db"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		SubjectKeyId:          []byte{1, 2, 3, 4},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return key, cert
}

// TestSignOpenSSL checks the signed policy with openssl, which must find
// the policy text inside and no signed attributes.
func TestSignOpenSSL(t *testing.T) {
	openssl := testutil.NeedTool(t, "openssl")[0]
	key, cert := testCert(t)
	pol := Generate(GenerateOptions{Name: "signed"})
	der, err := Sign(pol, key, cert)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p7, crt := filepath.Join(dir, "p.p7s"), filepath.Join(dir, "c.pem")
	os.WriteFile(p7, der, 0o644)
	os.WriteFile(crt, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o644)
	out, err := exec.Command(openssl, "smime", "-verify", "-inform", "DER", "-in", p7, "-binary",
		"-CAfile", crt, "-purpose", "any").Output()
	if err != nil {
		t.Fatalf("openssl smime -verify: %v", err)
	}
	if !bytes.Equal(out, pol) {
		t.Fatalf("openssl returned %q, want the policy", out)
	}
	asn, err := exec.Command(openssl, "cms", "-cmsout", "-print", "-inform", "DER", "-in", p7).Output()
	if err != nil {
		t.Fatalf("openssl cms -print: %v", err)
	}
	if !regexp.MustCompile(`signedAttrs:\s*<ABSENT>`).Match(asn) {
		t.Fatalf("signed attributes present:\n%s", asn)
	}
	if _, err := Sign([]byte("not a policy"), key, cert); err == nil {
		t.Fatal("signed an invalid policy")
	}
}
