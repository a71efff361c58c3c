package secureboot

import (
	"bytes"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
)

// An EFI_SIGNATURE_LIST (UEFI spec 2.10, section 32.4.1) is
//
//	SignatureType GUID ‖ u32 SignatureListSize ‖ u32 SignatureHeaderSize ‖
//	u32 SignatureSize ‖ header[SignatureHeaderSize] ‖ entries
//
// and each EFI_SIGNATURE_DATA entry is SignatureOwner GUID ‖ data, so an
// entry is SignatureSize bytes. A variable such as db is a concatenation of lists.
const (
	eslHeaderSize  = 16 + 4 + 4 + 4
	sigOwnerSize   = 16
	maxVarDataSize = 1 << 20 // far above any edk2 NV store; bounds allocations
)

// Signature is one EFI_SIGNATURE_DATA entry of a signature list.
type Signature struct {
	Type  GUID // the list's SignatureType, e.g. EFICertX509
	Owner GUID
	Data  []byte // DER certificate for EFICertX509, a digest for EFICertSHA256
}

// CertificateESL encodes one X.509 certificate as a signature list, byte for
// byte as efitools' cert-to-efi-sig-list does.
func CertificateESL(owner GUID, cert *x509.Certificate) []byte {
	return signatureList(EFICertX509, owner, cert.Raw)
}

func signatureList(typ, owner GUID, data []byte) []byte {
	sigSize := sigOwnerSize + len(data)
	b := make([]byte, 0, eslHeaderSize+sigSize)
	b = append(b, typ[:]...)
	b = binary.LittleEndian.AppendUint32(b, uint32(eslHeaderSize+sigSize))
	b = binary.LittleEndian.AppendUint32(b, 0)
	b = binary.LittleEndian.AppendUint32(b, uint32(sigSize))
	b = append(b, owner[:]...)
	return append(b, data...)
}

// ErrSignatureList is wrapped by ParseSignatureLists for malformed input.
var ErrSignatureList = errors.New("secureboot: malformed signature list")

// ParseSignatureLists splits the data of a db-like variable into its
// entries. It is meant for hostile input: every size is checked before use.
func ParseSignatureLists(b []byte) ([]Signature, error) {
	var out []Signature
	for off := 0; off < len(b); {
		if len(b)-off < eslHeaderSize {
			return nil, fmt.Errorf("%w: %d trailing bytes at offset %d", ErrSignatureList, len(b)-off, off)
		}
		var typ GUID
		copy(typ[:], b[off:])
		listSize := int64(binary.LittleEndian.Uint32(b[off+16:]))
		hdrSize := int64(binary.LittleEndian.Uint32(b[off+20:]))
		sigSize := int64(binary.LittleEndian.Uint32(b[off+24:]))
		switch {
		case listSize < eslHeaderSize || listSize > int64(len(b)-off):
			return nil, fmt.Errorf("%w: list size %d at offset %d", ErrSignatureList, listSize, off)
		case sigSize < sigOwnerSize:
			return nil, fmt.Errorf("%w: signature size %d at offset %d", ErrSignatureList, sigSize, off)
		case hdrSize > listSize-eslHeaderSize || (listSize-eslHeaderSize-hdrSize)%sigSize != 0:
			return nil, fmt.Errorf("%w: header size %d and signature size %d do not fill list size %d at offset %d",
				ErrSignatureList, hdrSize, sigSize, listSize, off)
		}
		list := b[off+eslHeaderSize+int(hdrSize) : off+int(listSize)]
		for len(list) > 0 {
			s := Signature{Type: typ, Data: bytes.Clone(list[sigOwnerSize:sigSize])}
			copy(s.Owner[:], list)
			out = append(out, s)
			list = list[sigSize:]
		}
		off += int(listSize)
	}
	return out, nil
}

// Certificates returns the X.509 certificates among sigs; entries of other
// types (hashes) are skipped, unparsable certificates are an error.
func Certificates(sigs []Signature) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for i, s := range sigs {
		if s.Type != EFICertX509 {
			continue
		}
		c, err := x509.ParseCertificate(s.Data)
		if err != nil {
			return nil, fmt.Errorf("secureboot: signature %d: %w", i, err)
		}
		certs = append(certs, c)
	}
	return certs, nil
}
