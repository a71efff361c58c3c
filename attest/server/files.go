package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"strings"
	"time"

	"github.com/osguard/osguard/attest/store"
	"github.com/osguard/osguard/internal/atomicfile"
)

// LoadOrCreateToken reads the admin token from path, one line. When the
// file is absent it creates it, mode 0600, with 32 random bytes in hex.
func LoadOrCreateToken(path string) (tok string, created bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		tok = hex.EncodeToString(store.Random(32))
		if err := atomicfile.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
			return "", false, fmt.Errorf("token file: %w", err)
		}
		return tok, true, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("token file: %w", err)
	}
	return ParseToken(b, path)
}

// ParseToken reads a token file's content: one non-empty line.
func ParseToken(b []byte, path string) (string, bool, error) {
	tok := strings.TrimSpace(string(b))
	if tok == "" || strings.ContainsAny(tok, " \t\r\n") {
		return "", false, fmt.Errorf("token file %s: want one line holding the token", path)
	}
	return tok, false, nil
}

// LoadEKRoots reads PEM certificates of the CAs EK certificates must chain to.
func LoadEKRoots(paths []string) (*x509.CertPool, error) {
	if len(paths) == 0 {
		return nil, nil
	}
	pool := x509.NewCertPool()
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("--ek-ca: %w", err)
		}
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("--ek-ca %s: no PEM certificate", p)
		}
	}
	return pool, nil
}

// LoadOrCreateTLS returns the verifier's TLS certificate from certPath and
// keyPath, creating a self-signed ECDSA P-256 pair (valid ten years, for
// localhost, 127.0.0.1 and hosts) when they are absent. Clients trust it
// with --ca certPath.
func LoadOrCreateTLS(certPath, keyPath string, hosts []string) (tls.Certificate, bool, error) {
	if c, err := tls.LoadX509KeyPair(certPath, keyPath); err == nil {
		return c, false, nil
	} else if _, serr := os.Stat(certPath); serr == nil {
		return tls.Certificate{}, false, fmt.Errorf("tls: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, false, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: new(big.Int).SetBytes(store.Random(16)),
		Subject:      pkix.Name{CommonName: "osguard verifier"},
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(10, 0, 0),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:        true, BasicConstraintsValid: true,
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, false, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return tls.Certificate{}, false, err
	}
	if err := atomicfile.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return tls.Certificate{}, false, fmt.Errorf("tls: %w", err)
	}
	if err := atomicfile.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return tls.Certificate{}, false, fmt.Errorf("tls: %w", err)
	}
	c, err := tls.LoadX509KeyPair(certPath, keyPath)
	return c, true, err
}
