package pe

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
)

// Section characteristics used here, spelled as in the PE/COFF specification.
const (
	IMAGE_SCN_CNT_CODE               = 0x00000020
	IMAGE_SCN_CNT_INITIALIZED_DATA   = 0x00000040
	IMAGE_SCN_CNT_UNINITIALIZED_DATA = 0x00000080
	IMAGE_SCN_MEM_EXECUTE            = 0x20000000
	IMAGE_SCN_MEM_READ               = 0x40000000
	IMAGE_SCN_MEM_WRITE              = 0x80000000

	IMAGE_DLLCHARACTERISTICS_NX_COMPAT = 0x0100

	// IMAGE_DIRECTORY_ENTRY_SECURITY is the data directory index of the
	// Authenticode certificate table.
	IMAGE_DIRECTORY_ENTRY_SECURITY = 4
)

const (
	magicPE32     = 0x10b
	magicPE32Plus = 0x20b

	sectionHeaderSize = 40
	coffHeaderSize    = 20
	// maxSections is the loader limit of the PE/COFF specification
	// ("the Windows loader limits the number of sections to 96").
	maxSections = 96
	// maxVirtualSize bounds a section's size in memory. UEFI loads the
	// whole image below 4 GiB; a section above 1 GiB is not a UKI's.
	maxVirtualSize = 1 << 30
	// maxZeroFill bounds the sum over all sections of the bytes a loader
	// zero-fills past SizeOfRawData, which readers of this package hash:
	// a hostile header must not make them hash gigabytes of zeros.
	maxZeroFill = 256 << 20
)

// ErrFormat is wrapped by every error about a malformed image.
var ErrFormat = errors.New("pe: malformed image")

// ErrSigned is returned when sections would be added to an image that
// carries an Authenticode signature.
var ErrSigned = errors.New("pe: image is signed; remove the signature first")

// SectionHeader is one IMAGE_SECTION_HEADER entry.
type SectionHeader struct {
	Name             string // up to 8 bytes, NULs stripped
	VirtualSize      uint32
	VirtualAddress   uint32
	SizeOfRawData    uint32
	PointerToRawData uint32
	Characteristics  uint32
}

// Image is a parsed PE/COFF image held in memory.
type Image struct {
	data []byte
	// spare says that data's capacity beyond its length belongs to the
	// Image and is zero (Grow), so that Append fills it in place.
	spare bool

	peOff       int // offset of "PE\0\0"
	optOff      int // offset of the optional header
	optSize     int
	sectOff     int // offset of the section table
	plus        bool
	Machine     uint16
	Sections    []SectionHeader
	FileAlign   uint32
	SectAlign   uint32
	SizeOfHdrs  uint32
	SizeOfImage uint32
	CheckSum    uint32
	DllChars    uint16
	numDataDirs uint32
}

func formatErr(off int, format string, args ...any) error {
	return fmt.Errorf("%w: at byte %#x: %s", ErrFormat, off, fmt.Sprintf(format, args...))
}

// Parse parses the DOS, COFF and optional headers and the section table of b.
// The returned Image refers to b: Replace and ClearDllCharacteristics
// write into b, so call Clone first to keep b unchanged.
func Parse(b []byte) (*Image, error) {
	if len(b) < 0x40 || b[0] != 'M' || b[1] != 'Z' {
		return nil, formatErr(0, "no MZ signature")
	}
	peOff := int(binary.LittleEndian.Uint32(b[0x3c:]))
	if peOff < 0x40 || peOff > len(b)-4-coffHeaderSize {
		return nil, formatErr(0x3c, "PE header offset %#x outside the file", peOff)
	}
	if string(b[peOff:peOff+4]) != "PE\x00\x00" {
		return nil, formatErr(peOff, "no PE signature")
	}
	coff := b[peOff+4:]
	im := &Image{data: b, peOff: peOff}
	im.Machine = binary.LittleEndian.Uint16(coff[0:])
	nsect := int(binary.LittleEndian.Uint16(coff[2:]))
	im.optSize = int(binary.LittleEndian.Uint16(coff[16:]))
	im.optOff = peOff + 4 + coffHeaderSize
	if nsect > maxSections {
		return nil, formatErr(peOff+6, "%d sections, more than %d", nsect, maxSections)
	}
	if im.optSize < 2 || im.optOff+im.optSize > len(b) {
		return nil, formatErr(peOff+20, "optional header size %d outside the file", im.optSize)
	}
	opt := b[im.optOff : im.optOff+im.optSize]
	var ddOff int
	switch binary.LittleEndian.Uint16(opt) {
	case magicPE32:
		ddOff = 96
	case magicPE32Plus:
		im.plus = true
		ddOff = 112
	default:
		return nil, formatErr(im.optOff, "unknown optional header magic %#x", binary.LittleEndian.Uint16(opt))
	}
	if len(opt) < ddOff {
		return nil, formatErr(im.optOff, "optional header too short (%d bytes)", len(opt))
	}
	im.SectAlign = binary.LittleEndian.Uint32(opt[32:])
	im.FileAlign = binary.LittleEndian.Uint32(opt[36:])
	im.SizeOfImage = binary.LittleEndian.Uint32(opt[56:])
	im.SizeOfHdrs = binary.LittleEndian.Uint32(opt[60:])
	im.CheckSum = binary.LittleEndian.Uint32(opt[64:])
	im.DllChars = binary.LittleEndian.Uint16(opt[70:])
	im.numDataDirs = binary.LittleEndian.Uint32(opt[ddOff-4:])
	if im.numDataDirs > 16 || ddOff+8*int(im.numDataDirs) > len(opt) {
		return nil, formatErr(im.optOff+ddOff-4, "%d data directories do not fit the optional header", im.numDataDirs)
	}
	if !pow2(im.FileAlign) || !pow2(im.SectAlign) || im.FileAlign > im.SectAlign {
		return nil, formatErr(im.optOff+32, "bad alignment: section %#x, file %#x", im.SectAlign, im.FileAlign)
	}
	im.sectOff = im.optOff + im.optSize
	if im.sectOff+nsect*sectionHeaderSize > len(b) {
		return nil, formatErr(im.sectOff, "section table (%d entries) outside the file", nsect)
	}
	var zeroFill uint64
	for i := range nsect {
		h := b[im.sectOff+i*sectionHeaderSize:]
		s := SectionHeader{
			Name:             cstring(h[:8]),
			VirtualSize:      binary.LittleEndian.Uint32(h[8:]),
			VirtualAddress:   binary.LittleEndian.Uint32(h[12:]),
			SizeOfRawData:    binary.LittleEndian.Uint32(h[16:]),
			PointerToRawData: binary.LittleEndian.Uint32(h[20:]),
			Characteristics:  binary.LittleEndian.Uint32(h[36:]),
		}
		if uint64(s.PointerToRawData)+uint64(s.SizeOfRawData) > uint64(len(b)) {
			return nil, formatErr(im.sectOff+i*sectionHeaderSize, "section %q raw data [%#x+%#x] outside the file (%#x bytes)",
				s.Name, s.PointerToRawData, s.SizeOfRawData, len(b))
		}
		if s.VirtualSize > maxVirtualSize {
			return nil, formatErr(im.sectOff+i*sectionHeaderSize, "section %q VirtualSize %#x above %#x", s.Name, s.VirtualSize, maxVirtualSize)
		}
		if uint64(s.VirtualAddress)+uint64(s.VirtualSize) > math.MaxUint32 {
			return nil, formatErr(im.sectOff+i*sectionHeaderSize, "section %q virtual range overflows", s.Name)
		}
		if s.VirtualSize > s.SizeOfRawData {
			zeroFill += uint64(s.VirtualSize - s.SizeOfRawData)
			if zeroFill > maxZeroFill {
				return nil, formatErr(im.sectOff+i*sectionHeaderSize, "sections zero-fill more than %#x bytes", maxZeroFill)
			}
		}
		im.Sections = append(im.Sections, s)
	}
	return im, nil
}

func pow2(v uint32) bool { return v != 0 && v&(v-1) == 0 }

func cstring(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

// Bytes returns the image bytes.
func (im *Image) Bytes() []byte { return im.data }

// DataDirectory returns entry i of the optional header's data directories
// (zero if the image has fewer).
func (im *Image) DataDirectory(i int) (va, size uint32) {
	if i < 0 || uint32(i) >= im.numDataDirs {
		return 0, 0
	}
	off := im.optOff + 96 + 8*i
	if im.plus {
		off += 16
	}
	return binary.LittleEndian.Uint32(im.data[off:]), binary.LittleEndian.Uint32(im.data[off+4:])
}

// Section returns the first section header named name.
func (im *Image) Section(name string) (SectionHeader, bool) {
	for _, s := range im.Sections {
		if s.Name == name {
			return s, true
		}
	}
	return SectionHeader{}, false
}

// SectionData returns the bytes of s as a loader maps them: VirtualSize
// bytes, the part beyond SizeOfRawData zero-filled.
func (im *Image) SectionData(s SectionHeader) []byte {
	n := min(s.VirtualSize, s.SizeOfRawData)
	out := make([]byte, s.VirtualSize)
	copy(out, im.data[s.PointerToRawData:s.PointerToRawData+n])
	return out
}

// SectionReader streams what SectionData returns without holding it.
func (im *Image) SectionReader(s SectionHeader) io.Reader {
	n := min(s.VirtualSize, s.SizeOfRawData)
	raw := bytes.NewReader(im.data[s.PointerToRawData : s.PointerToRawData+n])
	return io.MultiReader(raw, io.LimitReader(zeros{}, int64(s.VirtualSize-n)))
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// Checksum computes the optional-header CheckSum of b the way the Windows
// image loader (and edk2, osslsigncode, sbsign) compute it: the 16-bit
// one's-complement-style sum of the file with the CheckSum field taken as
// zero, plus the file length.
func Checksum(b []byte) (uint32, error) {
	im, err := Parse(b)
	if err != nil {
		return 0, err
	}
	return ComputeChecksum(b, im.optOff+64), nil
}

// ComputeChecksum is Checksum for image bytes b whose CheckSum field is at
// checksumOff (optional header offset 64), which the caller has found.
func ComputeChecksum(b []byte, checksumOff int) uint32 {
	// The CheckSum field counts as zero: leave its two words out.
	n := len(b) &^ 1
	var sum uint64
	start := 0
	for _, at := range []int{checksumOff, checksumOff + 2} {
		if at >= start && at%2 == 0 && at+2 <= n {
			sum += sumWords(b[start:at])
			start = at + 2
		}
	}
	sum += sumWords(b[start:n])
	if len(b)&1 == 1 {
		sum += uint64(b[len(b)-1])
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return uint32(sum) + uint32(len(b))
}

// sumWords adds the little-endian 16-bit words of b, whose length is even.
//
// The loaders add the words folding the carry back in after each, which
// gives the sum of the words modulo 0xffff, as 0 only when every word is
// 0 and otherwise in 1..0xffff. Since 2^16 is 1 modulo 0xffff, a 32-bit
// word is its two halves modulo 0xffff, and it is 0 only when they are: so
// sumWords adds the two 32-bit halves of 64-bit words and the caller folds
// once at the end, which gives the same value four to five times faster.
func sumWords(b []byte) uint64 {
	var sum uint64
	i := 0
	for ; i+8 <= len(b); i += 8 {
		v := binary.LittleEndian.Uint64(b[i:])
		sum += v&0xffffffff + v>>32
	}
	for ; i < len(b); i += 2 {
		sum += uint64(binary.LittleEndian.Uint16(b[i:]))
	}
	return sum
}

// UpdateChecksum rewrites the CheckSum field of the image in place.
func (im *Image) UpdateChecksum() {
	off := im.optOff + 64
	im.CheckSum = ComputeChecksum(im.data, off)
	binary.LittleEndian.PutUint32(im.data[off:], im.CheckSum)
}

func alignUp(v, a uint64) uint64 { return (v + a - 1) / a * a }
