package secureboot

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"slices"
)

// The PKCS#7 (RFC 2315) SignedData used here has one shape: sha256, one
// signer whose certificate is embedded, identified by issuer and serial.
// It is written by hand (DER, no clock, no randomness for RSA) because the
// two users need details the libraries in go.mod get wrong for them; see
// doc.go.

var (
	oidData                   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	oidSignedData             = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}
	oidSHA256                 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
	oidRSAEncryption          = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}
	oidSHA256WithRSA          = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}
	oidECDSAWithSHA256        = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	oidECPublicKey            = asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}
	oidAttrContentType        = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 3}
	oidAttrMessageDigest      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 4}
	oidSpcIndirectDataContent = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 2, 1, 4}
	oidSpcPEImageData         = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 2, 1, 15}
)

// der builds one DER element from a tag byte and its content.
func der(tag byte, parts ...[]byte) []byte {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	b := []byte{tag}
	switch {
	case n < 0x80:
		b = append(b, byte(n))
	case n < 0x100:
		b = append(b, 0x81, byte(n))
	case n < 0x10000:
		b = append(b, 0x82, byte(n>>8), byte(n))
	default:
		b = append(b, 0x83, byte(n>>16), byte(n>>8), byte(n))
	}
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

const (
	tagInteger     = 0x02
	tagOctetString = 0x04
	tagSequence    = 0x30
	tagSet         = 0x31
	tagContext0    = 0xa0 // [0] constructed
)

func mustMarshal(v any) []byte {
	b, err := asn1.Marshal(v)
	if err != nil {
		panic(err) // only called on OIDs and big.Ints built here
	}
	return b
}

var asn1Null = []byte{0x05, 0x00}

func algID(oid asn1.ObjectIdentifier) []byte {
	return der(tagSequence, mustMarshal(oid), asn1Null)
}

// signerAlgorithm names the signature algorithm of key in a SignerInfo.
func signerAlgorithm(pub crypto.PublicKey) ([]byte, error) {
	switch pub.(type) {
	case *rsa.PublicKey:
		return algID(oidRSAEncryption), nil
	case *ecdsa.PublicKey:
		return der(tagSequence, mustMarshal(oidECDSAWithSHA256)), nil
	}
	return nil, fmt.Errorf("secureboot: unsupported signing key type %T", pub)
}

// signedData returns a bare SignedData (no ContentInfo around it).
// content is the encapsulated content element (nil: detached). tbs are the
// content octets that are digested. With attrs, contentType and
// messageDigest are signed, as Authenticode verifiers expect; without, the
// signature is over the content digest itself (openssl -noattr, what
// efitools uses for authenticated variables).
func signedData(contentType asn1.ObjectIdentifier, content, tbs []byte, attrs bool, key crypto.Signer, cert *x509.Certificate) ([]byte, error) {
	sigAlg, err := signerAlgorithm(cert.PublicKey)
	if err != nil {
		return nil, err
	}
	digest := sha256.Sum256(tbs)
	var authAttrs []byte
	toSign := digest[:]
	if attrs {
		set := [][]byte{
			der(tagSequence, mustMarshal(oidAttrContentType), der(tagSet, mustMarshal(contentType))),
			der(tagSequence, mustMarshal(oidAttrMessageDigest), der(tagSet, der(tagOctetString, digest[:]))),
		}
		slices.SortFunc(set, bytes.Compare) // DER SET OF order
		signedSet := der(tagSet, set...)
		h := sha256.Sum256(signedSet)
		toSign = h[:]
		authAttrs = der(tagContext0, set...)
	}
	sig, err := key.Sign(rand.Reader, toSign, crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("secureboot: sign: %w", err)
	}
	inner := [][]byte{mustMarshal(contentType)}
	if content != nil {
		inner = append(inner, der(tagContext0, content))
	}
	signerInfo := der(tagSequence,
		der(tagInteger, []byte{1}),
		der(tagSequence, cert.RawIssuer, mustMarshal(cert.SerialNumber)),
		algID(oidSHA256),
		authAttrs,
		sigAlg,
		der(tagOctetString, sig),
	)
	return der(tagSequence,
		der(tagInteger, []byte{1}),
		der(tagSet, algID(oidSHA256)),
		der(tagSequence, inner...),
		der(tagContext0, cert.Raw),
		der(tagSet, signerInfo),
	), nil
}

// wrapContentInfo puts a SignedData into the ContentInfo that Authenticode
// (and openssl) use.
func wrapContentInfo(sd []byte) []byte {
	return der(tagSequence, mustMarshal(oidSignedData), der(tagContext0, sd))
}

// ASN.1 shapes for parsing (RFC 2315, section 9).
type contentInfo struct {
	ContentType asn1.ObjectIdentifier
	Content     asn1.RawValue `asn1:"optional,tag:0"` // [0] EXPLICIT, unwrapped by explicitContent
}

// explicitContent returns the element inside the [0] EXPLICIT wrapper, or a
// zero RawValue when the content is absent.
func (c *contentInfo) explicitContent() (asn1.RawValue, error) {
	var inner asn1.RawValue
	if len(c.Content.FullBytes) == 0 {
		return inner, nil
	}
	if !c.Content.IsCompound || c.Content.Class != asn1.ClassContextSpecific {
		return inner, errors.New("pkcs7: content is not [0] EXPLICIT")
	}
	rest, err := asn1.Unmarshal(c.Content.Bytes, &inner)
	if err != nil {
		return inner, fmt.Errorf("pkcs7 content: %w", err)
	}
	if len(rest) != 0 {
		return inner, errors.New("pkcs7: trailing data in content")
	}
	return inner, nil
}

type p7SignedData struct {
	Version          int
	DigestAlgorithms []pkix.AlgorithmIdentifier `asn1:"set"`
	ContentInfo      contentInfo
	Certificates     asn1.RawValue  `asn1:"optional,tag:0"`
	CRLs             asn1.RawValue  `asn1:"optional,tag:1"`
	SignerInfos      []p7SignerInfo `asn1:"set"`
}

type issuerAndSerial struct {
	Issuer asn1.RawValue
	Serial *big.Int
}

type p7SignerInfo struct {
	Version            int
	IssuerAndSerial    issuerAndSerial
	DigestAlgorithm    pkix.AlgorithmIdentifier
	AuthAttributes     asn1.RawValue `asn1:"optional,tag:0"`
	SignatureAlgorithm pkix.AlgorithmIdentifier
	Signature          []byte
	UnauthAttributes   asn1.RawValue `asn1:"optional,tag:1"`
}

type attribute struct {
	Type   asn1.ObjectIdentifier
	Values asn1.RawValue `asn1:"set"`
}

// parsedP7 is a SignedData taken apart.
type parsedP7 struct {
	contentType asn1.ObjectIdentifier
	content     asn1.RawValue // the encapsulated content element, if any
	certs       []*x509.Certificate
	signers     []p7SignerInfo
}

// parseContentInfoSignedData parses a ContentInfo holding SignedData, as in
// an Authenticode WIN_CERTIFICATE.
func parseContentInfoSignedData(b []byte) (*parsedP7, error) {
	var ci contentInfo
	rest, err := asn1.Unmarshal(b, &ci)
	if err != nil {
		return nil, fmt.Errorf("pkcs7 content info: %w", err)
	}
	if len(rest) != 0 && len(bytes.TrimRight(rest, "\x00")) != 0 {
		return nil, errors.New("pkcs7: trailing data after content info")
	}
	if !ci.ContentType.Equal(oidSignedData) {
		return nil, fmt.Errorf("pkcs7: content type %v, want signedData", ci.ContentType)
	}
	sd, err := ci.explicitContent()
	if err != nil {
		return nil, err
	}
	return parseSignedData(sd.FullBytes)
}

func parseSignedData(b []byte) (*parsedP7, error) {
	var sd p7SignedData
	if _, err := asn1.Unmarshal(b, &sd); err != nil {
		return nil, fmt.Errorf("pkcs7 signed data: %w", err)
	}
	content, err := sd.ContentInfo.explicitContent()
	if err != nil {
		return nil, err
	}
	p := &parsedP7{contentType: sd.ContentInfo.ContentType, content: content, signers: sd.SignerInfos}
	if len(sd.Certificates.Bytes) > 0 {
		certs, err := x509.ParseCertificates(sd.Certificates.Bytes)
		if err != nil {
			return nil, fmt.Errorf("pkcs7 certificates: %w", err)
		}
		p.certs = certs
	}
	return p, nil
}

func (si *p7SignerInfo) matches(c *x509.Certificate) bool {
	return bytes.Equal(si.IssuerAndSerial.Issuer.FullBytes, c.RawIssuer) &&
		si.IssuerAndSerial.Serial != nil && si.IssuerAndSerial.Serial.Cmp(c.SerialNumber) == 0
}

// signerCert finds the embedded certificate of a signer.
func (p *parsedP7) signerCert(si *p7SignerInfo) *x509.Certificate {
	for _, c := range p.certs {
		if si.matches(c) {
			return c
		}
	}
	return nil
}

var (
	errDigestMismatch = errors.New("content digest does not match the signed message digest")
	errBadSignature   = errors.New("signature does not verify")
)

// verifySigner checks si's signature over tbs (the content octets) with cert.
func verifySigner(si *p7SignerInfo, tbs []byte, contentType asn1.ObjectIdentifier, cert *x509.Certificate) error {
	if !si.DigestAlgorithm.Algorithm.Equal(oidSHA256) {
		return fmt.Errorf("pkcs7: unsupported digest algorithm %v", si.DigestAlgorithm.Algorithm)
	}
	var algo x509.SignatureAlgorithm
	switch a := si.SignatureAlgorithm.Algorithm; {
	case a.Equal(oidRSAEncryption), a.Equal(oidSHA256WithRSA):
		algo = x509.SHA256WithRSA
	case a.Equal(oidECDSAWithSHA256), a.Equal(oidECPublicKey):
		algo = x509.ECDSAWithSHA256
	default:
		return fmt.Errorf("pkcs7: unsupported signature algorithm %v", a)
	}
	digest := sha256.Sum256(tbs)
	if len(si.AuthAttributes.FullBytes) == 0 {
		// Without authenticated attributes the signature covers the content.
		if err := cert.CheckSignature(algo, tbs, si.Signature); err != nil {
			return fmt.Errorf("%w: %w", errBadSignature, err)
		}
		return nil
	}
	var md []byte
	var ct asn1.ObjectIdentifier
	for rest := si.AuthAttributes.Bytes; len(rest) > 0; {
		var a attribute
		var err error
		if rest, err = asn1.Unmarshal(rest, &a); err != nil {
			return fmt.Errorf("pkcs7 attributes: %w", err)
		}
		switch {
		case a.Type.Equal(oidAttrMessageDigest):
			if _, err := asn1.Unmarshal(a.Values.Bytes, &md); err != nil {
				return fmt.Errorf("pkcs7 message digest: %w", err)
			}
		case a.Type.Equal(oidAttrContentType):
			if _, err := asn1.Unmarshal(a.Values.Bytes, &ct); err != nil {
				return fmt.Errorf("pkcs7 content type: %w", err)
			}
		}
	}
	if md == nil || !bytes.Equal(md, digest[:]) {
		return errDigestMismatch
	}
	if ct == nil || !ct.Equal(contentType) {
		return fmt.Errorf("pkcs7: signed content type %v, want %v", ct, contentType)
	}
	// The signature covers the attributes re-tagged as a SET (RFC 2315, 9.3).
	signed := bytes.Clone(si.AuthAttributes.FullBytes)
	signed[0] = tagSet
	if err := cert.CheckSignature(algo, signed, si.Signature); err != nil {
		return fmt.Errorf("%w: %w", errBadSignature, err)
	}
	return nil
}
