package secureboot

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/osguard/osguard/internal/keyfile"
)

// KeygenOptions controls GenerateKeys. The zero value is usable.
type KeygenOptions struct {
	// SubjectPrefix starts each certificate's common name ("<prefix> PK").
	// Default "osguard".
	SubjectPrefix string
	// Force replaces an existing directory.
	Force bool
	// Time is the certificates' NotBefore and the timestamp of the .auth
	// files. The zero value means the Unix epoch, so that nothing reads the
	// clock unless the caller passes time.Now().
	Time time.Time
	// Rand supplies the certificate serial numbers and the owner GUID
	// (default crypto/rand). Since Go 1.26 RSA key generation always uses
	// the system's secure source.
	Rand io.Reader
}

// KeyPair is a private key and its certificate.
type KeyPair struct {
	Key  crypto.Signer
	Cert *x509.Certificate
}

// Hierarchy is the user's Secure Boot key hierarchy PK → KEK → db.
type Hierarchy struct {
	PK, KEK, DB KeyPair
	// Containers is the container image signing key (containers.key,
	// .crt), nil when the directory has none. Its certificate is enrolled
	// in db beside DB's, because the kernel checks the dm-verity root hash
	// signatures of container layers against the platform keyring, which
	// holds the db certificates. Key is nil when only the certificate is
	// present (the key can stay on the publisher's machine).
	//
	// Any db certificate can also verify boot binaries: the firmware would
	// start an EFI application signed with the containers key. That is
	// why it is a key of its own, apart from the db key that signs UKIs:
	// whoever signs images does not also get to sign what boots.
	Containers *KeyPair
	// Owner is the SignatureOwner GUID of the enrolled certificates.
	Owner GUID
	// Time is the timestamp used for the authenticated variables (the PK
	// certificate's NotBefore).
	Time time.Time
}

// ErrExists is returned by GenerateKeys for an existing directory without Force.
var ErrExists = errors.New("secureboot: key directory exists (use --force to replace it)")

// Key files of a hierarchy directory.
const (
	OwnerFile = "owner.guid"
	// ContainersName is the base name of the container signing key files
	// (containers.key, containers.crt, containers.esl).
	ContainersName = "containers"
	keyBits        = 2048 // what edk2 2022.11 and efitools handle everywhere
)

// notAfter is RFC 5280's "no well-defined expiration date"; firmware does
// not check validity, and expiring Secure Boot keys only brick machines.
var notAfter = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)

// GenerateKeys creates a new hierarchy in dir: {PK,KEK,db,containers}.key
// (PKCS#8 PEM, mode 0600), .crt (PEM), .esl (the certificate as a signature
// list), {PK,KEK,db}.auth (the signed update: PK by PK, KEK by PK, db by
// KEK; db holds the db and the containers certificates) and owner.guid. The
// files appear together: they are written to a temporary directory next to
// dir, which is then renamed.
func GenerateKeys(dir string, opts KeygenOptions) error {
	if _, err := os.Lstat(dir); err == nil && !opts.Force {
		return fmt.Errorf("%w: %s", ErrExists, dir)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("secureboot: %w", err)
	}
	r := opts.Rand
	if r == nil {
		r = rand.Reader
	}
	prefix := opts.SubjectPrefix
	if prefix == "" {
		prefix = "osguard"
	}
	ts := opts.Time
	if ts.IsZero() {
		ts = time.Unix(0, 0)
	}
	ts = ts.UTC().Truncate(time.Second)

	h := &Hierarchy{Time: ts}
	var err error
	if h.Owner, err = NewRandomGUID(r); err != nil {
		return err
	}
	for _, kp := range []struct {
		p    *KeyPair
		name string
	}{{&h.PK, "PK"}, {&h.KEK, "KEK"}, {&h.DB, "db"}} {
		if *kp.p, err = newKeyPair(r, prefix+" "+kp.name, ts); err != nil {
			return err
		}
	}
	// RSA like db: the kernel's PKCS#7 check of the verity root hash
	// signature has been proven with this kind of key.
	ck, err := newKeyPair(r, prefix+" "+ContainersName, ts)
	if err != nil {
		return err
	}
	h.Containers = &ck

	parent := filepath.Dir(filepath.Clean(dir))
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dir)+".tmp-")
	if err != nil {
		return fmt.Errorf("secureboot: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := writeHierarchy(tmp, h); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return fmt.Errorf("secureboot: %w", err)
	}
	if opts.Force {
		old := tmp + ".old"
		if err := os.Rename(dir, old); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("secureboot: %w", err)
		}
		defer os.RemoveAll(old)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("secureboot: %w", err)
	}
	return nil
}

func newKeyPair(r io.Reader, cn string, notBefore time.Time) (KeyPair, error) {
	key, err := rsa.GenerateKey(rand.Reader, keyBits)
	if err != nil {
		return KeyPair{}, fmt.Errorf("secureboot: generate %s key: %w", cn, err)
	}
	serial := make([]byte, 16)
	if _, err := io.ReadFull(r, serial); err != nil {
		return KeyPair{}, fmt.Errorf("secureboot: serial: %w", err)
	}
	serial[0] &= 0x7f
	tmpl := &x509.Certificate{
		SerialNumber:          new(big.Int).SetBytes(serial),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		SignatureAlgorithm:    x509.SHA256WithRSA,
	}
	raw, err := x509.CreateCertificate(r, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return KeyPair{}, fmt.Errorf("secureboot: certificate %s: %w", cn, err)
	}
	cert, err := x509.ParseCertificate(raw)
	if err != nil {
		return KeyPair{}, fmt.Errorf("secureboot: certificate %s: %w", cn, err)
	}
	return KeyPair{key, cert}, nil
}

// AuthFiles returns the signed updates (.auth contents) of PK, KEK and db.
func (h *Hierarchy) AuthFiles() (pk, kek, db []byte, err error) {
	if pk, err = SignVariable(VarPK, CertificateESL(h.Owner, h.PK.Cert), h.Time, h.PK.Key, h.PK.Cert); err != nil {
		return
	}
	if kek, err = SignVariable(VarKEK, CertificateESL(h.Owner, h.KEK.Cert), h.Time, h.PK.Key, h.PK.Cert); err != nil {
		return
	}
	db, err = SignVariable(VarDB, h.DBList(), h.Time, h.KEK.Key, h.KEK.Cert)
	return
}

// DBList returns the content of the db variable: the db certificate's
// signature list, followed by the containers certificate's when there is
// one.
func (h *Hierarchy) DBList() []byte {
	l := CertificateESL(h.Owner, h.DB.Cert)
	if h.Containers != nil {
		l = append(l, CertificateESL(h.Owner, h.Containers.Cert)...)
	}
	return l
}

func writeHierarchy(dir string, h *Hierarchy) error {
	pk, kek, db, err := h.AuthFiles()
	if err != nil {
		return err
	}
	files := map[string][]byte{OwnerFile: []byte(h.Owner.String() + "\n")}
	pairs := []struct {
		name string
		kp   KeyPair
		auth []byte
	}{{"PK", h.PK, pk}, {"KEK", h.KEK, kek}, {"db", h.DB, db}}
	if h.Containers != nil {
		pairs = append(pairs, struct {
			name string
			kp   KeyPair
			auth []byte
		}{ContainersName, *h.Containers, nil})
	}
	for _, v := range pairs {
		k, err := x509.MarshalPKCS8PrivateKey(v.kp.Key)
		if err != nil {
			return fmt.Errorf("secureboot: %s key: %w", v.name, err)
		}
		if err := os.WriteFile(filepath.Join(dir, v.name+".key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: k}), 0o600); err != nil {
			return fmt.Errorf("secureboot: %w", err)
		}
		files[v.name+".crt"] = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: v.kp.Cert.Raw})
		files[v.name+".esl"] = CertificateESL(h.Owner, v.kp.Cert)
		if v.auth != nil {
			files[v.name+".auth"] = v.auth
		}
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return fmt.Errorf("secureboot: %w", err)
		}
	}
	return nil
}

// LoadHierarchy reads a directory written by GenerateKeys.
func LoadHierarchy(dir string) (*Hierarchy, error) {
	h := &Hierarchy{}
	for _, v := range []struct {
		p    *KeyPair
		name string
	}{{&h.PK, "PK"}, {&h.KEK, "KEK"}, {&h.DB, "db"}} {
		k, c, err := keyfile.LoadPair(filepath.Join(dir, v.name+".key"), filepath.Join(dir, v.name+".crt"))
		if err != nil {
			return nil, fmt.Errorf("secureboot: %w", err)
		}
		*v.p = KeyPair{k, c}
	}
	var err error
	if h.Containers, err = loadContainers(dir); err != nil {
		return nil, err
	}
	if h.Owner, err = LoadOwner(dir); err != nil {
		return nil, err
	}
	h.Time = h.PK.Cert.NotBefore
	return h, nil
}

// loadContainers reads DIR/containers.crt and, when present,
// DIR/containers.key; neither present is no containers key.
func loadContainers(dir string) (*KeyPair, error) {
	crt := filepath.Join(dir, ContainersName+".crt")
	key := filepath.Join(dir, ContainersName+".key")
	if _, err := os.Stat(crt); errors.Is(err, fs.ErrNotExist) {
		if _, kerr := os.Stat(key); kerr == nil {
			return nil, fmt.Errorf("secureboot: %s without %s", key, crt)
		}
		return nil, nil
	}
	if _, err := os.Stat(key); errors.Is(err, fs.ErrNotExist) {
		c, err := keyfile.LoadCert(crt)
		if err != nil {
			return nil, fmt.Errorf("secureboot: %w", err)
		}
		return &KeyPair{Cert: c}, nil
	}
	k, c, err := keyfile.LoadPair(key, crt)
	if err != nil {
		return nil, fmt.Errorf("secureboot: %w", err)
	}
	return &KeyPair{k, c}, nil
}

// LoadOwner reads DIR/owner.guid.
func LoadOwner(dir string) (GUID, error) {
	b, err := os.ReadFile(filepath.Join(dir, OwnerFile))
	if err != nil {
		return GUID{}, fmt.Errorf("secureboot: %w", err)
	}
	return ParseGUID(string(b))
}
