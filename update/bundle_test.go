package update

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/osguard/osguard/internal/keyfile"
)

// testKey returns the throw-away key of testdata and a certificate for it
// (deterministic: RSA PKCS#1 v1.5 and a fixed template).
func testKey(t testing.TB, cn string) (crypto.Signer, *x509.Certificate) {
	t.Helper()
	key, err := keyfile.LoadKey("testdata/fuzz-rsa2048.key")
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Unix(0, 0), NotAfter: time.Unix(1<<32, 0),
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(nil, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return key, cert
}

// testManifest is a manifest for small synthetic payloads.
func testManifest() Manifest {
	var m Manifest
	m.Architecture = Architecture
	m.Image.Name, m.Image.Version = "test", "2"
	m.IPE.PolicyName, m.IPE.PolicyVersion = "test", "1.0.1"
	m.Usr.RootHash = strings.Repeat("ab", 16) + strings.Repeat("cd", 16)
	m.Usr.PartUUID = "abababab-abab-abab-abab-abababababab"
	m.Usr.VerityPartUUID = "cdcdcdcd-cdcd-cdcd-cdcd-cdcdcdcdcdcd"
	m.Layout = Layout{Slots: 2, SectorSize: 512, UsrBytes: 8 << 20, VerityBytes: 1 << 20, SigBytes: 1 << 20}
	return m
}

// testPayloads returns payload contents; usr spans several chunks.
func testPayloads() map[string][]byte { return testPayloadsSized(2*ChunkSize + 12345) }

func testPayloadsSized(usrSize int) map[string][]byte {
	usr := make([]byte, usrSize)
	for i := range usr {
		usr[i] = byte(i * 7)
	}
	return map[string][]byte{
		PayloadMeasurements: []byte(`{"image":"test"}`),
		PayloadSignature:    []byte(`{"rootHash":"x"}`),
		PayloadUsr:          usr,
		PayloadVerity:       bytes.Repeat([]byte{1, 2, 3}, usrSize/400),
		PayloadUKI:          []byte("MZ not really a UKI"),
	}
}

// packTest writes a bundle of the test payloads and returns its bytes.
func packTest(t testing.TB, m Manifest, key crypto.Signer, cert *x509.Certificate) []byte {
	return packSized(t, m, key, cert, testPayloads())
}

func packSized(t testing.TB, m Manifest, key crypto.Signer, cert *x509.Certificate, content map[string][]byte) []byte {
	t.Helper()
	var ps []PackPayload
	for _, n := range PayloadOrder {
		ps = append(ps, PackPayload{n, int64(len(content[n])), bytes.NewReader(content[n])})
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "b"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := Pack(f, m, ps, key, cert); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// readAll opens a bundle and reads every payload.
func readAll(b []byte, certs []*x509.Certificate) (map[string][]byte, error) {
	r, err := Open(bytes.NewReader(b), certs)
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for {
		p, err := r.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		data, err := p.ReadAll()
		if err != nil {
			return out, err
		}
		out[p.P.Name] = data
	}
}

func TestPackOpenRoundTrip(t *testing.T) {
	key, cert := testKey(t, "db")
	b := packTest(t, testManifest(), key, cert)
	got, err := readAll(b, []*x509.Certificate{cert})
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := Open(bytes.NewReader(b), []*x509.Certificate{cert}); r.Size != int64(len(b)) {
		t.Errorf("Reader.Size %d, the bundle has %d bytes", r.Size, len(b))
	}
	for n, want := range testPayloads() {
		if !bytes.Equal(got[n], want) {
			t.Errorf("payload %s: got %d bytes, want %d", n, len(got[n]), len(want))
		}
	}
	// Trailing bytes (a bundle on a block device) are ignored.
	if _, err := readAll(append(b, make([]byte, 4096)...), []*x509.Certificate{cert}); err != nil {
		t.Errorf("with trailing zeros: %v", err)
	}
	// Reading through io.Copy (small reads) gives the same bytes.
	r, _ := Open(bytes.NewReader(b), []*x509.Certificate{cert})
	var sizes []int64
	for {
		p, err := r.Next()
		if err != nil {
			break
		}
		n, err := io.Copy(struct{ io.Writer }{io.Discard}, struct{ io.Reader }{p})
		if err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, n)
	}
	if len(sizes) != len(PayloadOrder) {
		t.Errorf("read %d payloads", len(sizes))
	}
}

func TestOpenRefuses(t *testing.T) {
	key, cert := testKey(t, "db")
	_, other := testKey(t, "someone else")
	good := packTest(t, testManifest(), key, cert)
	mlen := int(binary.BigEndian.Uint32(good[16:]))
	payloadStart := headerSize + mlen + signatureArea
	flip := func(off int) []byte {
		b := bytes.Clone(good)
		b[off] ^= 0x01
		return b
	}
	setU32 := func(off int, v uint32) []byte {
		b := bytes.Clone(good)
		binary.BigEndian.PutUint32(b[off:], v)
		return b
	}
	otherArch := testManifest()
	otherArch.Architecture = "arm64"
	for _, c := range []struct {
		name  string
		data  []byte
		certs []*x509.Certificate
		want  string
		// readable payloads before the error
		payloadsOK int
	}{
		{"wrong magic", flip(0), nil, "not an osguard update bundle", 0},
		{"format 2", func() []byte { b := bytes.Clone(good); b[15] = 2; return b }(), nil, "bundle format 2", 0},
		{"empty", nil, nil, "truncated", 0},
		{"truncated header", good[:10], nil, "truncated", 0},
		{"truncated manifest", good[:headerSize+100], nil, "truncated", 0},
		{"truncated signature", good[:headerSize+mlen+10], nil, "truncated", 0},
		{"oversized manifest length", setU32(16, MaxManifest+1), nil, "manifest of", 0},
		{"zero manifest length", setU32(16, 0), nil, "manifest of 0 bytes", 0},
		{"oversized signature area", setU32(20, MaxSignatureArea+1), nil, "signature area", 0},
		{"oversized signature length", setU32(headerSize+mlen, signatureArea), nil, "signature of", 0},
		{"foreign signer", good, []*x509.Certificate{other}, "not signed by a certificate in db", 0},
		{"no db", good, []*x509.Certificate{}, "not signed", 0},
		{"flipped manifest byte", flip(headerSize + 40), nil, "not signed by a certificate in db", 0},
		{"flipped signature byte", flip(headerSize + mlen + 200), nil, "not signed", 0},
		{"flipped usr byte", flip(payloadStart + 3388 + ChunkSize + 17), nil, "chunk 1", 2},
		{"truncated usr", good[:payloadStart+100], nil, "truncated", 2},
		{"truncated uki", good[:len(good)-1], nil, "truncated", 4},
	} {
		t.Run(c.name, func(t *testing.T) {
			certs := c.certs
			if certs == nil {
				certs = []*x509.Certificate{cert}
			}
			got, err := readAll(c.data, certs)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
			if len(got) != c.payloadsOK {
				t.Errorf("%d payloads read before the error, want %d", len(got), c.payloadsOK)
			}
		})
	}
	_ = otherArch
}

func TestManifestLimits(t *testing.T) {
	for _, c := range []struct {
		name   string
		modify func(*Manifest)
		want   string
	}{
		{"long name", func(m *Manifest) { m.Image.Name = strings.Repeat("n", 200) }, "at most 128"},
		{"bad version", func(m *Manifest) { m.Image.Version = "v2" }, "not a decimal number"},
		{"bad root hash", func(m *Manifest) { m.Usr.RootHash = "xyz" }, "rootHash"},
		{"uuid not from hash", func(m *Manifest) { m.Usr.PartUUID = "00000000-abab-abab-abab-abababababab" }, "halves"},
		{"usr larger than layout", func(m *Manifest) { m.Layout.UsrBytes = 1 << 20 }, "larger than its partition"},
		{"slots", func(m *Manifest) { m.Layout.Slots = 3 }, "layout"},
		{"too few chunks", func(m *Manifest) { m.Payloads[2].Chunks = m.Payloads[2].Chunks[:1] }, "chunk hashes"},
		{"huge payload", func(m *Manifest) { m.Payloads[0].Size = 1 << 40 }, "out of range"},
		{"payload order", func(m *Manifest) { m.Payloads[0], m.Payloads[1] = m.Payloads[1], m.Payloads[0] }, "want measurements.json"},
	} {
		t.Run(c.name, func(t *testing.T) {
			key, cert := testKey(t, "db")
			b := packTest(t, testManifest(), key, cert)
			r, err := Open(bytes.NewReader(b), []*x509.Certificate{cert})
			if err != nil {
				t.Fatal(err)
			}
			m := *r.Manifest
			m.Payloads = append([]Payload(nil), m.Payloads...)
			for i := range m.Payloads {
				m.Payloads[i].Chunks = append([]string(nil), m.Payloads[i].Chunks...)
			}
			c.modify(&m)
			err = m.Validate()
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v, want %q", err, c.want)
			}
		})
	}
}

func TestCompareVersions(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{
		{"1", "2", -1}, {"2", "1", 1}, {"2", "2", 0}, {"1.0", "1", 0}, {"1.0.10", "1.0.9", 1}, {"10", "9", 1},
	} {
		got, err := CompareVersions(c.a, c.b)
		if err != nil || got != c.want {
			t.Errorf("CompareVersions(%q, %q) = %d, %v; want %d", c.a, c.b, got, err, c.want)
		}
	}
	if _, err := CompareVersions("1.x", "1"); err == nil {
		t.Error("1.x compared")
	}
}

// writeSeeds regenerates testdata/fuzz seeds (OSGUARD_WRITE_SEEDS=1).
func TestWriteSeeds(t *testing.T) {
	if os.Getenv("OSGUARD_WRITE_SEEDS") != "1" {
		t.Skip("set OSGUARD_WRITE_SEEDS=1 to regenerate the seed corpus")
	}
	key, cert := testKey(t, "db")
	m := testManifest()
	small := testPayloadsSized(5000)
	good := packSized(t, m, key, cert, small)
	mlen := int(binary.BigEndian.Uint32(good[16:]))
	arm := m
	arm.Architecture = "arm64"
	seeds := map[string][]byte{
		"valid":            good,
		"truncated":        good[:headerSize+mlen+signatureArea+3000],
		"wrong-magic":      append([]byte("NOT-AN-UPDATE\x00"), good[14:]...),
		"huge-manifest":    append(append(bytes.Clone(good[:16]), 0xff, 0xff, 0xff, 0xff), good[20:]...),
		"other-arch":       packSized(t, arm, key, cert, small),
		"manifest-as-blob": good[headerSize : headerSize+mlen],
	}
	for name, b := range seeds {
		dir := "testdata/fuzz/FuzzOpen"
		if name == "manifest-as-blob" {
			dir = "testdata/fuzz/FuzzParseManifest"
		}
		os.MkdirAll(dir, 0o755)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func FuzzOpen(f *testing.F) {
	key, cert := testKey(f, "db")
	f.Add(packSized(f, testManifest(), key, cert, testPayloadsSized(5000)))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := readAll(data, []*x509.Certificate{cert})
		if err != nil && len(got) == len(PayloadOrder) {
			t.Fatalf("every payload read, yet %v", err)
		}
		if err == nil && len(got) != len(PayloadOrder) {
			t.Fatalf("%d payloads and no error", len(got))
		}
		if err != nil && errors.Is(err, io.EOF) {
			t.Fatalf("bare EOF: %v", err)
		}
	})
}

func FuzzParseManifest(f *testing.F) {
	f.Add([]byte(`{"format":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseManifest(data)
		if err != nil {
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("parsed but invalid: %v", err)
		}
		for _, p := range m.Payloads {
			if p.Size <= 0 || int64(len(p.Chunks)) != (p.Size+ChunkSize-1)/ChunkSize {
				t.Fatalf("payload %s: size %d with %d chunks", p.Name, p.Size, len(p.Chunks))
			}
		}
	})
}
