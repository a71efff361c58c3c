package secureboot

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
	"unicode/utf16"
)

// Variable attributes (UEFI spec 2.10, section 8.2).
const (
	EFI_VARIABLE_NON_VOLATILE                          = 0x01
	EFI_VARIABLE_BOOTSERVICE_ACCESS                    = 0x02
	EFI_VARIABLE_RUNTIME_ACCESS                        = 0x04
	EFI_VARIABLE_TIME_BASED_AUTHENTICATED_WRITE_ACCESS = 0x20
	EFI_VARIABLE_APPEND_WRITE                          = 0x40

	// AuthVarAttributes are the attributes of PK, KEK, db and dbx: 0x27.
	AuthVarAttributes = EFI_VARIABLE_NON_VOLATILE | EFI_VARIABLE_BOOTSERVICE_ACCESS |
		EFI_VARIABLE_RUNTIME_ACCESS | EFI_VARIABLE_TIME_BASED_AUTHENTICATED_WRITE_ACCESS
)

// Variable names one of the Secure Boot key variables.
type Variable struct {
	Name string
	GUID GUID
}

// The key variables, in the order enrollment writes them (PK last: writing
// it ends setup mode).
var (
	VarDB  = Variable{"db", EFIImageSecurityDatabase}
	VarKEK = Variable{"KEK", EFIGlobalVariable}
	VarPK  = Variable{"PK", EFIGlobalVariable}
)

// EFITime encodes t (UTC, whole seconds) as a 16-byte EFI_TIME with the
// zero nanosecond, time zone and daylight fields that edk2 demands in
// EFI_VARIABLE_AUTHENTICATION_2 (UEFI spec 2.10, section 8.2.2).
func EFITime(t time.Time) [16]byte {
	t = t.UTC()
	var b [16]byte
	binary.LittleEndian.PutUint16(b[0:], uint16(t.Year()))
	b[2], b[3], b[4], b[5], b[6] = byte(t.Month()), byte(t.Day()), byte(t.Hour()), byte(t.Minute()), byte(t.Second())
	return b
}

func parseEFITime(b []byte) time.Time {
	return time.Date(int(binary.LittleEndian.Uint16(b)), time.Month(b[2]), int(b[3]), int(b[4]), int(b[5]), int(b[6]), 0, time.UTC)
}

func ucs2(s string) []byte {
	var b []byte
	for _, u := range utf16.Encode([]rune(s)) {
		b = binary.LittleEndian.AppendUint16(b, u)
	}
	return b
}

// authSignedBlob is what an EFI_VARIABLE_AUTHENTICATION_2 signature covers:
// VariableName (no NUL) ‖ VendorGuid ‖ Attributes ‖ TimeStamp ‖ Data.
func authSignedBlob(v Variable, attrs uint32, ts [16]byte, data []byte) []byte {
	b := ucs2(v.Name)
	b = append(b, v.GUID[:]...)
	b = binary.LittleEndian.AppendUint32(b, attrs)
	b = append(b, ts[:]...)
	return append(b, data...)
}

const (
	winCertRevision      = 0x0200
	winCertTypeEFIGUID   = 0x0EF1
	winCertTypePKCS      = 0x0002
	winCertHeaderSize    = 8
	auth2FixedHeaderSize = 16 + winCertHeaderSize + 16 // EFI_TIME, WIN_CERTIFICATE, CertType
)

// SignVariable returns EFI_VARIABLE_AUTHENTICATION_2 ‖ data for a
// time-based authenticated write of v with attributes 0x27, signed by
// key/cert at time ts. This is the .auth file format of efitools'
// sign-efi-sig-list. The PKCS#7 is a bare SignedData without authenticated
// attributes: edk2 reads the digest OID at a fixed offset of CertData and
// refuses a ContentInfo there.
func SignVariable(v Variable, data []byte, ts time.Time, key crypto.Signer, cert *x509.Certificate) ([]byte, error) {
	t := EFITime(ts)
	tbs := authSignedBlob(v, AuthVarAttributes, t, data)
	sd, err := signedData(oidData, nil, tbs, false, key, cert)
	if err != nil {
		return nil, fmt.Errorf("secureboot: sign %s: %w", v.Name, err)
	}
	b := make([]byte, 0, auth2FixedHeaderSize+len(sd)+len(data))
	b = append(b, t[:]...)
	b = binary.LittleEndian.AppendUint32(b, uint32(winCertHeaderSize+16+len(sd)))
	b = binary.LittleEndian.AppendUint16(b, winCertRevision)
	b = binary.LittleEndian.AppendUint16(b, winCertTypeEFIGUID)
	b = append(b, EFICertTypePKCS7[:]...)
	b = append(b, sd...)
	return append(b, data...), nil
}

// AuthVar is a parsed EFI_VARIABLE_AUTHENTICATION_2 payload (.auth file).
type AuthVar struct {
	Time       time.Time
	SignedData []byte // the bare PKCS#7 SignedData
	Data       []byte // the new variable content (signature lists)
}

// ErrAuthVar is wrapped by ParseAuthVar for malformed input.
var ErrAuthVar = errors.New("secureboot: malformed authenticated variable")

// ParseAuthVar splits an EFI_VARIABLE_AUTHENTICATION_2 payload.
func ParseAuthVar(b []byte) (*AuthVar, error) {
	if len(b) < auth2FixedHeaderSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrAuthVar, len(b))
	}
	n := int64(binary.LittleEndian.Uint32(b[16:]))
	switch {
	case n < winCertHeaderSize+16 || n > int64(len(b)-16):
		return nil, fmt.Errorf("%w: WIN_CERTIFICATE length %d", ErrAuthVar, n)
	case binary.LittleEndian.Uint16(b[20:]) != winCertRevision:
		return nil, fmt.Errorf("%w: WIN_CERTIFICATE revision %#x", ErrAuthVar, binary.LittleEndian.Uint16(b[20:]))
	case binary.LittleEndian.Uint16(b[22:]) != winCertTypeEFIGUID:
		return nil, fmt.Errorf("%w: WIN_CERTIFICATE type %#x", ErrAuthVar, binary.LittleEndian.Uint16(b[22:]))
	case !bytes.Equal(b[24:40], EFICertTypePKCS7[:]):
		return nil, fmt.Errorf("%w: cert type is not PKCS#7", ErrAuthVar)
	}
	return &AuthVar{
		Time:       parseEFITime(b[:16]),
		SignedData: b[40 : 16+n],
		Data:       b[16+n:],
	}, nil
}

// VerifyAuthVar checks that auth is a valid update of v signed by cert, the
// check edk2 makes for PK (by PK), KEK (by PK) and db (by a KEK).
func VerifyAuthVar(v Variable, auth []byte, cert *x509.Certificate) error {
	a, err := ParseAuthVar(auth)
	if err != nil {
		return err
	}
	p, err := parseSignedData(a.SignedData)
	if err != nil {
		return fmt.Errorf("secureboot: %s: %w", v.Name, err)
	}
	if len(p.signers) != 1 {
		return fmt.Errorf("secureboot: %s: %d signers, want 1", v.Name, len(p.signers))
	}
	if !p.signers[0].matches(cert) {
		return fmt.Errorf("secureboot: %s: %w", v.Name, ErrWrongSigner)
	}
	tbs := authSignedBlob(v, AuthVarAttributes, EFITime(a.Time), a.Data)
	if err := verifySigner(&p.signers[0], tbs, oidData, cert); err != nil {
		return fmt.Errorf("secureboot: %s: %w", v.Name, err)
	}
	return nil
}
