// Package p7 makes and checks the PKCS#7 SignedData blobs the Linux kernel
// accepts for dm-verity root hashes (detached) and IPE policies (attached):
// sha256, RSA, one signer whose certificate is included, and no
// authenticated attributes (as `openssl smime -sign -noattr -binary`).
// It is a thin layer over github.com/smallstep/pkcs7.
package p7

import (
	"bytes"
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/smallstep/pkcs7"
)

func sign(content []byte, key crypto.Signer, cert *x509.Certificate, detach bool) ([]byte, error) {
	sd, err := pkcs7.NewSignedData(content)
	if err != nil {
		return nil, fmt.Errorf("pkcs7: %w", err)
	}
	sd.SetDigestAlgorithm(pkcs7.OIDDigestAlgorithmSHA256)
	if _, ok := key.Public().(*rsa.PublicKey); ok {
		// The kernel's PKCS#7 parser (crypto/asymmetric_keys/pkcs7_parser.c)
		// takes rsaEncryption as the signature algorithm and refuses
		// sha256WithRSAEncryption with "Unsupported pkey algo" (ENOPKG);
		// openssl smime writes rsaEncryption too.
		sd.SetEncryptionAlgorithm(pkcs7.OIDEncryptionAlgorithmRSA)
	}
	if err := sd.SignWithoutAttr(cert, key, pkcs7.SignerInfoConfig{}); err != nil {
		return nil, fmt.Errorf("pkcs7: sign: %w", err)
	}
	if detach {
		sd.Detach()
	}
	der, err := sd.Finish()
	if err != nil {
		return nil, fmt.Errorf("pkcs7: %w", err)
	}
	return der, nil
}

// SignDetached signs content and returns DER without the content inside.
func SignDetached(content []byte, key crypto.Signer, cert *x509.Certificate) ([]byte, error) {
	return sign(content, key, cert, true)
}

// SignAttached signs content and returns DER that carries the content.
func SignAttached(content []byte, key crypto.Signer, cert *x509.Certificate) ([]byte, error) {
	return sign(content, key, cert, false)
}

// ErrWrongSigner is returned when a valid signature was made by another certificate.
var ErrWrongSigner = errors.New("pkcs7: signed by a different certificate")

// ErrMalformed is returned when the blob is not PKCS#7 DER at all.
var ErrMalformed = errors.New("pkcs7: not a PKCS#7 DER signature")

// ErrBadSignature is returned when the signer is right but the signature
// does not match the content (another content, or a modified blob).
var ErrBadSignature = errors.New("pkcs7: the signature does not match the signed content")

// Verify checks a PKCS#7 signature made by cert. For a detached signature
// pass the content; for an attached one pass nil and get the content back.
func Verify(der, content []byte, cert *x509.Certificate) ([]byte, error) {
	p, err := pkcs7.Parse(der)
	if err != nil {
		// The ASN.1 decoder's detail means nothing to a user.
		return nil, fmt.Errorf("%w (%d bytes)", ErrMalformed, len(der))
	}
	if content != nil {
		if len(p.Content) != 0 && !bytes.Equal(p.Content, content) {
			return nil, errors.New("pkcs7: attached content differs from the given content")
		}
		p.Content = content
	}
	if len(p.Signers) != 1 {
		return nil, fmt.Errorf("pkcs7: %d signers, want 1", len(p.Signers))
	}
	signer := p.GetOnlySigner()
	if signer == nil {
		// The kernel also finds the signer by issuer+serial among embedded
		// certificates; without one we can still check against cert.
		p.Certificates = append(p.Certificates, cert)
		signer = p.GetOnlySigner()
	}
	if signer == nil || !signer.Equal(cert) {
		// Try verifying with cert explicitly, in case the blob omitted it.
		return nil, ErrWrongSigner
	}
	if err := p.Verify(); err != nil {
		if errors.Is(err, rsa.ErrVerification) {
			return nil, ErrBadSignature
		}
		return nil, fmt.Errorf("pkcs7: verify: %w", err)
	}
	return p.Content, nil
}
