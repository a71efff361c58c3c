// Package simnode simulates attesting nodes for the verifier's benchmarks,
// load tests and fuzz seeds: each node has a software attestation key and
// replays the PCR values and event log of a real swtpm boot
// (verdict/testdata), and it signs TPMS_ATTEST quotes as a TPM does. The
// structures are go-tpm's (tpm2.Marshal); only the key is not in a TPM.
// The verifier code that judges them is the real one.
package simnode

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/google/go-tpm/tpm2"

	"github.com/osguard/osguard/attest/api"
)

// Evidence is a recorded attestation (verdict/testdata/swtpm-evidence.json).
type Evidence struct {
	AKPublic  []byte   `json:"akPublic"`
	Nonce     []byte   `json:"nonce"`
	Quote     []byte   `json:"quote"`
	Signature []byte   `json:"signature"`
	PCRs      [][]byte `json:"pcrs"`
	EventLog  []byte   `json:"eventLog"`
}

// LoadEvidence reads a recorded attestation.
func LoadEvidence(path string) (*Evidence, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var e Evidence
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &e, nil
}

// LoadRecorded reads the recorded swtpm attestation in dir
// (swtpm-evidence.json) and the measurements.json of the image it booted
// (swtpm-measurements.json).
func LoadRecorded(dir string) (*Evidence, []byte, error) {
	e, err := LoadEvidence(filepath.Join(dir, "swtpm-evidence.json"))
	if err != nil {
		return nil, nil, err
	}
	m, err := os.ReadFile(filepath.Join(dir, "swtpm-measurements.json"))
	if err != nil {
		return nil, nil, err
	}
	return e, m, nil
}

// Node is one simulated node.
type Node struct {
	Name     string
	AKPublic []byte // TPMT_PUBLIC
	PCRs     [][]byte
	EventLog []byte
	key      crypto.Signer
}

// New returns a node with a fresh ECDSA P-256 AK (fast to make for a fleet)
// or, with rsaKey, an RSA-2048 AK (what swtpm and most TPMs make).
func New(name string, pcrs [][]byte, eventLog []byte, rsaKey bool) (*Node, error) {
	n := &Node{Name: name, PCRs: pcrs, EventLog: eventLog}
	attrs := tpm2.TPMAObject{FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true, UserWithAuth: true, Restricted: true, SignEncrypt: true}
	var pub tpm2.TPMTPublic
	if rsaKey {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return nil, err
		}
		n.key = k
		pub = tpm2.TPMTPublic{
			Type: tpm2.TPMAlgRSA, NameAlg: tpm2.TPMAlgSHA256, ObjectAttributes: attrs,
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
				Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
				Scheme: tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgRSASSA,
					Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgRSASSA, &tpm2.TPMSSigSchemeRSASSA{HashAlg: tpm2.TPMAlgSHA256})},
				KeyBits: 2048,
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: k.N.Bytes()}),
		}
	} else {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		n.key = k
		pub = tpm2.TPMTPublic{
			Type: tpm2.TPMAlgECC, NameAlg: tpm2.TPMAlgSHA256, ObjectAttributes: attrs,
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
				Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
				Scheme: tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgECDSA,
					Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256})},
				CurveID: tpm2.TPMECCNistP256,
				KDF:     tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
				X: tpm2.TPM2BECCParameter{Buffer: pad32(k.X.Bytes())},
				Y: tpm2.TPM2BECCParameter{Buffer: pad32(k.Y.Bytes())},
			}),
		}
	}
	n.AKPublic = tpm2.Marshal(pub)
	return n, nil
}

func pad32(b []byte) []byte {
	if len(b) >= 32 {
		return b
	}
	return append(make([]byte, 32-len(b)), b...)
}

// name is the AK's TPM name: nameAlg (sha256) ‖ sha256(TPMT_PUBLIC).
func (n *Node) name() []byte {
	d := sha256.Sum256(n.AKPublic)
	return append([]byte{0x00, 0x0b}, d[:]...)
}

// Quote signs a TPMS_ATTEST of type quote over PCRs 0-15 (sha256) with
// nonce as its extraData, as TPM2_Quote does.
func (n *Node) Quote(nonce []byte) (quote, signature []byte, err error) {
	h := sha256.New()
	for _, p := range n.PCRs[:api.NumPCRs] {
		h.Write(p)
	}
	att := tpm2.TPMSAttest{
		Magic: tpm2.TPMGeneratedValue, Type: tpm2.TPMSTAttestQuote,
		QualifiedSigner: tpm2.TPM2BName{Buffer: n.name()},
		ExtraData:       tpm2.TPM2BData{Buffer: nonce},
		Attested: tpm2.NewTPMUAttest(tpm2.TPMSTAttestQuote, &tpm2.TPMSQuoteInfo{
			PCRSelect: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{Hash: tpm2.TPMAlgSHA256, PCRSelect: []byte{0xff, 0xff, 0x00}}}},
			PCRDigest: tpm2.TPM2BDigest{Buffer: h.Sum(nil)},
		}),
	}
	quote = tpm2.Marshal(att)
	digest := sha256.Sum256(quote)
	var sig tpm2.TPMTSignature
	switch k := n.key.(type) {
	case *rsa.PrivateKey:
		s, err := rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, digest[:])
		if err != nil {
			return nil, nil, err
		}
		sig = tpm2.TPMTSignature{SigAlg: tpm2.TPMAlgRSASSA, Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgRSASSA,
			&tpm2.TPMSSignatureRSA{Hash: tpm2.TPMAlgSHA256, Sig: tpm2.TPM2BPublicKeyRSA{Buffer: s}})}
	case *ecdsa.PrivateKey:
		r, s, err := ecdsa.Sign(rand.Reader, k, digest[:])
		if err != nil {
			return nil, nil, err
		}
		sig = tpm2.TPMTSignature{SigAlg: tpm2.TPMAlgECDSA, Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgECDSA,
			&tpm2.TPMSSignatureECC{Hash: tpm2.TPMAlgSHA256, SignatureR: tpm2.TPM2BECCParameter{Buffer: r.Bytes()}, SignatureS: tpm2.TPM2BECCParameter{Buffer: s.Bytes()}})}
	}
	return quote, tpm2.Marshal(sig), nil
}

// Request returns a complete attestation request over nonce.
func (n *Node) Request(nonce []byte) (*api.AttestRequest, error) {
	q, s, err := n.Quote(nonce)
	if err != nil {
		return nil, err
	}
	return &api.AttestRequest{Node: n.Name, Nonce: nonce, Quote: q, Signature: s, PCRs: n.PCRs, EventLog: n.EventLog}, nil
}
