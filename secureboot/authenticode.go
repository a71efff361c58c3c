package secureboot

import (
	"bytes"
	"cmp"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/osguard/osguard/pe"
)

// Errors of the PE Authenticode functions.
var (
	ErrNotPE          = errors.New("secureboot: not a PE/COFF image")
	ErrUnsigned       = errors.New("secureboot: image has no Authenticode signature")
	ErrDigestMismatch = errors.New("secureboot: image digest does not match its signature (modified after signing)")
	ErrWrongSigner    = errors.New("secureboot: not signed by the given certificate")
	ErrBadSignature   = errors.New("secureboot: signature does not verify")
)

// Offsets inside the PE optional header (PE/COFF spec, section 3.4).
const (
	optCheckSum       = 64
	optSizeOfHeaders  = 60
	optPE32NumRva     = 92
	optPE32DataDirs   = 96
	optPE32PNumRva    = 108
	optPE32PDataDirs  = 112
	dirSecurity       = 4 // IMAGE_DIRECTORY_ENTRY_SECURITY
	sectionHeaderSize = 40
	maxSections       = 96 // the loader's limit (PE/COFF spec, section 3.3)
)

// peImage holds the offsets Authenticode needs, all checked against the file.
type peImage struct {
	b             []byte
	checksumOff   int
	secDirOff     int // file offset of the security data directory entry
	sizeOfHeaders int
	sections      [][2]int // file offset, size; SizeOfRawData != 0
	certOff       int      // attribute certificate table; certLen 0: none
	certLen       int
}

func parsePE(b []byte) (*peImage, error) {
	fail := func(format string, args ...any) (*peImage, error) {
		return nil, fmt.Errorf("%w: "+format, append([]any{ErrNotPE}, args...)...)
	}
	if len(b) < 0x40 || b[0] != 'M' || b[1] != 'Z' {
		return fail("no MZ header")
	}
	pe := int(binary.LittleEndian.Uint32(b[0x3c:]))
	if pe < 0x40 || pe > len(b)-24 || !bytes.Equal(b[pe:pe+4], []byte("PE\x00\x00")) {
		return fail("no PE signature at %#x", pe)
	}
	nsec := int(binary.LittleEndian.Uint16(b[pe+6:]))
	optSize := int(binary.LittleEndian.Uint16(b[pe+20:]))
	opt := pe + 24
	if nsec > maxSections {
		return fail("%d sections", nsec)
	}
	if opt+optSize > len(b) || optSize < 2 {
		return fail("optional header of %d bytes runs past the file", optSize)
	}
	var numRvaOff, dirsOff int
	switch m := binary.LittleEndian.Uint16(b[opt:]); m {
	case 0x10b:
		numRvaOff, dirsOff = optPE32NumRva, optPE32DataDirs
	case 0x20b:
		numRvaOff, dirsOff = optPE32PNumRva, optPE32PDataDirs
	default:
		return fail("optional header magic %#x", m)
	}
	secDir := opt + dirsOff + dirSecurity*8
	if secDir+8 > opt+optSize || binary.LittleEndian.Uint32(b[opt+numRvaOff:]) <= dirSecurity {
		return fail("no security data directory")
	}
	p := &peImage{b: b, checksumOff: opt + optCheckSum, secDirOff: secDir}
	p.sizeOfHeaders = int(binary.LittleEndian.Uint32(b[opt+optSizeOfHeaders:]))
	secTable := opt + optSize
	if secTable+nsec*sectionHeaderSize > len(b) {
		return fail("section table runs past the file")
	}
	if p.sizeOfHeaders > len(b) {
		return fail("headers of %#x bytes run past the end of the %#x-byte file (truncated?)", p.sizeOfHeaders, len(b))
	}
	if p.sizeOfHeaders < secDir+8 {
		return fail("SizeOfHeaders %#x is smaller than the headers", p.sizeOfHeaders)
	}
	certOff := int64(binary.LittleEndian.Uint32(b[secDir:]))
	certLen := int64(binary.LittleEndian.Uint32(b[secDir+4:]))
	if certOff != 0 || certLen != 0 {
		// Signers append the table at the end, and Authenticode hashes
		// everything before it, so accept it only there.
		if certOff < int64(p.sizeOfHeaders) || certOff+certLen != int64(len(b)) {
			return fail("certificate table at %#x+%#x is not at the end of the %#x-byte file", certOff, certLen, len(b))
		}
		p.certOff, p.certLen = int(certOff), int(certLen)
	} else {
		p.certOff = len(b)
	}
	for i := range nsec {
		h := b[secTable+i*sectionHeaderSize:]
		size := int64(binary.LittleEndian.Uint32(h[16:]))
		off := int64(binary.LittleEndian.Uint32(h[20:]))
		if size == 0 {
			continue
		}
		// A section inside the headers would cover the CheckSum and the
		// security directory, which signing changes.
		if off < int64(p.sizeOfHeaders) {
			return fail("section %d (%q) at %#x overlaps the headers", i, bytes.TrimRight(h[:8], "\x00"), off)
		}
		if off+size > int64(p.certOff) {
			return fail("section %d (%q) at %#x+%#x runs past the image data", i, bytes.TrimRight(h[:8], "\x00"), off, size)
		}
		p.sections = append(p.sections, [2]int{int(off), int(size)})
	}
	return p, nil
}

// hashedRegions lists the byte ranges of the Authenticode digest in order,
// following the Authenticode PE spec (and edk2's HashPeImage): headers
// without the checksum and the security directory entry, the sections sorted
// by file offset, then any data after them up to the certificate table.
func (p *peImage) hashedRegions() [][]byte {
	r := [][]byte{
		p.b[:p.checksumOff],
		p.b[p.checksumOff+4 : p.secDirOff],
		p.b[p.secDirOff+8 : p.sizeOfHeaders],
	}
	secs := slices.Clone(p.sections)
	slices.SortStableFunc(secs, func(a, b [2]int) int { return cmp.Compare(a[0], b[0]) })
	sum := p.sizeOfHeaders
	for _, s := range secs {
		r = append(r, p.b[s[0]:s[0]+s[1]])
		sum += s[1]
	}
	if sum < p.certOff {
		r = append(r, p.b[sum:p.certOff])
	}
	return r
}

func (p *peImage) digest() []byte {
	h := sha256.New()
	for _, r := range p.hashedRegions() {
		h.Write(r)
	}
	return h.Sum(nil)
}

// winCert is one WIN_CERTIFICATE entry of the attribute certificate table.
type winCert struct {
	certType uint16
	data     []byte
}

func (p *peImage) certificates() ([]winCert, error) {
	var out []winCert
	t := p.b[p.certOff : p.certOff+p.certLen]
	for off := 0; off < len(t); {
		if len(t)-off < winCertHeaderSize {
			return nil, fmt.Errorf("secureboot: certificate table: %d stray bytes", len(t)-off)
		}
		n := int64(binary.LittleEndian.Uint32(t[off:]))
		if n < winCertHeaderSize || n > int64(len(t)-off) {
			return nil, fmt.Errorf("secureboot: certificate table: entry length %d at %d", n, off)
		}
		if rev := binary.LittleEndian.Uint16(t[off+4:]); rev != winCertRevision {
			return nil, fmt.Errorf("secureboot: certificate table: revision %#x", rev)
		}
		out = append(out, winCert{binary.LittleEndian.Uint16(t[off+6:]), t[off+8 : off+int(n)]})
		off += int(align8(n))
	}
	return out, nil
}

func align8(n int64) int64 { return (n + 7) &^ 7 }

// PEDigest returns the sha256 Authenticode digest of a PE image, the value
// signed by SignPE and measured by firmware into PCR 4.
func PEDigest(pe []byte) ([]byte, error) {
	p, err := parsePE(pe)
	if err != nil {
		return nil, err
	}
	return p.digest(), nil
}

// spcIndirectDataContent builds the content octets (without the outer
// SEQUENCE header) of SpcIndirectDataContent for a sha256 image digest:
// SpcPeImageData with no flags and the "<<<Obsolete>>>" file link that
// signtool and sbsign write, then DigestInfo.
func spcIndirectDataContent(digest []byte) []byte {
	obsolete := ucs2("<<<Obsolete>>>")
	for i := 0; i < len(obsolete); i += 2 { // BMPString is big endian
		obsolete[i], obsolete[i+1] = obsolete[i+1], obsolete[i]
	}
	peImageData := der(tagSequence,
		[]byte{0x03, 0x01, 0x00}, // flags: empty BIT STRING
		der(0xa0, der(0xa2, der(0x80, obsolete))),
	)
	return slices.Concat(
		der(tagSequence, mustMarshal(oidSpcPEImageData), peImageData),
		der(tagSequence, algID(oidSHA256), der(tagOctetString, digest)),
	)
}

// SignPE returns image with an Authenticode signature by key/cert in place
// of any signature it had, padded to 8 bytes before the certificate table,
// and with the optional header CheckSum recomputed. The signature has the
// authenticated attributes contentType and messageDigest and no signing
// time, so the output is reproducible for RSA keys. image is not changed.
func SignPE(image []byte, key crypto.Signer, cert *x509.Certificate) ([]byte, error) {
	p, err := parsePE(image)
	if err != nil {
		return nil, err
	}
	// The copy has room for the padding and the certificate table, which a
	// UKI's is of a few KB, so that the image is copied once.
	b := make([]byte, p.certOff, int(align8(int64(p.certOff)))+CertTableRoom)
	copy(b, image[:p.certOff])
	return sign(b, p.secDirOff, key, cert)
}

// SignPEInPlace is SignPE on image itself, which it changes and which the
// caller gives up: the signature goes into image's spare capacity when it
// has CertTableRoom bytes of it (uki.Options.Spare), which saves a copy of
// the image, tens of MB for a UKI.
func SignPEInPlace(image []byte, key crypto.Signer, cert *x509.Certificate) ([]byte, error) {
	p, err := parsePE(image)
	if err != nil {
		return nil, err
	}
	return sign(image[:p.certOff], p.secDirOff, key, cert)
}

// CertTableRoom is the room that SignPE leaves, and SignPEInPlace wants,
// for the padding and the certificate table; a larger table only costs a
// copy of the image.
const CertTableRoom = 16 << 10

// sign signs b, an image without its certificate table whose security
// directory entry is at secDirOff, appending to b.
func sign(b []byte, secDirOff int, key crypto.Signer, cert *x509.Certificate) ([]byte, error) {
	// Drop old signatures, then pad so that no verifier needs to pad the
	// digest input itself (edk2 does not, sbsign and osslsigncode do).
	b = append(b, make([]byte, align8(int64(len(b)))-int64(len(b)))...)
	clear(b[secDirOff : secDirOff+8])
	p, err := parsePE(b)
	if err != nil {
		return nil, err
	}
	spc := spcIndirectDataContent(p.digest())
	sd, err := signedData(oidSpcIndirectDataContent, der(tagSequence, spc), spc, true, key, cert)
	if err != nil {
		return nil, err
	}
	ci := wrapContentInfo(sd)
	entry := binary.LittleEndian.AppendUint32(nil, uint32(winCertHeaderSize+len(ci)))
	entry = binary.LittleEndian.AppendUint16(entry, winCertRevision)
	entry = binary.LittleEndian.AppendUint16(entry, winCertTypePKCS)
	entry = append(entry, ci...)
	entry = append(entry, make([]byte, align8(int64(len(entry)))-int64(len(entry)))...)
	binary.LittleEndian.PutUint32(b[p.secDirOff:], uint32(len(b)))
	binary.LittleEndian.PutUint32(b[p.secDirOff+4:], uint32(len(entry)))
	b = append(b, entry...)
	binary.LittleEndian.PutUint32(b[p.checksumOff:], pe.ComputeChecksum(b, p.checksumOff))
	return b, nil
}

// PEChecksum returns the CheckSum stored in the image and the one computed.
func PEChecksum(image []byte) (stored, computed uint32, err error) {
	p, err := parsePE(image)
	if err != nil {
		return 0, 0, err
	}
	return binary.LittleEndian.Uint32(image[p.checksumOff:]), pe.ComputeChecksum(image, p.checksumOff), nil
}

// authenticodeSig is one parsed Authenticode signature.
type authenticodeSig struct {
	p7     *parsedP7
	spc    []byte // content octets of SpcIndirectDataContent
	digest []byte // the image digest it claims
}

func parseAuthenticode(data []byte) (*authenticodeSig, error) {
	p7, err := parseContentInfoSignedData(data)
	if err != nil {
		return nil, fmt.Errorf("secureboot: authenticode: %w", err)
	}
	if !p7.contentType.Equal(oidSpcIndirectDataContent) {
		return nil, fmt.Errorf("secureboot: authenticode: content type %v", p7.contentType)
	}
	var spc struct {
		Data          asn1.RawValue
		MessageDigest struct {
			Algorithm asn1.RawValue
			Digest    []byte
		}
	}
	if _, err := asn1.Unmarshal(p7.content.FullBytes, &spc); err != nil {
		return nil, fmt.Errorf("secureboot: authenticode: SpcIndirectDataContent: %w", err)
	}
	var alg struct{ Algorithm asn1.ObjectIdentifier }
	if _, err := asn1.Unmarshal(spc.MessageDigest.Algorithm.FullBytes, &alg); err != nil || !alg.Algorithm.Equal(oidSHA256) {
		return nil, fmt.Errorf("secureboot: authenticode: image digest algorithm is not sha256")
	}
	// The signed message digest covers the content octets of the SEQUENCE.
	return &authenticodeSig{p7: p7, spc: p7.content.Bytes, digest: spc.MessageDigest.Digest}, nil
}

func (p *peImage) signatures() ([]*authenticodeSig, error) {
	certs, err := p.certificates()
	if err != nil {
		return nil, err
	}
	var sigs []*authenticodeSig
	for _, c := range certs {
		if c.certType != winCertTypePKCS {
			continue
		}
		s, err := parseAuthenticode(c.data)
		if err != nil {
			return nil, err
		}
		sigs = append(sigs, s)
	}
	if len(sigs) == 0 {
		return nil, ErrUnsigned
	}
	return sigs, nil
}

// Signers returns the certificates that signed pe, one per signature (nil
// for a signer whose certificate is not embedded). It does not check the
// signatures.
func Signers(pe []byte) ([]*x509.Certificate, error) {
	p, err := parsePE(pe)
	if err != nil {
		return nil, err
	}
	sigs, err := p.signatures()
	if err != nil {
		return nil, err
	}
	var out []*x509.Certificate
	for _, s := range sigs {
		for i := range s.p7.signers {
			out = append(out, s.p7.signerCert(&s.p7.signers[i]))
		}
	}
	return out, nil
}

// VerifyPE checks that pe carries a valid Authenticode signature made by
// cert (the signer is cert itself; chains are not followed) over its current
// content. It returns ErrUnsigned, ErrDigestMismatch, ErrWrongSigner or
// ErrBadSignature (possibly wrapped) when not.
func VerifyPE(pe []byte, cert *x509.Certificate) error {
	p, err := parsePE(pe)
	if err != nil {
		return err
	}
	sigs, err := p.signatures()
	if err != nil {
		return err
	}
	digest := p.digest()
	errs := []error{ErrUnsigned}
	for _, s := range sigs {
		if !bytes.Equal(s.digest, digest) {
			errs = append(errs, ErrDigestMismatch)
			continue
		}
		for i := range s.p7.signers {
			si := &s.p7.signers[i]
			if !si.matches(cert) {
				errs = append(errs, ErrWrongSigner)
				continue
			}
			if err := verifySigner(si, s.spc, oidSpcIndirectDataContent, cert); err != nil {
				errs = append(errs, fmt.Errorf("%w: %w", ErrBadSignature, err))
				continue
			}
			return nil
		}
	}
	// Report the most telling failure: a signature by cert that fails beats
	// a signature by someone else.
	slices.SortStableFunc(errs, func(a, b error) int { return cmp.Compare(rank(a), rank(b)) })
	return errs[0]
}

func rank(err error) int {
	switch {
	case errors.Is(err, ErrBadSignature):
		return 0
	case errors.Is(err, ErrDigestMismatch):
		return 1
	case errors.Is(err, ErrWrongSigner):
		return 2
	}
	return 3
}
