// Package keyfile loads PEM private keys and X.509 certificates, the form in
// which osguard keeps the Secure Boot hierarchy (PK, KEK, db), and checks that
// a key and a certificate belong together.
package keyfile

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
)

// LoadKey reads a PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
func LoadKey(path string) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("keyfile: %w", err)
	}
	k, err := ParseKey(b)
	if err != nil {
		return nil, fmt.Errorf("keyfile: %s: %w", path, err)
	}
	return k, nil
}

// ParseKey parses the first private key block of PEM data.
func ParseKey(b []byte) (crypto.Signer, error) {
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, errors.New("no PEM private key found")
		}
		switch blk.Type {
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
			if err != nil {
				return nil, fmt.Errorf("parse PKCS#8 key: %w", err)
			}
			s, ok := k.(crypto.Signer)
			if !ok {
				return nil, fmt.Errorf("key type %T cannot sign", k)
			}
			return s, nil
		case "RSA PRIVATE KEY":
			k, err := x509.ParsePKCS1PrivateKey(blk.Bytes)
			if err != nil {
				return nil, fmt.Errorf("parse RSA key: %w", err)
			}
			return k, nil
		case "EC PRIVATE KEY":
			k, err := x509.ParseECPrivateKey(blk.Bytes)
			if err != nil {
				return nil, fmt.Errorf("parse EC key: %w", err)
			}
			return k, nil
		case "ENCRYPTED PRIVATE KEY":
			return nil, errors.New("encrypted private keys are not supported")
		}
	}
}

// LoadCert reads a PEM (or DER) X.509 certificate.
func LoadCert(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("keyfile: %w", err)
	}
	c, err := ParseCert(b)
	if err != nil {
		return nil, fmt.Errorf("keyfile: %s: %w", path, err)
	}
	return c, nil
}

// ParseCert parses the first CERTIFICATE block of PEM data, or DER data.
func ParseCert(b []byte) (*x509.Certificate, error) {
	rest := b
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type == "CERTIFICATE" {
			return x509.ParseCertificate(blk.Bytes)
		}
	}
	c, err := x509.ParseCertificate(b)
	if err != nil {
		return nil, errors.New("no PEM certificate and not a DER certificate")
	}
	return c, nil
}

// LoadPair loads a key and a certificate and checks that they match.
func LoadPair(keyPath, certPath string) (crypto.Signer, *x509.Certificate, error) {
	k, err := LoadKey(keyPath)
	if err != nil {
		return nil, nil, err
	}
	c, err := LoadCert(certPath)
	if err != nil {
		return nil, nil, err
	}
	if err := Match(k, c); err != nil {
		return nil, nil, fmt.Errorf("keyfile: %s and %s: %w", keyPath, certPath, err)
	}
	return k, c, nil
}

// ErrMismatch is returned when a private key does not belong to a certificate.
var ErrMismatch = errors.New("private key does not match the certificate's public key")

// Match checks that key is the private half of cert's public key.
func Match(key crypto.Signer, cert *x509.Certificate) error {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	pub, ok := key.Public().(equaler)
	if !ok {
		return fmt.Errorf("unsupported key type %T", key)
	}
	switch cert.PublicKey.(type) {
	case *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey:
	default:
		return fmt.Errorf("unsupported certificate key type %T", cert.PublicKey)
	}
	if !pub.Equal(cert.PublicKey) {
		return ErrMismatch
	}
	return nil
}
