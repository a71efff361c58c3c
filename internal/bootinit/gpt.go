package bootinit

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"unicode/utf16"

	"github.com/osguard/osguard/disk"
)

// GPT limits (UEFI 2.10, section 5.3). The entry array is bounded so that a
// hostile header cannot make us allocate much.
const (
	gptSignature    = "EFI PART"
	maxGPTEntries   = 1024
	maxGPTEntrySize = 1024
)

// GPTEntry is one used partition entry.
type GPTEntry struct {
	Index    int // 1-based, the kernel's PARTN
	Type     disk.GUID
	UUID     disk.GUID
	FirstLBA uint64
	LastLBA  uint64
	Name     string
}

// ReadGPT reads the primary GPT of a disk with the given logical sector
// size and returns its used entries. It checks the header and entry-array
// CRC32s, as firmware and the kernel (block/partitions/efi.c) do.
func ReadGPT(r io.ReaderAt, sectorSize int) ([]GPTEntry, error) {
	hdr := make([]byte, sectorSize)
	if _, err := r.ReadAt(hdr, int64(sectorSize)); err != nil {
		return nil, fmt.Errorf("bootinit: gpt header: %w", err)
	}
	if string(hdr[0:8]) != gptSignature {
		return nil, errors.New("bootinit: gpt header: no EFI PART signature")
	}
	hsize := binary.LittleEndian.Uint32(hdr[12:])
	if hsize < 92 || int(hsize) > sectorSize {
		return nil, fmt.Errorf("bootinit: gpt header: bad size %d", hsize)
	}
	want := binary.LittleEndian.Uint32(hdr[16:])
	h := bytes.Clone(hdr[:hsize])
	binary.LittleEndian.PutUint32(h[16:], 0)
	if crc32.ChecksumIEEE(h) != want {
		return nil, errors.New("bootinit: gpt header: bad CRC32")
	}
	entLBA := binary.LittleEndian.Uint64(hdr[72:])
	n := binary.LittleEndian.Uint32(hdr[80:])
	esize := binary.LittleEndian.Uint32(hdr[84:])
	if n > maxGPTEntries || esize < 128 || esize > maxGPTEntrySize || esize%8 != 0 {
		return nil, fmt.Errorf("bootinit: gpt header: %d entries of %d bytes", n, esize)
	}
	arr := make([]byte, int(n)*int(esize))
	if _, err := r.ReadAt(arr, int64(entLBA)*int64(sectorSize)); err != nil {
		return nil, fmt.Errorf("bootinit: gpt entries: %w", err)
	}
	if crc32.ChecksumIEEE(arr) != binary.LittleEndian.Uint32(hdr[88:]) {
		return nil, errors.New("bootinit: gpt entries: bad CRC32")
	}
	var out []GPTEntry
	for i := 0; i < int(n); i++ {
		e := arr[i*int(esize):]
		t := guidFromDisk(e[0:16])
		if t.IsZero() {
			continue
		}
		u16 := make([]uint16, 36)
		for j := range u16 {
			u16[j] = binary.LittleEndian.Uint16(e[56+2*j:])
		}
		if k := indexZero(u16); k >= 0 {
			u16 = u16[:k]
		}
		out = append(out, GPTEntry{Index: i + 1, Type: t, UUID: guidFromDisk(e[16:32]),
			FirstLBA: binary.LittleEndian.Uint64(e[32:]), LastLBA: binary.LittleEndian.Uint64(e[40:]),
			Name: string(utf16.Decode(u16))})
	}
	return out, nil
}

func indexZero(s []uint16) int {
	for i, v := range s {
		if v == 0 {
			return i
		}
	}
	return -1
}

// guidFromDisk turns the mixed-endian EFI_GUID encoding into text order.
func guidFromDisk(b []byte) disk.GUID {
	var g disk.GUID
	binary.BigEndian.PutUint32(g[0:], binary.LittleEndian.Uint32(b[0:]))
	binary.BigEndian.PutUint16(g[4:], binary.LittleEndian.Uint16(b[4:]))
	binary.BigEndian.PutUint16(g[6:], binary.LittleEndian.Uint16(b[6:]))
	copy(g[8:], b[8:16])
	return g
}
