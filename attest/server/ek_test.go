package server_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/osguard/osguard/attest/server"
)

// TestVerifyEK checks EK certificates like swtpm_localca's (a critical
// subject alternative name of directory names) against a CA: accepted when
// they chain, refused otherwise or with an unknown critical extension.
func TestVerifyEK(t *testing.T) {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ek ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	ca, _ := x509.ParseCertificate(caDER)
	roots := x509.NewCertPool()
	roots.AddCert(ca)

	// SAN with one directoryName [4], as TPM EK certificates carry it.
	dn, _ := asn1.Marshal(pkix.Name{CommonName: "tpm"}.ToRDNSequence())
	san, _ := asn1.Marshal([]asn1.RawValue{{Class: asn1.ClassContextSpecific, Tag: 4, IsCompound: true, Bytes: dn}})
	ek := func(extra ...pkix.Extension) []byte {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage:        x509.KeyUsageKeyEncipherment,
			ExtraExtensions: append([]pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Critical: true, Value: san}}, extra...)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	if _, err := server.VerifyEK(ek(), roots); err != nil {
		t.Fatalf("good EK: %v", err)
	}
	unknown := pkix.Extension{Id: asn1.ObjectIdentifier{1, 2, 3, 4}, Critical: true, Value: []byte{5, 0}}
	for _, tc := range []struct {
		name  string
		der   []byte
		roots *x509.CertPool
		want  string
	}{
		{"unknown critical extension", ek(unknown), roots, "unknown critical"},
		{"other CA", ek(), x509.NewCertPool(), "does not chain"},
		{"no CA", ek(), nil, "trusts no EK CA"},
		{"garbage", []byte{0x30, 0x03, 1, 2, 3}, roots, "EK certificate"},
	} {
		if _, err := server.VerifyEK(tc.der, tc.roots); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error naming %q", tc.name, err, tc.want)
		}
	}
}
