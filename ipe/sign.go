package ipe

import (
	"crypto"
	"crypto/x509"
	"fmt"

	"github.com/osguard/osguard/internal/p7"
)

// Sign checks the policy and wraps it in the attached PKCS#7 SignedData
// (DER, sha256, no authenticated attributes) that
// /sys/kernel/security/ipe/new_policy accepts. The kernel verifies it
// against the secondary and then the platform (UEFI db) keyring.
func Sign(policy []byte, key crypto.Signer, cert *x509.Certificate) ([]byte, error) {
	if _, err := Parse(policy); err != nil {
		return nil, fmt.Errorf("ipe: sign: %w", err)
	}
	der, err := p7.SignAttached(policy, key, cert)
	if err != nil {
		return nil, fmt.Errorf("ipe: sign: %w", err)
	}
	return der, nil
}
