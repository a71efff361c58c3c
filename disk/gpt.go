package disk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"unicode/utf16"

	"golang.org/x/sys/unix"
)

const (
	gptEntries     = 128
	gptEntrySize   = 128
	gptEntrySecs   = gptEntries * gptEntrySize / sectorSize // 32
	gptHeaderSize  = 92
	alignSectors   = 2048 // 1 MiB
	gptNameLen     = 36   // UTF-16 code units
	firstUsableLBA = 2 + gptEntrySecs
)

// Partition is one GPT partition.
type Partition struct {
	TypeGUID GUID   // partition type, e.g. TypeESP
	UUID     GUID   // unique partition GUID; must not be zero
	Name     string // at most 36 UTF-16 code units
	// Size in bytes, rounded up to 1 MiB; 0 means the content's size.
	Size       int64
	Attributes uint64
	// Content fills the start of the partition: Content (ContentSize bytes)
	// or the file at Path. Neither: the partition is left as zeros.
	Content     io.ReaderAt
	ContentSize int64
	Path        string
}

// Layout is a whole disk.
type Layout struct {
	DiskGUID GUID // must not be zero
	// Size of the disk in bytes; 0 means just large enough.
	Size       int64
	Partitions []Partition
}

// Placed is where Build put a partition.
type Placed struct {
	Partition
	FirstLBA, LastLBA uint64 // inclusive, 512-byte sectors
}

// Offset is the partition's first byte on the disk.
func (p Placed) Offset() int64 { return int64(p.FirstLBA) * sectorSize }

// Build writes a protective MBR, the primary and backup GPT and the
// partition contents to w, partitions in order, each starting on a 1 MiB
// boundary (see Start). Bytes between partitions are not written, nor are
// the holes of a content file or its runs of zeros: w should read as zeros
// (a new file does), and a new file stays sparse where the disk is empty.
// If w has a Truncate method (an *os.File), the file is cut or extended to
// the disk size.
func Build(w io.WriterAt, l Layout) ([]Placed, error) {
	if l.DiskGUID.IsZero() {
		return nil, errors.New("disk: the disk GUID must be given")
	}
	if len(l.Partitions) > gptEntries {
		return nil, fmt.Errorf("disk: %d partitions, at most %d", len(l.Partitions), gptEntries)
	}
	var placed []Placed
	lba := uint64(alignSectors)
	seen := map[GUID]bool{l.DiskGUID: true}
	for i, p := range l.Partitions {
		if p.UUID.IsZero() || p.TypeGUID.IsZero() {
			return nil, fmt.Errorf("disk: partition %d (%s): type and UUID must be given", i+1, p.Name)
		}
		if seen[p.UUID] {
			return nil, fmt.Errorf("disk: partition %d (%s): UUID %s used twice", i+1, p.Name, p.UUID)
		}
		seen[p.UUID] = true
		if len(utf16.Encode([]rune(p.Name))) > gptNameLen {
			return nil, fmt.Errorf("disk: partition name %q longer than %d UTF-16 units", p.Name, gptNameLen)
		}
		size, err := p.contentSize()
		if err != nil {
			return nil, err
		}
		if p.Size != 0 && p.Size < size {
			return nil, fmt.Errorf("disk: partition %d (%s): content of %d bytes exceeds size %d", i+1, p.Name, size, p.Size)
		}
		secs := alignedSectors(max(size, p.Size))
		placed = append(placed, Placed{Partition: p, FirstLBA: lba, LastLBA: lba + secs - 1})
		lba += secs
	}
	// lba is now the first free aligned sector; the backup GPT needs 33
	// sectors at the end, and the disk is kept a whole number of MiB.
	minSecs := (lba + gptEntrySecs + 1 + alignSectors - 1) / alignSectors * alignSectors
	total := minSecs
	if l.Size != 0 {
		if l.Size%sectorSize != 0 || uint64(l.Size/sectorSize) < lba+gptEntrySecs+1 {
			return nil, fmt.Errorf("disk: size %d is not a multiple of 512 or smaller than the %d bytes the partitions need", l.Size, (lba+gptEntrySecs+1)*sectorSize)
		}
		total = uint64(l.Size / sectorSize)
	}
	if t, ok := w.(interface{ Truncate(int64) error }); ok {
		if err := t.Truncate(int64(total) * sectorSize); err != nil {
			return nil, fmt.Errorf("disk: %w", err)
		}
	}
	last := total - 1

	// Partition entry array.
	entries := make([]byte, gptEntries*gptEntrySize)
	for i, p := range placed {
		e := entries[i*gptEntrySize:]
		t, u := p.TypeGUID.mixedEndian(), p.UUID.mixedEndian()
		copy(e[0:], t[:])
		copy(e[16:], u[:])
		binary.LittleEndian.PutUint64(e[32:], p.FirstLBA)
		binary.LittleEndian.PutUint64(e[40:], p.LastLBA)
		binary.LittleEndian.PutUint64(e[48:], p.Attributes)
		for j, c := range utf16.Encode([]rune(p.Name)) {
			binary.LittleEndian.PutUint16(e[56+2*j:], c)
		}
	}
	entriesCRC := crc32.ChecksumIEEE(entries)
	header := func(my, alt, entriesLBA uint64) []byte {
		h := make([]byte, sectorSize)
		copy(h, "EFI PART")
		binary.LittleEndian.PutUint32(h[8:], 0x00010000)
		binary.LittleEndian.PutUint32(h[12:], gptHeaderSize)
		binary.LittleEndian.PutUint64(h[24:], my)
		binary.LittleEndian.PutUint64(h[32:], alt)
		binary.LittleEndian.PutUint64(h[40:], firstUsableLBA)
		binary.LittleEndian.PutUint64(h[48:], last-gptEntrySecs-1)
		g := l.DiskGUID.mixedEndian()
		copy(h[56:], g[:])
		binary.LittleEndian.PutUint64(h[72:], entriesLBA)
		binary.LittleEndian.PutUint32(h[80:], gptEntries)
		binary.LittleEndian.PutUint32(h[84:], gptEntrySize)
		binary.LittleEndian.PutUint32(h[88:], entriesCRC)
		binary.LittleEndian.PutUint32(h[16:], crc32.ChecksumIEEE(h[:gptHeaderSize]))
		return h
	}

	// Protective MBR: one 0xEE partition covering the disk (capped at 2^32-1 sectors).
	mbr := make([]byte, sectorSize)
	pe := mbr[446:]
	copy(pe[1:4], []byte{0x00, 0x02, 0x00}) // CHS of LBA 1
	pe[4] = 0xEE
	copy(pe[5:8], []byte{0xFF, 0xFF, 0xFF})
	binary.LittleEndian.PutUint32(pe[8:], 1)
	binary.LittleEndian.PutUint32(pe[12:], uint32(min(last, 0xFFFFFFFF)))
	mbr[510], mbr[511] = 0x55, 0xAA

	writes := []struct {
		b   []byte
		lba uint64
	}{
		{mbr, 0},
		{header(1, last, 2), 1},
		{entries, 2},
		{entries, last - gptEntrySecs},
		{header(last, 1, last-gptEntrySecs), last},
	}
	for _, wr := range writes {
		if _, err := w.WriteAt(wr.b, int64(wr.lba)*sectorSize); err != nil {
			return nil, fmt.Errorf("disk: write GPT: %w", err)
		}
	}
	for _, p := range placed {
		if err := p.copyContent(w); err != nil {
			return nil, err
		}
	}
	return placed, nil
}

// alignedSectors is the room a partition of size bytes takes: whole MiBs,
// at least one.
func alignedSectors(size int64) uint64 {
	return (uint64(max(size, 1)) + alignSectors*sectorSize - 1) / (alignSectors * sectorSize) * alignSectors
}

// Start returns the offset at which Build places a partition that follows
// partitions of the given sizes (Partition.Size, or the content's size
// when larger). It lets a caller write a partition's content into the disk
// file before the partitions after it are known.
func Start(sizes ...int64) int64 {
	lba := uint64(alignSectors)
	for _, s := range sizes {
		lba += alignedSectors(s)
	}
	return int64(lba) * sectorSize
}

func (p Partition) contentSize() (int64, error) {
	switch {
	case p.Content != nil:
		return p.ContentSize, nil
	case p.Path != "":
		fi, err := os.Stat(p.Path)
		if err != nil {
			return 0, fmt.Errorf("disk: partition %s: %w", p.Name, err)
		}
		return fi.Size(), nil
	}
	return 0, nil
}

func (p Placed) copyContent(w io.WriterAt) error {
	src := p.Content
	size := p.ContentSize
	if src == nil && p.Path != "" {
		f, err := os.Open(p.Path)
		if err != nil {
			return fmt.Errorf("disk: partition %s: %w", p.Name, err)
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return fmt.Errorf("disk: partition %s: %w", p.Name, err)
		}
		src, size = f, fi.Size()
	}
	if src == nil || size == 0 {
		return nil
	}
	// An empty file system is mostly zeros (the var partition: 25 MB of
	// 512 MB): skip the holes of a sparse file unread, and write no block
	// of zeros, which w already reads as.
	file, _ := src.(*os.File)
	buf, zero := make([]byte, 1<<20), make([]byte, 1<<20)
	base := p.Offset()
	for off := int64(0); off < size; {
		if file != nil {
			data, err := unix.Seek(int(file.Fd()), off, unix.SEEK_DATA)
			if errors.Is(err, unix.ENXIO) {
				return nil // a hole up to the end of the file
			}
			if err == nil && data > off {
				off = min(data, size)
				continue
			}
			// Other errors (no SEEK_DATA on this file system): read on.
		}
		n := min(int64(len(buf)), size-off)
		m, err := src.ReadAt(buf[:n], off)
		if int64(m) < n {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("disk: read content of partition %s at %d: %w", p.Name, off, err)
		}
		if !bytes.Equal(buf[:n], zero[:n]) {
			if _, err := w.WriteAt(buf[:n], base+off); err != nil {
				return fmt.Errorf("disk: write partition %s: %w", p.Name, err)
			}
		}
		off += n
	}
	return nil
}
