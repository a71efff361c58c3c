package secureboot_test

import (
	"bytes"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/osguard/osguard/internal/testutil"
	"github.com/osguard/osguard/secureboot"
)

var testTime = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// testKeysDir holds one hierarchy per test binary run (RSA key generation is
// the slow part), made on first use; tests must not modify it.
var (
	testKeysDir  string
	testKeysOnce sync.Once
	testKeysErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if testKeysDir != "" {
		os.RemoveAll(filepath.Dir(testKeysDir))
	}
	os.Exit(code)
}

func makeTestKeys() error {
	testKeysOnce.Do(func() {
		d, err := os.MkdirTemp("", "sbkeys")
		if err != nil {
			testKeysErr = err
			return
		}
		testKeysDir = filepath.Join(d, "keys")
		testKeysErr = secureboot.GenerateKeys(testKeysDir, secureboot.KeygenOptions{SubjectPrefix: "sbtest", Time: testTime})
	})
	return testKeysErr
}

func loadTestKeys(t testing.TB) *secureboot.Hierarchy {
	t.Helper()
	if err := makeTestKeys(); err != nil {
		t.Fatal(err)
	}
	h, err := secureboot.LoadHierarchy(testKeysDir)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func run(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

func TestGUID(t *testing.T) {
	g, err := secureboot.ParseGUID("a5c059a1-94e4-4aa7-87b5-ab155c2bf072")
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{0xa1, 0x59, 0xc0, 0xa5, 0xe4, 0x94, 0xa7, 0x4a, 0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0, 0x72}
	if !bytes.Equal(g[:], want) || g != secureboot.EFICertX509 {
		t.Errorf("bytes % x, want % x", g[:], want)
	}
	if g.String() != "a5c059a1-94e4-4aa7-87b5-ab155c2bf072" {
		t.Errorf("String() = %s", g)
	}
	for _, bad := range []string{"", "a5c059a1-94e4-4aa7-87b5-ab155c2bf07", "a5c059a1x94e4-4aa7-87b5-ab155c2bf072", "g5c059a1-94e4-4aa7-87b5-ab155c2bf072"} {
		if _, err := secureboot.ParseGUID(bad); err == nil {
			t.Errorf("ParseGUID(%q) succeeded", bad)
		}
	}
}

// TestContainersOptional: a keys directory from before the containers key
// loads with db alone; a certificate alone loads without the key (the node
// side and the image build need no private key); a key alone is an error.
func TestContainersOptional(t *testing.T) {
	loadTestKeys(t)
	for _, tc := range []struct {
		name   string
		remove []string
		check  func(h *secureboot.Hierarchy) bool
		err    string
	}{
		{"none", []string{"containers.key", "containers.crt"}, func(h *secureboot.Hierarchy) bool {
			return h.Containers == nil && bytes.Equal(h.DBList(), secureboot.CertificateESL(h.Owner, h.DB.Cert))
		}, ""},
		{"cert-only", []string{"containers.key"}, func(h *secureboot.Hierarchy) bool {
			return h.Containers != nil && h.Containers.Key == nil && len(h.DBList()) > len(secureboot.CertificateESL(h.Owner, h.DB.Cert))
		}, ""},
		{"key-only", []string{"containers.crt"}, nil, "without"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			ents, _ := os.ReadDir(testKeysDir)
			for _, e := range ents {
				b, _ := os.ReadFile(filepath.Join(testKeysDir, e.Name()))
				os.WriteFile(filepath.Join(dir, e.Name()), b, 0o600)
			}
			for _, r := range tc.remove {
				os.Remove(filepath.Join(dir, r))
			}
			h, err := secureboot.LoadHierarchy(dir)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("LoadHierarchy: %v, want an error containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(h) {
				t.Fatalf("hierarchy %+v", h.Containers)
			}
		})
	}
}

func TestGenerateKeys(t *testing.T) {
	h := loadTestKeys(t)
	for _, n := range []string{"PK.key", "KEK.key", "db.key", "containers.key"} {
		st, err := os.Stat(filepath.Join(testKeysDir, n))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", n, st.Mode().Perm())
		}
	}
	if h.Containers == nil || h.Containers.Key == nil {
		t.Fatal("no containers key pair")
	}
	if h.Containers.Cert.Equal(h.DB.Cert) {
		t.Fatal("the containers key is the db key")
	}
	for name, kp := range map[string]secureboot.KeyPair{"PK": h.PK, "KEK": h.KEK, "db": h.DB, "containers": *h.Containers} {
		if kp.Cert.Subject.CommonName != "sbtest "+name {
			t.Errorf("%s subject %q", name, kp.Cert.Subject.CommonName)
		}
		if !kp.Cert.NotBefore.Equal(testTime) {
			t.Errorf("%s NotBefore %v, want %v", name, kp.Cert.NotBefore, testTime)
		}
	}
	if !h.Time.Equal(testTime) {
		t.Errorf("hierarchy time %v", h.Time)
	}
	// openssl is the oracle for the certificates: self-signed and valid.
	testutil.NeedTool(t, "openssl")
	for _, n := range []string{"PK", "KEK", "db", "containers"} {
		crt := filepath.Join(testKeysDir, n+".crt")
		if out, err := run(t, "openssl", "verify", "-check_ss_sig", "-CAfile", crt, crt); err != nil {
			t.Errorf("openssl verify %s: %v\n%s", n, err, out)
		}
		if out, err := run(t, "openssl", "pkey", "-in", filepath.Join(testKeysDir, n+".key"), "-noout"); err != nil {
			t.Errorf("openssl pkey %s: %v\n%s", n, err, out)
		}
	}

	// An existing directory is refused, and replaced with Force.
	if err := secureboot.GenerateKeys(testKeysDir, secureboot.KeygenOptions{}); !errors.Is(err, secureboot.ErrExists) {
		t.Errorf("GenerateKeys on an existing dir: %v, want ErrExists", err)
	}
	dir := filepath.Join(t.TempDir(), "k")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "stale"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := secureboot.GenerateKeys(dir, secureboot.KeygenOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "stale")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("--force kept the old directory's content: %v", err)
	}
	h2, err := secureboot.LoadHierarchy(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !h2.Time.Equal(time.Unix(0, 0)) {
		t.Errorf("zero Time gave NotBefore %v, want the Unix epoch", h2.Time)
	}
	ents, _ := os.ReadDir(filepath.Dir(dir))
	if len(ents) != 1 {
		t.Errorf("temporary directories left behind: %v", ents)
	}
}

// TestESLAndAuthMatchEfitools: our .esl files are byte-identical to
// cert-to-efi-sig-list, our .auth files to sign-efi-sig-list given the same
// timestamp, and sig-list-to-certs reads the certificates back.
func TestESLAndAuthMatchEfitools(t *testing.T) {
	testutil.NeedTool(t, "cert-to-efi-sig-list", "sign-efi-sig-list", "sig-list-to-certs")
	h := loadTestKeys(t)
	owner := h.Owner.String()
	tmp := t.TempDir()
	// db holds the db and the containers certificates: its .auth signs
	// both lists, one after the other.
	for _, tc := range []struct {
		name, signer string
		certs        []string // files of the variable's certificates
		cert         []*x509.Certificate
	}{
		{"PK", "PK", []string{"PK"}, []*x509.Certificate{h.PK.Cert}},
		{"KEK", "PK", []string{"KEK"}, []*x509.Certificate{h.KEK.Cert}},
		{"db", "KEK", []string{"db", "containers"}, []*x509.Certificate{h.DB.Cert, h.Containers.Cert}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var want []byte
			for i, name := range tc.certs {
				one := filepath.Join(tmp, name+".esl")
				if out, err := run(t, "cert-to-efi-sig-list", "-g", owner, filepath.Join(testKeysDir, name+".crt"), one); err != nil {
					t.Fatalf("cert-to-efi-sig-list: %v\n%s", err, out)
				}
				w, _ := os.ReadFile(one)
				got, _ := os.ReadFile(filepath.Join(testKeysDir, name+".esl"))
				if !bytes.Equal(got, w) || !bytes.Equal(got, secureboot.CertificateESL(h.Owner, tc.cert[i])) {
					t.Errorf("%s.esl differs from cert-to-efi-sig-list", name)
				}
				want = append(want, w...)
			}
			ref := filepath.Join(tmp, tc.name+".var.esl")
			os.WriteFile(ref, want, 0o644)
			refAuth := filepath.Join(tmp, tc.name+".auth")
			if out, err := run(t, "sign-efi-sig-list", "-t", testTime.Format("2006-01-02 15:04:05"), "-g", owner,
				"-k", filepath.Join(testKeysDir, tc.signer+".key"), "-c", filepath.Join(testKeysDir, tc.signer+".crt"),
				tc.name, ref, refAuth); err != nil {
				t.Fatalf("sign-efi-sig-list: %v\n%s", err, out)
			}
			wantAuth, _ := os.ReadFile(refAuth)
			gotAuth, _ := os.ReadFile(filepath.Join(testKeysDir, tc.name+".auth"))
			if !bytes.Equal(gotAuth, wantAuth) {
				t.Errorf(".auth differs from sign-efi-sig-list (%d vs %d bytes)", len(gotAuth), len(wantAuth))
			}
			// edk2 reads the digest OID at offset 13 of the bare SignedData.
			a, err := secureboot.ParseAuthVar(gotAuth)
			if err != nil {
				t.Fatal(err)
			}
			sha256OID := []byte{0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01}
			if len(a.SignedData) < 22 || !bytes.Equal(a.SignedData[13:22], sha256OID) {
				t.Errorf("SignedData lacks the sha256 OID at offset 13: % x", a.SignedData[:min(24, len(a.SignedData))])
			}
			if !bytes.Equal(a.Data, want) || !a.Time.Equal(testTime) {
				t.Errorf("auth payload: time %v, data %d bytes", a.Time, len(a.Data))
			}
			// sig-list-to-certs writes PREFIX-0.der from the ESL inside the .auth.
			eslOnly := filepath.Join(tmp, tc.name+".payload.esl")
			os.WriteFile(eslOnly, a.Data, 0o644)
			if out, err := run(t, "sig-list-to-certs", eslOnly, filepath.Join(tmp, tc.name)); err != nil {
				t.Fatalf("sig-list-to-certs: %v\n%s", err, out)
			}
			for i, c := range tc.cert {
				der, err := os.ReadFile(filepath.Join(tmp, fmt.Sprintf("%s-%d.der", tc.name, i)))
				if err != nil || !bytes.Equal(der, c.Raw) {
					t.Errorf("sig-list-to-certs gave another certificate %d (%v)", i, err)
				}
			}
		})
	}
}

func TestVerifyAuthVar(t *testing.T) {
	h := loadTestKeys(t)
	pk, kek, db, err := h.AuthFiles()
	if err != nil {
		t.Fatal(err)
	}
	tampered := bytes.Clone(db)
	tampered[len(tampered)-1] ^= 1
	for _, tc := range []struct {
		name string
		v    secureboot.Variable
		auth []byte
		cert *x509.Certificate
		ok   bool
	}{
		{"PK by PK", secureboot.VarPK, pk, h.PK.Cert, true},
		{"KEK by PK", secureboot.VarKEK, kek, h.PK.Cert, true},
		{"db by KEK", secureboot.VarDB, db, h.KEK.Cert, true},
		{"db checked against PK", secureboot.VarDB, db, h.PK.Cert, false},
		{"db payload as KEK", secureboot.VarKEK, db, h.KEK.Cert, false},
		{"tampered db", secureboot.VarDB, tampered, h.KEK.Cert, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := secureboot.VerifyAuthVar(tc.v, tc.auth, tc.cert)
			if (err == nil) != tc.ok {
				t.Errorf("VerifyAuthVar = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestParseSignatureLists(t *testing.T) {
	h := loadTestKeys(t)
	hash := bytes.Repeat([]byte{0xab}, 32)
	hashList := append(append(append([]byte{}, secureboot.EFICertSHA256[:]...),
		binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, 28+2*48), 0), 48)...),
		append(append(append(h.Owner[:], hash...), h.Owner[:]...), hash...)...)
	db := append(append(secureboot.CertificateESL(h.Owner, h.DB.Cert), hashList...), secureboot.CertificateESL(h.Owner, h.KEK.Cert)...)
	sigs, err := secureboot.ParseSignatureLists(db)
	if err != nil {
		t.Fatal(err)
	}
	if len(sigs) != 4 || sigs[1].Type != secureboot.EFICertSHA256 || !bytes.Equal(sigs[2].Data, hash) || sigs[0].Owner != h.Owner {
		t.Fatalf("parsed %d signatures: %+v", len(sigs), sigs)
	}
	certs, err := secureboot.Certificates(sigs)
	if err != nil || len(certs) != 2 || !certs[0].Equal(h.DB.Cert) || !certs[1].Equal(h.KEK.Cert) {
		t.Errorf("Certificates: %v, %d", err, len(certs))
	}
	for name, bad := range map[string][]byte{
		"short":          db[:20],
		"truncated":      db[:len(db)-1],
		"list size zero": append(bytes.Clone(db[:16]), make([]byte, 12)...),
		"sig size small": func() []byte { b := bytes.Clone(db); binary.LittleEndian.PutUint32(b[24:], 3); return b }(),
		"uneven":         func() []byte { b := bytes.Clone(db); binary.LittleEndian.PutUint32(b[24:], 17); return b }(),
	} {
		if _, err := secureboot.ParseSignatureLists(bad); !errors.Is(err, secureboot.ErrSignatureList) {
			t.Errorf("%s: err = %v, want ErrSignatureList", name, err)
		}
	}
}

// memVars is an in-memory Vars that applies setup-mode semantics: writing
// PK ends setup mode.
type memVars struct {
	vars   map[secureboot.Variable][]byte
	writes []string
}

func (m *memVars) Get(v secureboot.Variable) (uint32, []byte, error) {
	b, ok := m.vars[v]
	if !ok {
		return 0, nil, fs.ErrNotExist
	}
	return secureboot.AuthVarAttributes, b, nil
}

func (m *memVars) Set(v secureboot.Variable, attrs uint32, data []byte) error {
	m.writes = append(m.writes, v.Name)
	a, err := secureboot.ParseAuthVar(data)
	if err != nil {
		return err
	}
	m.vars[v] = a.Data
	if v == secureboot.VarPK {
		m.vars[secureboot.VarSetupMode] = []byte{0}
	}
	return nil
}

func TestEnroll(t *testing.T) {
	h := loadTestKeys(t)
	u, err := secureboot.LoadAuthUpdates(testKeysDir)
	if err != nil {
		t.Fatal(err)
	}
	m := &memVars{vars: map[secureboot.Variable][]byte{secureboot.VarSetupMode: {1}, secureboot.VarSecureBoot: {0}}}
	before, after, err := secureboot.Enroll(m, u)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(m.writes, ",") != "db,KEK,PK" {
		t.Errorf("write order %v, want db,KEK,PK", m.writes)
	}
	if !before.SetupMode || after.SetupMode || len(after.DB) != 2 || !after.DB[0].Equal(h.DB.Cert) || !after.DB[1].Equal(h.Containers.Cert) || !after.PK[0].Equal(h.PK.Cert) {
		t.Errorf("before %+v after %+v", before, after)
	}
	// In user mode nothing is written.
	m.writes = nil
	if _, _, err := secureboot.Enroll(m, u); !errors.Is(err, secureboot.ErrNotSetupMode) || len(m.writes) != 0 {
		t.Errorf("Enroll in user mode: %v, writes %v", err, m.writes)
	}
}

// TestEfivarfs checks the file format against a plain directory standing in
// for efivarfs.
func TestEfivarfs(t *testing.T) {
	dir := t.TempDir()
	e := secureboot.Efivarfs{Dir: dir}
	os.WriteFile(filepath.Join(dir, "SetupMode-8be4df61-93ca-11d2-aa0d-00e098032b8c"), []byte{6, 0, 0, 0, 1}, 0o644)
	os.WriteFile(filepath.Join(dir, "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"), []byte{6, 0, 0, 0, 0}, 0o644)
	os.WriteFile(filepath.Join(dir, "PK-8be4df61-93ca-11d2-aa0d-00e098032b8c"), nil, 0o644) // left by a failed write
	st, err := secureboot.ReadState(e)
	if err != nil {
		t.Fatal(err)
	}
	if !st.SetupMode || st.SecureBoot || st.Enforcing() || len(st.PK) != 0 {
		t.Errorf("state %+v", st)
	}
	if err := e.Set(secureboot.VarDB, secureboot.AuthVarAttributes, []byte("xyz")); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "db-d719b2cb-3d3a-4596-a3bc-dad00e67656f"))
	if !bytes.Equal(b, []byte{0x27, 0, 0, 0, 'x', 'y', 'z'}) {
		t.Errorf("efivarfs file % x", b)
	}
	os.WriteFile(filepath.Join(dir, "SetupMode-8be4df61-93ca-11d2-aa0d-00e098032b8c"), []byte{6, 0, 0, 0, 2}, 0o644)
	if _, err := secureboot.ReadState(e); err == nil {
		t.Error("SetupMode=2 accepted")
	}
}

func TestVarstore(t *testing.T) {
	h := loadTestKeys(t)
	for _, tmpl := range []string{"/usr/share/OVMF/OVMF_VARS_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd"} {
		t.Run(filepath.Base(tmpl), func(t *testing.T) {
			testutil.NeedFile(t, tmpl)
			in, _ := os.ReadFile(tmpl)
			before, err := secureboot.ReadVarstore(in)
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			if err := secureboot.WriteVarstore(in, h, &out); err != nil {
				t.Fatal(err)
			}
			if out.Len() != len(in) || !bytes.Equal(out.Bytes()[:0x48], in[:0x48]) {
				t.Fatalf("size or FV header changed")
			}
			vs, err := secureboot.ReadVarstore(out.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]secureboot.StoredVariable{}
			for _, v := range vs {
				if _, dup := got[v.Name]; dup {
					t.Errorf("variable %s is live twice", v.Name)
				}
				got[v.Name] = v
			}
			dbList := append(secureboot.CertificateESL(h.Owner, h.DB.Cert), secureboot.CertificateESL(h.Owner, h.Containers.Cert)...)
			for _, c := range []struct {
				name string
				guid secureboot.GUID
				esl  []byte
			}{{"PK", secureboot.EFIGlobalVariable, secureboot.CertificateESL(h.Owner, h.PK.Cert)},
				{"KEK", secureboot.EFIGlobalVariable, secureboot.CertificateESL(h.Owner, h.KEK.Cert)},
				{"db", secureboot.EFIImageSecurityDatabase, dbList}} {
				v, ok := got[c.name]
				if !ok || v.GUID != c.guid || v.Attributes != secureboot.AuthVarAttributes || !v.Time.Equal(testTime) ||
					!bytes.Equal(v.Data, c.esl) {
					t.Errorf("%s: %+v", c.name, v)
				}
			}
			if v := got["SecureBootEnable"]; !bytes.Equal(v.Data, []byte{1}) {
				t.Errorf("SecureBootEnable = %v", v.Data)
			}
			// Every other variable of the template survives, once.
			key := func(v secureboot.StoredVariable) string { return v.Name + "-" + v.GUID.String() }
			want := map[string]bool{
				"PK-" + secureboot.EFIGlobalVariable.String(): true, "KEK-" + secureboot.EFIGlobalVariable.String(): true,
				"db-" + secureboot.EFIImageSecurityDatabase.String(): true, "SecureBootEnable-" + secureboot.EFISecureBootEnableDisable.String(): true,
			}
			for _, v := range before {
				want[key(v)] = true
			}
			have := map[string]bool{}
			for _, v := range vs {
				have[key(v)] = true
			}
			if len(vs) != len(want) || len(have) != len(want) {
				t.Errorf("%d variables before, %d after, want %d", len(before), len(vs), len(want))
			}
			for k := range want {
				if !have[k] {
					t.Errorf("variable %s missing after WriteVarstore", k)
				}
			}
		})
	}
	if _, err := secureboot.ReadVarstore(make([]byte, 4096)); err == nil {
		t.Error("zeros accepted as a varstore")
	}
}
