package update

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Format constants.
const (
	Magic         = "OSGUARD-UPDATE"
	FormatVersion = 2
	headerSize    = 24
	// Align is where payloads start: each at the next multiple of Align
	// after the end of what comes before it, so that apply reads and
	// writes them with direct I/O, and a file system that shares extents
	// (copy_file_range) can pack usr without copying it.
	Align = 4096
	// MaxManifest bounds the manifest area (a 64 GiB usr has 65,536 chunk
	// hashes, about 4.3 MB of JSON).
	MaxManifest = 8 << 20
	// MaxSignatureArea bounds the signature area.
	MaxSignatureArea = 64 << 10
	// signatureArea is what Pack reserves for the signature.
	signatureArea = 16 << 10
	// ChunkSize is the unit of the streamed hash checks.
	ChunkSize = 1 << 20
	// Architecture is the only one osguard builds.
	Architecture = "x86-64"
)

// Payload names, in bundle order.
const (
	PayloadMeasurements = "measurements.json"
	PayloadSignature    = "usr-verity-sig"
	PayloadVerity       = "usr-verity"
	PayloadUsr          = "usr"
	PayloadUKI          = "uki.efi"
)

// PayloadOrder is the order of the payloads in a bundle: the small ones
// that apply keeps in memory first, then the hash tree, then the usr image
// it checks as it streams, then the UKI.
var PayloadOrder = []string{PayloadMeasurements, PayloadSignature, PayloadVerity, PayloadUsr, PayloadUKI}

// Limits of the fields a bundle may carry.
const (
	maxSmallPayload = 1 << 20  // measurements.json, the signature JSON
	maxUKI          = 1 << 30  // a UKI
	maxSlotPayload  = 64 << 30 // usr
	// maxVerityPayload bounds the hash tree, which apply holds in memory
	// (a 64 GiB usr has a tree of about 512 MiB).
	maxVerityPayload = 512 << 20
	maxNameLen       = 128
)

// Manifest describes a bundle. It is signed with the db key.
type Manifest struct {
	Format       int    `json:"format"`
	Architecture string `json:"architecture"`
	Image        struct {
		Name    string `json:"name"`
		Version string `json:"version"`
	} `json:"image"`
	IPE struct {
		PolicyName    string `json:"policyName"`
		PolicyVersion string `json:"policyVersion"`
	} `json:"ipe"`
	Usr struct {
		RootHash       string `json:"rootHash"`
		PartUUID       string `json:"partUUID"`
		VerityPartUUID string `json:"verityPartUUID"`
	} `json:"usr"`
	// Layout is the disk the image was built for.
	Layout    Layout    `json:"layout"`
	ChunkSize int64     `json:"chunkSize"`
	Payloads  []Payload `json:"payloads"`
}

// Layout holds the disk facts of the build an update must match.
type Layout struct {
	Slots       int   `json:"slots"`
	SectorSize  int   `json:"sectorSize"`
	UsrBytes    int64 `json:"usrPartitionBytes"`
	VerityBytes int64 `json:"verityPartitionBytes"`
	SigBytes    int64 `json:"signaturePartitionBytes"`
}

// Payload is one file of the bundle. Every payload but usr carries the
// sha256 of each ChunkSize piece (and of the whole, for people and tools
// such as sha256sum). usr carries neither: the usr-verity payload, a
// dm-verity hash tree under the manifest's usr.rootHash, covers each of its
// blocks, as it does on the node.
type Payload struct {
	Name   string   `json:"name"`
	Size   int64    `json:"size"`
	SHA256 string   `json:"sha256,omitempty"`
	Chunks []string `json:"chunks,omitempty"`
}

var (
	hexHash  = regexp.MustCompile(`^[0-9a-f]{64}$`)
	uuidText = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	nameText = regexp.MustCompile(`^[A-Za-z0-9._+~-]+$`)
)

// ParseManifest decodes and validates a manifest (trailing spaces allowed).
func ParseManifest(b []byte) (*Manifest, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("update: manifest: %w", err)
	}
	if rest := bytes.TrimRight(b[dec.InputOffset():], " \n"); len(rest) != 0 {
		return nil, errors.New("update: manifest: data after the JSON object")
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// Validate checks every field against the format's limits.
func (m *Manifest) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("update: manifest: "+format, args...)
	}
	if m.Format != FormatVersion {
		return bad("format %d, this osguard reads %d", m.Format, FormatVersion)
	}
	for _, f := range []struct{ name, v string }{
		{"image.name", m.Image.Name}, {"image.version", m.Image.Version},
		{"ipe.policyName", m.IPE.PolicyName}, {"ipe.policyVersion", m.IPE.PolicyVersion},
		{"architecture", m.Architecture},
	} {
		if len(f.v) > maxNameLen {
			return bad("%s is %d bytes long, at most %d", f.name, len(f.v), maxNameLen)
		}
		if !nameText.MatchString(f.v) {
			return bad("%s %q: empty or not made of letters, digits and ._+~-", f.name, f.v)
		}
	}
	if _, err := parseVersion(m.Image.Version); err != nil {
		return bad("image.version: %v", err)
	}
	if _, err := parseVersion(m.IPE.PolicyVersion); err != nil {
		return bad("ipe.policyVersion: %v", err)
	}
	if !hexHash.MatchString(m.Usr.RootHash) {
		return bad("usr.rootHash %.80q is not 64 lowercase hex digits", m.Usr.RootHash)
	}
	if !uuidText.MatchString(m.Usr.PartUUID) || !uuidText.MatchString(m.Usr.VerityPartUUID) {
		return bad("usr partition UUIDs %.40q, %.40q are not lowercase UUIDs", m.Usr.PartUUID, m.Usr.VerityPartUUID)
	}
	rh := strings.ReplaceAll(m.Usr.PartUUID, "-", "") + strings.ReplaceAll(m.Usr.VerityPartUUID, "-", "")
	if rh != m.Usr.RootHash {
		return bad("usr partition UUIDs are not the halves of the root hash")
	}
	l := m.Layout
	if l.Slots < 1 || l.Slots > 2 || l.SectorSize != 512 && l.SectorSize != 4096 ||
		l.UsrBytes <= 0 || l.VerityBytes <= 0 || l.SigBytes <= 0 ||
		l.UsrBytes > maxSlotPayload || l.VerityBytes > maxSlotPayload || l.SigBytes > maxSlotPayload {
		return bad("layout %+v out of range", l)
	}
	if m.ChunkSize != ChunkSize {
		return bad("chunkSize %d, want %d", m.ChunkSize, ChunkSize)
	}
	if len(m.Payloads) != len(PayloadOrder) {
		return bad("%d payloads, want %d (%s)", len(m.Payloads), len(PayloadOrder), strings.Join(PayloadOrder, ", "))
	}
	for i, p := range m.Payloads {
		if p.Name != PayloadOrder[i] {
			return bad("payload %d is %.40q, want %s", i, p.Name, PayloadOrder[i])
		}
		max := int64(maxSmallPayload)
		switch p.Name {
		case PayloadUKI:
			max = maxUKI
		case PayloadUsr:
			max = maxSlotPayload
		case PayloadVerity:
			max = maxVerityPayload
		}
		if p.Size <= 0 || p.Size > max {
			return bad("payload %s: size %d out of range (1..%d)", p.Name, p.Size, max)
		}
		if p.Name == PayloadUsr {
			if p.SHA256 != "" || len(p.Chunks) != 0 {
				return bad("payload usr carries hashes: its blocks are checked against the usr-verity tree")
			}
			if p.Size%Align != 0 {
				return bad("payload usr: %d bytes is not a whole number of 4096-byte blocks", p.Size)
			}
			continue
		}
		if !hexHash.MatchString(p.SHA256) {
			return bad("payload %s: sha256 %.80q is not 64 lowercase hex digits", p.Name, p.SHA256)
		}
		if want := (p.Size + ChunkSize - 1) / ChunkSize; int64(len(p.Chunks)) != want {
			return bad("payload %s: %d chunk hashes for %d bytes, want %d", p.Name, len(p.Chunks), p.Size, want)
		}
		for _, c := range p.Chunks {
			if !hexHash.MatchString(c) {
				return bad("payload %s: chunk hash %.80q is not 64 lowercase hex digits", p.Name, c)
			}
		}
	}
	if u := m.Payload(PayloadUsr); u.Size > l.UsrBytes {
		return bad("usr payload of %d bytes is larger than its partition (%d)", u.Size, l.UsrBytes)
	}
	if v := m.Payload(PayloadVerity); v.Size > l.VerityBytes {
		return bad("usr-verity payload of %d bytes is larger than its partition (%d)", v.Size, l.VerityBytes)
	}
	if s := m.Payload(PayloadSignature); s.Size > l.SigBytes {
		return bad("usr-verity-sig payload of %d bytes is larger than its partition (%d)", s.Size, l.SigBytes)
	}
	return nil
}

// payloadOffsets returns where each payload starts in a bundle whose
// payloads follow byte start, and where the last one ends.
func (m *Manifest) payloadOffsets(start int64) (offs []int64, end int64) {
	end = start
	for _, p := range m.Payloads {
		end = alignUp(end)
		offs = append(offs, end)
		end += p.Size
	}
	return offs, end
}

func alignUp(n int64) int64 { return (n + Align - 1) &^ (Align - 1) }

// Payload returns the named payload (the zero Payload when absent).
func (m *Manifest) Payload(name string) Payload {
	for _, p := range m.Payloads {
		if p.Name == name {
			return p
		}
	}
	return Payload{}
}

// RootHash returns the usr root hash as bytes.
func (m *Manifest) RootHash() []byte {
	b, _ := hex.DecodeString(m.Usr.RootHash)
	return b
}

// parseVersion reads a dotted version of decimal numbers, e.g. "2" or "1.0.3".
func parseVersion(s string) ([]uint64, error) {
	if s == "" {
		return nil, errors.New("empty version")
	}
	parts := strings.Split(s, ".")
	if len(parts) > 8 {
		return nil, fmt.Errorf("version %q has more than 8 parts", s)
	}
	out := make([]uint64, len(parts))
	for i, p := range parts {
		n, err := strconv.ParseUint(p, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("version %q: %q is not a decimal number (versions are dotted numbers, e.g. 2 or 1.0.3)", s, p)
		}
		out[i] = n
	}
	return out, nil
}

// CompareVersions compares two dotted numeric versions: -1, 0 or 1.
// Missing trailing parts count as 0 (1.0 == 1).
func CompareVersions(a, b string) (int, error) {
	va, err := parseVersion(a)
	if err != nil {
		return 0, err
	}
	vb, err := parseVersion(b)
	if err != nil {
		return 0, err
	}
	for i := 0; i < max(len(va), len(vb)); i++ {
		var x, y uint64
		if i < len(va) {
			x = va[i]
		}
		if i < len(vb) {
			y = vb[i]
		}
		switch {
		case x < y:
			return -1, nil
		case x > y:
			return 1, nil
		}
	}
	return 0, nil
}
