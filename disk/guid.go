package disk

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
)

// GUID is a GUID in its textual byte order (as printed, RFC 4122).
type GUID [16]byte

// ParseGUID parses "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" (any case).
func ParseGUID(s string) (GUID, error) {
	var g GUID
	h := strings.ReplaceAll(s, "-", "")
	if len(s) != 36 || len(h) != 32 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return g, fmt.Errorf("disk: bad GUID %q", s)
	}
	if _, err := hex.Decode(g[:], []byte(h)); err != nil {
		return g, fmt.Errorf("disk: bad GUID %q: %w", s, err)
	}
	return g, nil
}

// MustGUID is ParseGUID for constants.
func MustGUID(s string) GUID {
	g, err := ParseGUID(s)
	if err != nil {
		panic(err)
	}
	return g
}

func (g GUID) String() string {
	h := hex.EncodeToString(g[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// IsZero reports whether g is all zeros.
func (g GUID) IsZero() bool { return g == GUID{} }

// mixedEndian returns the on-disk EFI_GUID encoding: the first three
// fields little-endian, the last 8 bytes as they are.
func (g GUID) mixedEndian() [16]byte {
	var b [16]byte
	binary.LittleEndian.PutUint32(b[0:], binary.BigEndian.Uint32(g[0:]))
	binary.LittleEndian.PutUint16(b[4:], binary.BigEndian.Uint16(g[4:]))
	binary.LittleEndian.PutUint16(b[6:], binary.BigEndian.Uint16(g[6:]))
	copy(b[8:], g[8:])
	return b
}

// Partition type GUIDs of the Discoverable Partitions Specification (x86-64).
var (
	TypeESP                = MustGUID("c12a7328-f81f-11d2-ba4b-00a0c93ec93b")
	TypeXBOOTLDR           = MustGUID("bc13c2ff-59e6-4262-a352-b275fd6f7172")
	TypeRootX86_64         = MustGUID("4f68bce3-e8cd-4db1-96e7-fbcaf984b709")
	TypeUsrX86_64          = MustGUID("8484680c-9521-48c6-9c11-b0720656f69e")
	TypeUsrX86_64Verity    = MustGUID("77ff5f63-e7b6-4633-acf4-1565b864c0e6")
	TypeUsrX86_64VeritySig = MustGUID("e7bb33fb-06cf-4e81-8273-e543b413e2e2")
	TypeVar                = MustGUID("4d21b016-b534-45c2-a9fb-5c16e091fd2d")
	TypeLinuxGeneric       = MustGUID("0fc63daf-8483-4772-8e79-3d69d8477de4")
)

// Partition attribute flags (UEFI bit 0, and the DPS bits 59..63).
const (
	AttrRequired    = uint64(1) << 0
	AttrGrowFS      = uint64(1) << 59
	AttrReadOnly    = uint64(1) << 60
	AttrNoAuto      = uint64(1) << 63
	AttrNoBlockIOFW = uint64(1) << 1
)
