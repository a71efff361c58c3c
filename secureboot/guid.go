package secureboot

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
)

// GUID is an EFI_GUID in its in-memory (and on-disk) byte order: the first
// three fields are little endian, the last eight bytes are as written. UEFI
// spec 2.10, appendix A.
type GUID [16]byte

// ParseGUID reads the text form "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx".
func ParseGUID(s string) (GUID, error) {
	var g GUID
	s = strings.TrimSpace(s)
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return g, fmt.Errorf("secureboot: bad GUID %q", s)
	}
	raw, err := hex.DecodeString(s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:36])
	if err != nil {
		return g, fmt.Errorf("secureboot: bad GUID %q: %w", s, err)
	}
	binary.LittleEndian.PutUint32(g[0:], binary.BigEndian.Uint32(raw[0:]))
	binary.LittleEndian.PutUint16(g[4:], binary.BigEndian.Uint16(raw[4:]))
	binary.LittleEndian.PutUint16(g[6:], binary.BigEndian.Uint16(raw[6:]))
	copy(g[8:], raw[8:])
	return g, nil
}

func mustGUID(s string) GUID {
	g, err := ParseGUID(s)
	if err != nil {
		panic(err)
	}
	return g
}

// String gives the canonical lowercase text form.
func (g GUID) String() string {
	return fmt.Sprintf("%08x-%04x-%04x-%x-%x",
		binary.LittleEndian.Uint32(g[0:]), binary.LittleEndian.Uint16(g[4:]),
		binary.LittleEndian.Uint16(g[6:]), g[8:10], g[10:16])
}

// NewRandomGUID makes a version 4 GUID from r.
func NewRandomGUID(r io.Reader) (GUID, error) {
	var raw [16]byte
	if _, err := io.ReadFull(r, raw[:]); err != nil {
		return GUID{}, fmt.Errorf("secureboot: random GUID: %w", err)
	}
	raw[6] = raw[6]&0x0f | 0x40 // version 4
	raw[8] = raw[8]&0x3f | 0x80 // RFC 4122 variant
	// raw is in text (big endian) order; convert to the EFI layout.
	s := fmt.Sprintf("%x-%x-%x-%x-%x", raw[0:4], raw[4:6], raw[6:8], raw[8:10], raw[10:16])
	return ParseGUID(s)
}

// Well-known GUIDs (UEFI spec 2.10, sections 3.3, 8.2 and 32.4).
var (
	// EFIGlobalVariable owns PK, KEK, SecureBoot and SetupMode.
	EFIGlobalVariable = mustGUID("8be4df61-93ca-11d2-aa0d-00e098032b8c")
	// EFIImageSecurityDatabase owns db and dbx.
	EFIImageSecurityDatabase = mustGUID("d719b2cb-3d3a-4596-a3bc-dad00e67656f")
	// EFICertX509 is the signature type of an X.509 DER certificate in a signature list.
	EFICertX509 = mustGUID("a5c059a1-94e4-4aa7-87b5-ab155c2bf072")
	// EFICertSHA256 is the signature type of a SHA-256 image digest in a signature list.
	EFICertSHA256 = mustGUID("c1c41626-504c-4092-aca9-41f936934328")
	// EFICertTypePKCS7 marks the PKCS#7 in WIN_CERTIFICATE_UEFI_GUID.
	EFICertTypePKCS7 = mustGUID("4aafd29d-68df-49ee-8aa9-347d375665a7")
	// EFISecureBootEnableDisable owns edk2's SecureBootEnable variable.
	EFISecureBootEnableDisable = mustGUID("f0a30bc7-af08-4556-99c4-001009c93a44")
)
