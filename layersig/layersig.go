// Package layersig is the signature artifact of an image: for each layer,
// the dm-verity parameters of its EROFS form (package layer) and a PKCS#7
// signature of the root hash, in the form the kernel checks when a verity
// device is created with root_hash_sig_key_desc. It travels as the one
// blob of an OCI 1.1 referrer manifest whose subject is the image manifest,
// so registries and OCI tools carry it with the image.
//
// Documents come from registries and archives: Parse is strict (unknown or
// duplicate members, trailing data, wrong sizes and bad encodings are
// errors), bounded, and fuzzed. Marshal is deterministic.
package layersig

import (
	"bytes"
	_ "crypto/sha512" // sha512 layer digests validate (go-digest needs the hash linked in)
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/opencontainers/go-digest"
)

// ArtifactType is the referrer manifest's artifactType and its blob's media type.
const ArtifactType = "application/vnd.osguard.layer-signatures.v1+json"

// Bounds on what Parse accepts.
const (
	MaxDocumentSize = 4 << 20  // bytes of JSON
	MaxLayers       = 1024     // layers per document (images have at most 127 in practice)
	MaxSignature    = 64 << 10 // bytes of one PKCS#7 signature
	MaxSalt         = 256      // dm-verity's salt limit
)

// Document is the artifact's content.
type Document struct {
	SchemaVersion int     `json:"schemaVersion"` // 1
	Layers        []Layer `json:"layers"`
}

// Layer is the signed verity form of one layer.
type Layer struct {
	Digest    string `json:"digest"`    // layer blob digest as in the image manifest
	DiffID    string `json:"diffID"`    // sha256 of the uncompressed tar
	Verity    Verity `json:"verity"`    // parameters of the layer's hash tree
	Signature []byte `json:"signature"` // PKCS#7 DER, detached, over the lowercase hex root hash (base64 in JSON)
}

// Verity holds the hash tree parameters (no superblock; the tree follows
// the image, whose size is DataBlocks * DataBlockSize).
type Verity struct {
	HashAlgorithm string `json:"hashAlgorithm"` // "sha256"
	DataBlockSize uint32 `json:"dataBlockSize"` // 4096
	HashBlockSize uint32 `json:"hashBlockSize"` // 4096
	DataBlocks    uint64 `json:"dataBlocks"`
	Salt          Hex    `json:"salt"`
	RootHash      Hex    `json:"rootHash"`
}

// Hex is bytes written as lowercase hex in JSON.
type Hex []byte

// String returns the lowercase hex.
func (h Hex) String() string { return hex.EncodeToString(h) }

// MarshalText implements encoding.TextMarshaler.
func (h Hex) MarshalText() ([]byte, error) { return []byte(hex.EncodeToString(h)), nil }

// UnmarshalText implements encoding.TextUnmarshaler; only lowercase hex is accepted.
func (h *Hex) UnmarshalText(b []byte) error {
	if bytes.ContainsAny(b, "ABCDEF") {
		return errors.New("hex must be lowercase")
	}
	d, err := hex.DecodeString(string(b))
	if err != nil {
		return err
	}
	*h = d
	return nil
}

// Find returns the layer with this blob digest, or nil.
func (d *Document) Find(blobDigest string) *Layer {
	for i := range d.Layers {
		if d.Layers[i].Digest == blobDigest {
			return &d.Layers[i]
		}
	}
	return nil
}

// Marshal returns the JSON of d: compact, members in struct order, layers
// in the order given. It validates d first.
func (d *Document) Marshal() ([]byte, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	b, err := jsonv2.Marshal(d, jsonv2.Deterministic(true))
	if err != nil {
		return nil, fmt.Errorf("layersig: %w", err)
	}
	return b, nil
}

// Parse reads one document (at most MaxDocumentSize bytes) and validates it.
func Parse(r io.Reader) (*Document, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxDocumentSize+1))
	if err != nil {
		return nil, fmt.Errorf("layersig: read: %w", err)
	}
	if len(b) > MaxDocumentSize {
		return nil, fmt.Errorf("layersig: document larger than %d bytes", MaxDocumentSize)
	}
	var d Document
	if err := jsonv2.Unmarshal(b, &d, jsonv2.RejectUnknownMembers(true)); err != nil {
		return nil, fmt.Errorf("layersig: %w", err)
	}
	if err := d.Validate(); err != nil {
		return nil, err
	}
	return &d, nil
}

// Validate checks what Parse requires of a document.
func (d *Document) Validate() error {
	if d.SchemaVersion != 1 {
		return fmt.Errorf("layersig: schemaVersion %d, want 1", d.SchemaVersion)
	}
	if len(d.Layers) == 0 {
		return errors.New("layersig: no layers")
	}
	if len(d.Layers) > MaxLayers {
		return fmt.Errorf("layersig: %d layers, at most %d", len(d.Layers), MaxLayers)
	}
	seen := make(map[string]bool, len(d.Layers))
	for i := range d.Layers {
		l := &d.Layers[i]
		if err := l.validate(); err != nil {
			return fmt.Errorf("layersig: layer %d (%.80s): %w", i, l.Digest, err)
		}
		if seen[l.Digest] {
			return fmt.Errorf("layersig: layer %s listed twice", l.Digest)
		}
		seen[l.Digest] = true
	}
	return nil
}

func (l *Layer) validate() error {
	if err := checkDigest(l.Digest); err != nil {
		return fmt.Errorf("digest: %w", err)
	}
	if err := checkDigest(l.DiffID); err != nil {
		return fmt.Errorf("diffID: %w", err)
	}
	if digest.Digest(l.DiffID).Algorithm() != digest.SHA256 {
		return fmt.Errorf("diffID %q is not sha256", l.DiffID)
	}
	v := &l.Verity
	if v.HashAlgorithm != "sha256" {
		return fmt.Errorf("hash algorithm %q, want sha256", v.HashAlgorithm)
	}
	if v.DataBlockSize != 4096 || v.HashBlockSize != 4096 {
		return fmt.Errorf("block sizes %d/%d, want 4096/4096", v.DataBlockSize, v.HashBlockSize)
	}
	if v.DataBlocks == 0 || v.DataBlocks > 1<<32 {
		return fmt.Errorf("dataBlocks %d out of range", v.DataBlocks)
	}
	if len(v.Salt) == 0 || len(v.Salt) > MaxSalt {
		return fmt.Errorf("salt of %d bytes, want 1 to %d", len(v.Salt), MaxSalt)
	}
	if len(v.RootHash) != 32 {
		return fmt.Errorf("rootHash of %d bytes, want 32", len(v.RootHash))
	}
	if len(l.Signature) == 0 || len(l.Signature) > MaxSignature {
		return fmt.Errorf("signature of %d bytes, want 1 to %d", len(l.Signature), MaxSignature)
	}
	return nil
}

func checkDigest(s string) error {
	if len(s) > 200 {
		return errors.New("too long")
	}
	return digest.Digest(s).Validate()
}
