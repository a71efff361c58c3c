package update

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/hex"
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
	"github.com/osguard/osguard/verity"
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

// defaultTestUsr is the usr size of testManifest and testPayloads: it
// spans several chunks.
const defaultTestUsr = 2*ChunkSize + 3*4096

// testManifest is a manifest for testPayloads.
func testManifest() Manifest {
	m, _ := testImage(defaultTestUsr)
	return m
}

// testPayloads returns payload contents; usr spans several chunks.
func testPayloads() map[string][]byte {
	_, p := testImage(defaultTestUsr)
	return p
}

func testPayloadsSized(usrSize int) map[string][]byte {
	_, p := testImage(usrSize)
	return p
}

// testImage returns synthetic payloads with a real hash tree over a usr
// of usrSize bytes, and a manifest for them (the root hash and the DPS
// UUIDs it gives).
func testImage(usrSize int) (Manifest, map[string][]byte) {
	usr := make([]byte, usrSize)
	for i := range usr {
		usr[i] = byte(i * 7 / 4096)
	}
	p := verity.DefaultParams()
	p.Salt = []byte("test salt")
	tree := &memTree{}
	res, err := verity.Format(bytes.NewReader(usr), tree, p)
	if err != nil {
		panic(err)
	}
	var m Manifest
	m.Architecture = Architecture
	m.Image.Name, m.Image.Version = "test", "2"
	m.IPE.PolicyName, m.IPE.PolicyVersion = "test", "1.0.1"
	m.Usr.RootHash = hex.EncodeToString(res.RootHash)
	uuid := func(b []byte) string {
		h := hex.EncodeToString(b)
		return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
	}
	m.Usr.PartUUID, m.Usr.VerityPartUUID = uuid(res.RootHash[:16]), uuid(res.RootHash[16:])
	m.Layout = Layout{Slots: 2, SectorSize: 512, UsrBytes: 8 << 20, VerityBytes: 1 << 20, SigBytes: 1 << 20}
	return m, map[string][]byte{
		PayloadMeasurements: []byte(`{"image":"test"}`),
		PayloadSignature:    []byte(`{"rootHash":"x"}`),
		PayloadUsr:          usr,
		PayloadVerity:       tree.b,
		PayloadUKI:          []byte("MZ not really a UKI"),
	}
}

// memTree is a hash device in memory.
type memTree struct{ b []byte }

func (m *memTree) WriteAt(p []byte, off int64) (int, error) {
	if end := int(off) + len(p); end > len(m.b) {
		m.b = append(m.b, make([]byte, end-len(m.b))...)
	}
	return copy(m.b[off:], p), nil
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
	r, err := Open(bytes.NewReader(good), []*x509.Certificate{cert})
	if err != nil {
		t.Fatal(err)
	}
	usrStart := int(r.offsets[3])
	otherRoot := testManifest()
	otherRoot.Usr.RootHash = strings.Repeat("ab", 16) + strings.Repeat("cd", 16)
	otherRoot.Usr.PartUUID = "abababab-abab-abab-abab-abababababab"
	otherRoot.Usr.VerityPartUUID = "cdcdcdcd-cdcd-cdcd-cdcd-cdcdcdcdcdcd"
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
		{"format 1", func() []byte { b := bytes.Clone(good); b[15] = 1; return b }(), nil, "bundle format 1", 0},
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
		{"flipped usr-verity byte", flip(int(r.offsets[2]) + 4096 + 17), nil, "payload usr-verity: chunk 0", 2},
		{"tree of another root hash", packTest(t, otherRoot, key, cert), nil, "does not hold the tree of the signed root hash", 2},
		{"flipped usr byte", flip(usrStart + ChunkSize + 17), nil, "payload usr: chunk 1", 3},
		{"flipped usr byte in the last block", flip(usrStart + defaultTestUsr - 1), nil, "payload usr: chunk 2", 3},
		{"truncated usr", good[:usrStart+100], nil, "truncated", 3},
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
		{"too few chunks", func(m *Manifest) { m.Payloads[4].Chunks = nil }, "chunk hashes"},
		{"usr with hashes", func(m *Manifest) { m.Payloads[3].SHA256 = m.Payloads[4].SHA256 }, "checked against the usr-verity tree"},
		{"usr not whole blocks", func(m *Manifest) { m.Payloads[3].Size += 100 }, "4096-byte blocks"},
		{"huge tree", func(m *Manifest) { m.Payloads[2].Size = maxVerityPayload + 1 }, "out of range"},
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

// TestSeeds checks that the named seeds of testdata/fuzz are what this
// code makes (a format change must regenerate them); with
// OSGUARD_WRITE_SEEDS=1 it writes them.
func TestSeeds(t *testing.T) {
	key, cert := testKey(t, "db")
	m, small := testImage(8192)
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
	write := os.Getenv("OSGUARD_WRITE_SEEDS") == "1"
	for name, b := range seeds {
		dir := "testdata/fuzz/FuzzOpen"
		if name == "manifest-as-blob" {
			dir = "testdata/fuzz/FuzzParseManifest"
		}
		path := filepath.Join(dir, name)
		want := []byte(fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b))
		if write {
			os.MkdirAll(dir, 0o755)
			if err := os.WriteFile(path, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s is not what this code makes (%v): OSGUARD_WRITE_SEEDS=1 go test -run TestSeeds ./update rewrites it", path, err)
		}
	}
}

func FuzzOpen(f *testing.F) {
	key, cert := testKey(f, "db")
	m, small := testImage(8192)
	f.Add(packSized(f, m, key, cert, small))
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
	f.Add([]byte(`{"format":2}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseManifest(data)
		if err != nil {
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("parsed but invalid: %v", err)
		}
		for _, p := range m.Payloads {
			if p.Name == PayloadUsr && len(p.Chunks) == 0 && p.Size > 0 {
				continue // checked against the tree
			}
			if p.Size <= 0 || int64(len(p.Chunks)) != (p.Size+ChunkSize-1)/ChunkSize {
				t.Fatalf("payload %s: size %d with %d chunks", p.Name, p.Size, len(p.Chunks))
			}
		}
	})
}
