package pe

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
)

// NewSection is a section to add to an image.
type NewSection struct {
	Name            string // at most 8 bytes
	Data            []byte
	Characteristics uint32
}

// Clone returns an Image over a copy of the data, for writing.
func (im *Image) Clone() *Image {
	c := *im
	c.data, c.spare = slices.Clone(im.data), false
	c.Sections = slices.Clone(im.Sections)
	return &c
}

func (im *Image) checkWritable() error {
	if _, size := im.DataDirectory(IMAGE_DIRECTORY_ENTRY_SECURITY); size != 0 {
		return ErrSigned
	}
	for _, s := range im.Sections {
		if s.PointerToRawData%im.FileAlign != 0 || s.SizeOfRawData%im.FileAlign != 0 {
			return fmt.Errorf("pe: section %q raw data is not aligned to FileAlignment %#x", s.Name, im.FileAlign)
		}
	}
	return nil
}

// Append adds a section after the last one: its raw data at the end of the
// file rounded up to FileAlignment, its virtual address after the last
// section rounded up to SectionAlignment, and its header after the last
// section header, which must fit in the header area. It updates
// NumberOfSections, SizeOfInitializedData, SizeOfImage and CheckSum.
func (im *Image) Append(s NewSection) error {
	if err := im.checkWritable(); err != nil {
		return err
	}
	if len(s.Name) == 0 || len(s.Name) > 8 {
		return fmt.Errorf("pe: section name %q must be 1 to 8 bytes", s.Name)
	}
	if uint64(len(s.Data)) > math.MaxUint32/2 {
		return fmt.Errorf("pe: section %s: %d bytes is too large", s.Name, len(s.Data))
	}
	if len(im.Sections) >= maxSections {
		return fmt.Errorf("pe: image already has %d sections", len(im.Sections))
	}
	// ukify pads SizeOfHeaders to FileAlignment first; the space up to the
	// first section's raw data is unused, so that is safe.
	hdrEnd := alignUp(uint64(im.SizeOfHdrs), uint64(im.FileAlign))
	for _, sec := range im.Sections {
		if sec.SizeOfRawData != 0 && uint64(sec.PointerToRawData) < hdrEnd {
			hdrEnd = uint64(sec.PointerToRawData)
		}
	}
	hdrOff := im.sectOff + len(im.Sections)*sectionHeaderSize
	if uint64(hdrOff+sectionHeaderSize) > hdrEnd {
		return fmt.Errorf("pe: no room for another section header before byte %#x", hdrEnd)
	}
	var va uint64
	if len(im.Sections) > 0 {
		last := im.Sections[len(im.Sections)-1]
		va = uint64(last.VirtualAddress) + uint64(last.VirtualSize)
	}
	va = alignUp(va, uint64(im.SectAlign))
	raw := alignUp(uint64(len(im.data)), uint64(im.FileAlign))
	rawSize := alignUp(uint64(len(s.Data)), uint64(im.FileAlign))
	if raw+rawSize > math.MaxUint32 || va+uint64(len(s.Data)) > math.MaxUint32 {
		return fmt.Errorf("pe: section %s does not fit a 32-bit image", s.Name)
	}
	h := SectionHeader{
		Name:             s.Name,
		VirtualSize:      uint32(len(s.Data)),
		VirtualAddress:   uint32(va),
		SizeOfRawData:    uint32(rawSize),
		PointerToRawData: uint32(raw),
		Characteristics:  s.Characteristics,
	}
	im.SizeOfHdrs = uint32(alignUp(uint64(im.SizeOfHdrs), uint64(im.FileAlign)))
	binary.LittleEndian.PutUint32(im.data[im.optOff+60:], im.SizeOfHdrs)

	im.extend(int(raw + rawSize))
	copy(im.data[raw:], s.Data)
	im.writeHeader(len(im.Sections), h)
	im.Sections = append(im.Sections, h)
	binary.LittleEndian.PutUint16(im.data[im.peOff+6:], uint16(len(im.Sections)))

	// SizeOfInitializedData at optional header offset 8; ukify adds every
	// new section (including .linux) to it.
	sid := binary.LittleEndian.Uint32(im.data[im.optOff+8:])
	binary.LittleEndian.PutUint32(im.data[im.optOff+8:], sid+h.VirtualSize)
	im.finish()
	return nil
}

// Grow makes room for n more bytes of section data (alignment padding
// included), so that the Appends that follow do not copy the whole image
// each: a UKI's sections are tens of MB.
func (im *Image) Grow(n int) {
	if n <= 0 || im.spare && cap(im.data)-len(im.data) >= n {
		return
	}
	d := make([]byte, len(im.data), len(im.data)+n)
	copy(d, im.data)
	im.data, im.spare = d, true
}

// extend makes data n bytes long, the new bytes zero: in place when Grow
// left room, else in a copy.
func (im *Image) extend(n int) {
	if im.spare && n <= cap(im.data) {
		im.data = im.data[:n] // zero already: nothing writes beyond the length
		return
	}
	grown := make([]byte, n)
	copy(grown, im.data)
	im.data, im.spare = grown, false
}

// Replace swaps the content of the existing section name for data, in
// place: data must fit in that section's SizeOfRawData; the rest is zeroed
// and VirtualSize becomes len(data). ukify does this for .sbat, which the
// stub already has.
func (im *Image) Replace(name string, data []byte) error {
	if err := im.checkWritable(); err != nil {
		return err
	}
	for i, s := range im.Sections {
		if s.Name != name {
			continue
		}
		if uint64(len(data)) > uint64(s.SizeOfRawData) {
			return fmt.Errorf("pe: %d bytes do not fit in section %s (%d bytes of raw data)", len(data), name, s.SizeOfRawData)
		}
		raw := im.data[s.PointerToRawData : s.PointerToRawData+s.SizeOfRawData]
		clear(raw)
		copy(raw, data)
		s.VirtualSize = uint32(len(data))
		im.Sections[i] = s
		im.writeHeader(i, s)
		im.finish()
		return nil
	}
	return fmt.Errorf("pe: no section %s", name)
}

// ClearDllCharacteristics clears flags in the optional header.
func (im *Image) ClearDllCharacteristics(flags uint16) {
	im.DllChars &^= flags
	binary.LittleEndian.PutUint16(im.data[im.optOff+70:], im.DllChars)
	im.UpdateChecksum()
}

func (im *Image) writeHeader(i int, s SectionHeader) {
	h := im.data[im.sectOff+i*sectionHeaderSize : im.sectOff+(i+1)*sectionHeaderSize]
	clear(h[:8])
	copy(h[:8], s.Name)
	binary.LittleEndian.PutUint32(h[8:], s.VirtualSize)
	binary.LittleEndian.PutUint32(h[12:], s.VirtualAddress)
	binary.LittleEndian.PutUint32(h[16:], s.SizeOfRawData)
	binary.LittleEndian.PutUint32(h[20:], s.PointerToRawData)
	clear(h[24:36]) // relocations and line numbers: none in images
	binary.LittleEndian.PutUint32(h[36:], s.Characteristics)
}

// finish recomputes SizeOfImage (end of the last section, aligned) and the checksum.
func (im *Image) finish() {
	var end uint64
	if n := len(im.Sections); n > 0 {
		last := im.Sections[n-1]
		end = uint64(last.VirtualAddress) + uint64(last.VirtualSize)
	}
	im.SizeOfImage = uint32(alignUp(end, uint64(im.SectAlign)))
	binary.LittleEndian.PutUint32(im.data[im.optOff+56:], im.SizeOfImage)
	im.UpdateChecksum()
}
