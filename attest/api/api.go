// Package api holds the JSON messages between the osguard attestation
// agent, the admin client and the verifier (package server), and their
// bounded, strict decoder. The protocol is described in package attest.
//
// # Security
//
// Decode is meant for hostile input: a request is read up to MaxBody bytes,
// unknown, duplicate or wrongly cased member names are errors, and every
// binary field is base64 (a Go []byte) so that nothing is parsed twice.
//
// Requests are decoded with the JSON v2 implementation
// (github.com/go-json-experiment/json, what Go ships as encoding/json/v2
// behind GOEXPERIMENT=jsonv2): it scans a body once, where encoding/json
// scans it twice byte by byte. An event log is most of a request, and the
// verifier decoded it in about 40% of its time with encoding/json; with v2
// a verification costs ~40% less CPU. Answers are written with
// encoding/json; both produce the same JSON for these types.
package api

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	jsonv2 "github.com/go-json-experiment/json"
)

// MaxBody bounds every request body. An event log of a UEFI boot is tens of
// kilobytes; 1 MiB leaves room for long ones (base64 adds a third).
const MaxBody = 1 << 20

// NumPCRs is how many PCRs of the sha256 bank a quote covers: 0–15, the
// static-root PCRs the firmware, the boot loader and the OS extend.
const NumPCRs = 16

// States of a node.
const (
	Trusted   = "trusted"
	Untrusted = "untrusted"
)

// AKParameters is the attestation key as the TPM created it
// (go-attestation's AttestationParameters for TPM 2.0): TPMT_PUBLIC,
// TPMS_CREATION_DATA, TPMS_ATTEST and TPMT_SIGNATURE.
type AKParameters struct {
	Public            []byte `json:"public"`
	CreateData        []byte `json:"createData"`
	CreateAttestation []byte `json:"createAttestation"`
	CreateSignature   []byte `json:"createSignature"`
}

// EnrollRequest starts binding an AK to the node's EK: POST /v1/enroll.
type EnrollRequest struct {
	EKCertificate []byte       `json:"ekCertificate"` // DER
	AK            AKParameters `json:"ak"`
}

// EnrollResponse is the MakeCredential challenge only the TPM holding the
// EK and the AK can answer.
type EnrollResponse struct {
	Challenge  string `json:"challenge"`
	Credential []byte `json:"credential"` // TPM2B_ID_OBJECT
	Secret     []byte `json:"secret"`     // TPM2B_ENCRYPTED_SECRET
}

// ActivateRequest answers the challenge with the secret that
// TPM2_ActivateCredential released: POST /v1/activate.
type ActivateRequest struct {
	Challenge string `json:"challenge"`
	Secret    []byte `json:"secret"`
}

// ActivateResponse names the node and gives it its first nonce.
type ActivateResponse struct {
	Node  string `json:"node"`
	Nonce []byte `json:"nonce"`
}

// NonceRequest asks for a fresh nonce: POST /v1/nonce.
type NonceRequest struct {
	Node string `json:"node"`
}

// NonceResponse carries a single-use nonce.
type NonceResponse struct {
	Nonce []byte `json:"nonce"`
}

// AttestRequest is the evidence: POST /v1/attest.
type AttestRequest struct {
	Node      string   `json:"node"`
	Nonce     []byte   `json:"nonce"`
	Quote     []byte   `json:"quote"`     // TPMS_ATTEST
	Signature []byte   `json:"signature"` // TPMT_SIGNATURE
	PCRs      [][]byte `json:"pcrs"`      // sha256 bank, PCR 0..15
	EventLog  []byte   `json:"eventLog"`  // binary_bios_measurements
}

// Verdict is the verifier's judgement of one attestation.
type Verdict struct {
	Node    string `json:"node"`
	Image   string `json:"image"`
	Version string `json:"version"`
	State   string `json:"state"`
	Reason  string `json:"reason"`
}

// Node is one row of the fleet: GET /v1/nodes.
type Node struct {
	Node     string    `json:"node"`
	Image    string    `json:"image"`
	Version  string    `json:"version"`
	State    string    `json:"state"`
	Reason   string    `json:"reason"`
	LastSeen time.Time `json:"lastSeen"`
}

// PolicyID names a registered image version.
type PolicyID struct {
	Image   string `json:"image"`
	Version string `json:"version"`
}

// Error is the body of every 4xx and 5xx answer.
type Error struct {
	Error string `json:"error"`
}

// ErrTooLarge is returned by Decode for bodies over the limit.
var ErrTooLarge = errors.New("api: request body too large")

// Decode reads one JSON value of at most limit bytes from r into v,
// refusing unknown fields and trailing data.
func Decode(r io.Reader, limit int64, v any) error {
	// The body is read into a pooled buffer: an attestation is tens of
	// kilobytes, and growing a new slice to that size for every request
	// cost the verifier a tenth of its time. Unmarshal copies what it
	// keeps (strings, base64 decoded into new slices), so the buffer can
	// serve the next request.
	buf := bodyPool.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= maxPooled {
			buf.Reset()
			bodyPool.Put(buf)
		}
	}()
	buf.Reset()
	if _, err := buf.ReadFrom(io.LimitReader(r, limit+1)); err != nil {
		return fmt.Errorf("api: read: %w", err)
	}
	if int64(buf.Len()) > limit {
		return ErrTooLarge
	}
	return Unmarshal(buf.Bytes(), v)
}

var bodyPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// maxPooled is the largest buffer kept for reuse: a body of MaxBody and the
// room bytes.Buffer grows around it.
const maxPooled = 4 * MaxBody

// Unmarshal is Decode on bytes already read.
func Unmarshal(b []byte, v any) error {
	if err := jsonv2.Unmarshal(b, v, jsonv2.RejectUnknownMembers(true)); err != nil {
		return fmt.Errorf("api: %w", err)
	}
	return nil
}
