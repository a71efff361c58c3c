package verity

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/osguard/osguard/internal/p7"
)

// ErrKeyMismatch is returned when the signing key does not belong to the certificate.
var ErrKeyMismatch = errors.New("verity: key does not match the certificate")

// rootHashContent is what the kernel's dm-verity signature check covers:
// the root hash as lowercase hex, no newline (drivers/md/dm-verity-verify-sig.c).
func rootHashContent(rootHash []byte) []byte { return []byte(hex.EncodeToString(rootHash)) }

// SignRootHash returns a detached PKCS#7 DER signature over the lowercase
// hex root hash, sha256 and without authenticated attributes: the blob the
// kernel checks for root_hash_sig_key_desc.
func SignRootHash(rootHash []byte, key crypto.Signer, cert *x509.Certificate) ([]byte, error) {
	if len(rootHash) == 0 {
		return nil, errors.New("verity: empty root hash")
	}
	if key == nil || cert == nil {
		return nil, errors.New("verity: sign: key and certificate needed")
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return nil, ErrKeyMismatch
	}
	sig, err := p7.SignDetached(rootHashContent(rootHash), key, cert)
	if err != nil {
		return nil, fmt.Errorf("verity: sign root hash: %w", err)
	}
	return sig, nil
}

// VerifyRootHashSignature checks that sig is cert's signature over rootHash
// (as SignRootHash makes it).
func VerifyRootHashSignature(rootHash []byte, sig []byte, cert *x509.Certificate) error {
	if _, err := p7.Verify(sig, rootHashContent(rootHash), cert); err != nil {
		return fmt.Errorf("verity: root hash signature: %w", err)
	}
	return nil
}

// SignatureJSON is the content of a Discoverable Partitions Specification
// verity signature partition (e.g. usr-x86-64-verity-sig): a JSON object
// padded with NULs to the partition size.
type SignatureJSON struct {
	// RootHash is the lowercase hex root hash.
	RootHash string `json:"rootHash"`
	// CertificateFingerprint is the lowercase hex SHA-256 of the signing
	// certificate's DER.
	CertificateFingerprint string `json:"certificateFingerprint,omitempty"`
	// Signature is the base64 detached PKCS#7 DER signature.
	Signature string `json:"signature"`
}

// maxSignatureJSON bounds what ParseSignatureJSON accepts; the partition
// is small (systemd-repart makes it 16 KiB).
const maxSignatureJSON = 1 << 20

// NewSignatureJSON fills the object for a root hash, its signature and the certificate.
func NewSignatureJSON(rootHash, sig []byte, cert *x509.Certificate) *SignatureJSON {
	fp := sha256.Sum256(cert.Raw)
	return &SignatureJSON{
		RootHash:               hex.EncodeToString(rootHash),
		CertificateFingerprint: hex.EncodeToString(fp[:]),
		Signature:              base64.StdEncoding.EncodeToString(sig),
	}
}

// MarshalPadded encodes the object compactly and pads it with NULs to size bytes.
func (s *SignatureJSON) MarshalPadded(size int) ([]byte, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("verity: signature JSON: %w", err)
	}
	if len(b) > size {
		return nil, fmt.Errorf("verity: signature JSON is %d bytes, does not fit in %d", len(b), size)
	}
	out := make([]byte, size)
	copy(out, b)
	return out, nil
}

// ParseSignatureJSON decodes a signature partition's content: one JSON
// object followed only by NULs (or whitespace), with a hex rootHash, a
// base64 signature and, if present, a SHA-256 hex certificateFingerprint.
func ParseSignatureJSON(b []byte) (*SignatureJSON, error) {
	if len(b) > maxSignatureJSON {
		return nil, fmt.Errorf("verity: signature JSON: %d bytes, at most %d", len(b), maxSignatureJSON)
	}
	b = bytes.TrimRight(b, "\x00")
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var s SignatureJSON
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("verity: signature JSON: %w", err)
	}
	if rest := bytes.TrimSpace(b[dec.InputOffset():]); len(rest) != 0 {
		return nil, errors.New("verity: signature JSON: data after the object")
	}
	if _, err := s.RootHashBytes(); err != nil {
		return nil, err
	}
	if _, err := s.SignatureBytes(); err != nil {
		return nil, err
	}
	if s.CertificateFingerprint != "" {
		fp, err := hex.DecodeString(s.CertificateFingerprint)
		if err != nil || len(fp) != sha256.Size {
			return nil, fmt.Errorf("verity: signature JSON: bad certificateFingerprint %q", s.CertificateFingerprint)
		}
	}
	return &s, nil
}

// RootHashBytes decodes RootHash.
func (s *SignatureJSON) RootHashBytes() ([]byte, error) {
	h, err := hex.DecodeString(s.RootHash)
	if err != nil || len(h) < 20 || len(h) > 64 {
		return nil, fmt.Errorf("verity: signature JSON: bad rootHash %q", s.RootHash)
	}
	return h, nil
}

// SignatureBytes decodes Signature.
func (s *SignatureJSON) SignatureBytes() ([]byte, error) {
	sig, err := base64.StdEncoding.DecodeString(s.Signature)
	if err != nil {
		return nil, fmt.Errorf("verity: signature JSON: bad signature: %w", err)
	}
	if len(sig) == 0 {
		return nil, errors.New("verity: signature JSON: empty signature")
	}
	return sig, nil
}

// Verify checks the signature with cert and, when present, that the
// fingerprint names cert.
func (s *SignatureJSON) Verify(cert *x509.Certificate) error {
	if s.CertificateFingerprint != "" {
		fp := sha256.Sum256(cert.Raw)
		if s.CertificateFingerprint != hex.EncodeToString(fp[:]) {
			return errors.New("verity: signature JSON: certificateFingerprint names another certificate")
		}
	}
	root, err := s.RootHashBytes()
	if err != nil {
		return err
	}
	sig, err := s.SignatureBytes()
	if err != nil {
		return err
	}
	return VerifyRootHashSignature(root, sig, cert)
}

// DeriveSalt returns a 32-byte salt determined by seed (for reproducible
// images: seed with what identifies the content, e.g. its digest).
func DeriveSalt(seed []byte) []byte {
	h := sha256.New()
	h.Write([]byte("osguard verity salt\x00"))
	h.Write(seed)
	return h.Sum(nil)
}

// DeriveUUID returns a UUID determined by seed, with the RFC 9562 version 4
// and variant bits set as systemd's app-specific ids do, so that tools
// that check them accept it.
func DeriveUUID(seed []byte) [16]byte {
	h := sha256.New()
	h.Write([]byte("osguard verity uuid\x00"))
	h.Write(seed)
	var u [16]byte
	copy(u[:], h.Sum(nil))
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return u
}
