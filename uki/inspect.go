package uki

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"github.com/osguard/osguard/pe"
	"github.com/osguard/osguard/secureboot"
)

// maxUKISize bounds what Inspect reads: a UKI is loaded whole into memory
// by the firmware, so anything past this is not a UKI.
const maxUKISize = 2 << 30

// SectionInfo describes one PE section of a UKI.
type SectionInfo struct {
	Name           string `json:"name"`
	VirtualAddress uint32 `json:"virtualAddress"`
	Size           uint32 `json:"size"` // VirtualSize: the bytes the stub uses
	Offset         uint32 `json:"offset"`
	RawSize        uint32 `json:"rawSize"`
	SHA256         string `json:"sha256"` // of the Size bytes a loader maps
}

// Signer is one Authenticode signer of the image.
type Signer struct {
	Subject     string `json:"subject"`
	Issuer      string `json:"issuer"`
	Serial      string `json:"serial"`
	Fingerprint string `json:"sha256Fingerprint"` // sha256 of the DER certificate
}

// Info is what Inspect reports.
type Info struct {
	Size             int64         `json:"size"`
	Sections         []SectionInfo `json:"sections"`
	Signers          []Signer      `json:"signers"`
	Checksum         uint32        `json:"checksum"`
	ComputedChecksum uint32        `json:"computedChecksum"`
}

// Inspect lists the sections and Authenticode signers of a PE image
// (normally a UKI). It reads r from offset 0 to its end.
func Inspect(r io.ReaderAt) (*Info, error) {
	b, err := io.ReadAll(io.LimitReader(io.NewSectionReader(r, 0, maxUKISize+1), maxUKISize+1))
	if err != nil {
		return nil, fmt.Errorf("uki: read: %w", err)
	}
	if len(b) > maxUKISize {
		return nil, fmt.Errorf("uki: image larger than %d bytes", maxUKISize)
	}
	im, err := pe.Parse(b)
	if err != nil {
		return nil, fmt.Errorf("uki: %w", err)
	}
	info := &Info{Size: int64(len(b)), Checksum: im.CheckSum, Sections: []SectionInfo{}, Signers: []Signer{}}
	info.ComputedChecksum, _ = pe.Checksum(b)
	for _, s := range im.Sections {
		h := sha256.New()
		if _, err := io.Copy(h, im.SectionReader(s)); err != nil {
			return nil, fmt.Errorf("uki: hash %s: %w", s.Name, err)
		}
		sum := h.Sum(nil)
		info.Sections = append(info.Sections, SectionInfo{
			Name: s.Name, VirtualAddress: s.VirtualAddress, Size: s.VirtualSize,
			Offset: s.PointerToRawData, RawSize: s.SizeOfRawData, SHA256: hex.EncodeToString(sum[:]),
		})
	}
	certs, err := secureboot.Signers(b)
	if err != nil && !errors.Is(err, secureboot.ErrUnsigned) {
		return nil, fmt.Errorf("uki: signers: %w", err)
	}
	for _, c := range certs {
		if c == nil {
			info.Signers = append(info.Signers, Signer{Subject: "(certificate not embedded)"})
			continue
		}
		fp := sha256.Sum256(c.Raw)
		info.Signers = append(info.Signers, Signer{
			Subject: c.Subject.String(), Issuer: c.Issuer.String(),
			Serial: c.SerialNumber.Text(16), Fingerprint: hex.EncodeToString(fp[:]),
		})
	}
	return info, nil
}
