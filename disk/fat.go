package disk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"unicode/utf16"
)

// File is a file to put on a FAT volume. Path uses \ or / as separators
// (`\EFI\BOOT\BOOTX64.EFI`); directories are created as needed.
type File struct {
	Path string
	Data []byte
}

// FATOptions describe a FAT32 volume.
type FATOptions struct {
	// Size of the volume in bytes, a multiple of 512; 0 picks the smallest
	// whole number of MiB, at least 40 MiB (FAT32 needs 65525 clusters).
	Size int64
	// Label is the volume label (at most 11 bytes, stored upper case); empty means "NO NAME".
	Label string
	// VolumeID is the serial number; mkfs.fat derives it from the clock,
	// here the caller chooses it.
	VolumeID uint32
	// HiddenSectors is the volume's start on the disk in sectors (informational).
	HiddenSectors uint32
}

const (
	sectorSize   = 512
	fatReserved  = 32 // reserved sectors, as mkfs.fat
	fatCount     = 2
	minFAT32Clus = 65525 // fewer clusters make the volume FAT16 by definition
	eoc          = 0x0FFFFFFF
	attrReadOnly = 0x01
	attrVolumeID = 0x08
	attrDir      = 0x10
	attrArchive  = 0x20
	attrLFN      = 0x0F
	// fatDate is 1980-01-01, the FAT epoch: day 1, month 1, year 0.
	fatDate = 1<<5 | 1
)

type fatNode struct {
	name     string
	dir      bool
	data     []byte
	children []*fatNode
	cluster  uint32
	nclus    uint32
	entries  []byte // directory content, for dirs
}

func (n *fatNode) child(name string) *fatNode {
	for _, c := range n.children {
		if strings.EqualFold(c.name, name) {
			return c
		}
	}
	return nil
}

func splitPath(p string) []string {
	var out []string
	for _, c := range strings.FieldsFunc(p, func(r rune) bool { return r == '\\' || r == '/' }) {
		out = append(out, c)
	}
	return out
}

func buildTree(files []File) (*fatNode, error) {
	root := &fatNode{dir: true}
	for _, f := range files {
		parts := splitPath(f.Path)
		if len(parts) == 0 {
			return nil, fmt.Errorf("disk: empty FAT path %q", f.Path)
		}
		n := root
		for i, p := range parts {
			if p == "." || p == ".." || len(utf16.Encode([]rune(p))) > 255 || strings.ContainsAny(p, "\"*:<>?|\x00") {
				return nil, fmt.Errorf("disk: invalid FAT name %q in %q", p, f.Path)
			}
			c := n.child(p)
			last := i == len(parts)-1
			switch {
			case c == nil:
				c = &fatNode{name: p, dir: !last}
				if last {
					c.data = f.Data
				}
				n.children = append(n.children, c)
			case last || !c.dir:
				return nil, fmt.Errorf("disk: %q given twice or both file and directory", f.Path)
			}
			n = c
		}
	}
	var sortTree func(n *fatNode)
	sortTree = func(n *fatNode) {
		slices.SortFunc(n.children, func(a, b *fatNode) int { return strings.Compare(a.name, b.name) })
		for _, c := range n.children {
			sortTree(c)
		}
	}
	sortTree(root)
	return root, nil
}

// shortName returns the 11-byte 8.3 name of name when name is already a
// valid upper-case 8.3 name, else ok=false.
func shortName(name string) (sn [11]byte, ok bool) {
	base, ext, _ := strings.Cut(name, ".")
	if len(base) == 0 || len(base) > 8 || len(ext) > 3 || strings.Contains(ext, ".") {
		return sn, false
	}
	for _, r := range base + ext {
		if !short83Char(r) {
			return sn, false
		}
	}
	copy(sn[:], fmt.Sprintf("%-8s%-3s", base, ext))
	return sn, true
}

func short83Char(r rune) bool {
	return r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("$%'-_@~`!(){}^#&", r)
}

// aliasName makes the NAME~N.EXT short alias of a long name.
func aliasName(name string, n int, taken map[[11]byte]bool) [11]byte {
	clean := func(s string) string {
		var b strings.Builder
		for _, r := range strings.ToUpper(s) {
			switch {
			case r == ' ' || r == '.':
			case short83Char(r):
				b.WriteRune(r)
			default:
				b.WriteRune('_')
			}
		}
		return b.String()
	}
	base, ext := name, ""
	if i := strings.LastIndex(name, "."); i > 0 {
		base, ext = name[:i], name[i+1:]
	}
	b, e := clean(base), clean(ext)
	if len(e) > 3 {
		e = e[:3]
	}
	for ; ; n++ {
		tail := fmt.Sprintf("~%d", n)
		bb := b
		if len(bb)+len(tail) > 8 {
			bb = bb[:8-len(tail)]
		}
		var sn [11]byte
		copy(sn[:], fmt.Sprintf("%-8s%-3s", bb+tail, e))
		if !taken[sn] {
			return sn
		}
	}
}

func lfnChecksum(sn [11]byte) byte {
	var sum byte
	for _, c := range sn {
		sum = (sum&1)<<7 + sum>>1 + c
	}
	return sum
}

// dirEntry encodes a short directory entry.
func dirEntry(sn [11]byte, attr byte, cluster uint32, size uint32) []byte {
	e := make([]byte, 32)
	copy(e, sn[:])
	e[11] = attr
	binary.LittleEndian.PutUint16(e[16:], fatDate) // creation date
	binary.LittleEndian.PutUint16(e[18:], fatDate) // last access date
	binary.LittleEndian.PutUint16(e[20:], uint16(cluster>>16))
	binary.LittleEndian.PutUint16(e[24:], fatDate) // write date
	binary.LittleEndian.PutUint16(e[26:], uint16(cluster))
	binary.LittleEndian.PutUint32(e[28:], size)
	return e
}

// lfnEntries encodes the long-name entries that precede a short entry, last part first.
func lfnEntries(name string, sn [11]byte) []byte {
	u := utf16.Encode([]rune(name))
	if len(u)%13 != 0 {
		u = append(u, 0)
		for len(u)%13 != 0 {
			u = append(u, 0xFFFF)
		}
	}
	n := len(u) / 13
	sum := lfnChecksum(sn)
	var out []byte
	for i := n; i >= 1; i-- {
		e := make([]byte, 32)
		e[0] = byte(i)
		if i == n {
			e[0] |= 0x40
		}
		part := u[(i-1)*13 : i*13]
		for j, c := range part {
			var off int
			switch {
			case j < 5:
				off = 1 + 2*j
			case j < 11:
				off = 14 + 2*(j-5)
			default:
				off = 28 + 2*(j-11)
			}
			binary.LittleEndian.PutUint16(e[off:], c)
		}
		e[11] = attrLFN
		e[13] = sum
		out = append(out, e...)
	}
	return out
}

type fatLayout struct {
	totalSectors, fatSectors, spc uint32
	clusters                      uint32 // data clusters
	dataStart                     uint32 // first data sector
}

func sectorsPerCluster(size int64) uint32 {
	switch {
	case size <= 260<<20:
		return 1
	case size <= 8<<30:
		return 8
	case size <= 16<<30:
		return 16
	case size <= 32<<30:
		return 32
	}
	return 64
}

func computeLayout(size int64) (fatLayout, error) {
	if size%sectorSize != 0 || size <= 0 || size/sectorSize > 0xFFFFFFFF {
		return fatLayout{}, fmt.Errorf("disk: FAT32 size %d is not a positive multiple of %d below 2 TiB", size, sectorSize)
	}
	l := fatLayout{totalSectors: uint32(size / sectorSize), spc: sectorsPerCluster(size)}
	if l.totalSectors < fatReserved+2 {
		return l, fmt.Errorf("disk: FAT32 size %d too small", size)
	}
	avail := uint64(l.totalSectors - fatReserved)
	fs := (4*avail + uint64(sectorSize*l.spc+8) - 1) / uint64(sectorSize*l.spc+8)
	for {
		if 2*fs >= avail {
			return l, fmt.Errorf("disk: FAT32 size %d too small", size)
		}
		cl := (avail - 2*fs) / uint64(l.spc)
		if fs*sectorSize/4 >= cl+2 {
			l.fatSectors, l.clusters = uint32(fs), uint32(cl)
			break
		}
		fs++
	}
	if l.clusters < minFAT32Clus {
		return l, fmt.Errorf("disk: a %d-byte volume has %d clusters; FAT32 needs at least %d (about 33 MiB)", size, l.clusters, minFAT32Clus)
	}
	l.dataStart = fatReserved + fatCount*l.fatSectors
	return l, nil
}

// WriteFAT32 formats a FAT32 volume holding files at offset 0 of w. Data
// clusters not used by files or directories are not written: w must read
// as zeros there (a new file, a fresh buffer) for fsck to find no garbage,
// though FAT does not require it.
func WriteFAT32(w io.WriterAt, o FATOptions, files []File) error {
	root, err := buildTree(files)
	if err != nil {
		return err
	}
	size := o.Size
	if size == 0 {
		size = fatAutoSize(root)
	}
	l, err := computeLayout(size)
	if err != nil {
		return err
	}
	label := strings.ToUpper(o.Label)
	if label == "" {
		label = "NO NAME"
	}
	if len(label) > 11 {
		return fmt.Errorf("disk: FAT label %q longer than 11 bytes", o.Label)
	}
	var lab [11]byte
	copy(lab[:], fmt.Sprintf("%-11s", label))
	clusterBytes := l.spc * sectorSize

	// Directory contents depend on child clusters, which depend on the
	// directory sizes; sizes depend only on names, so size first.
	var sizeDirs func(n *fatNode, isRoot bool) error
	sizeDirs = func(n *fatNode, isRoot bool) error {
		entries := 2 // . and ..
		if isRoot {
			entries = 0
			if o.Label != "" {
				entries = 1
			}
		}
		for _, c := range n.children {
			entries++
			if _, ok := shortName(c.name); !ok {
				entries += (len(utf16.Encode([]rune(c.name))) + 12) / 13
			}
			if c.dir {
				if err := sizeDirs(c, false); err != nil {
					return err
				}
			}
		}
		n.nclus = max(1, uint32((uint64(entries)*32+uint64(clusterBytes)-1)/uint64(clusterBytes)))
		return nil
	}
	if err := sizeDirs(root, true); err != nil {
		return err
	}
	next := uint32(2)
	var order []*fatNode // in cluster order
	var alloc func(n *fatNode) error
	alloc = func(n *fatNode) error {
		if !n.dir {
			n.nclus = uint32((uint64(len(n.data)) + uint64(clusterBytes) - 1) / uint64(clusterBytes))
		}
		if n.nclus > 0 {
			if uint64(next)+uint64(n.nclus) > uint64(l.clusters)+2 {
				return errors.New("disk: files do not fit in the FAT volume")
			}
			n.cluster = next
			next += n.nclus
			order = append(order, n)
		}
		for _, c := range n.children {
			if err := alloc(c); err != nil {
				return err
			}
		}
		return nil
	}
	if err := alloc(root); err != nil {
		return err
	}

	var fillDir func(n, parent *fatNode, isRoot bool)
	fillDir = func(n, parent *fatNode, isRoot bool) {
		var b []byte
		if isRoot {
			if o.Label != "" {
				b = append(b, dirEntry(lab, attrVolumeID, 0, 0)...)
			}
		} else {
			dot := [11]byte{'.', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '}
			b = append(b, dirEntry(dot, attrDir, n.cluster, 0)...)
			dot[1] = '.'
			pc := parent.cluster
			if parent == root {
				pc = 0 // ".." of a top-level directory points at cluster 0
			}
			b = append(b, dirEntry(dot, attrDir, pc, 0)...)
		}
		taken := map[[11]byte]bool{}
		for _, c := range n.children {
			if sn, ok := shortName(c.name); ok {
				taken[sn] = true
			}
		}
		for _, c := range n.children {
			sn, ok := shortName(c.name)
			if !ok {
				sn = aliasName(c.name, 1, taken)
				taken[sn] = true
				b = append(b, lfnEntries(c.name, sn)...)
			}
			if c.dir {
				b = append(b, dirEntry(sn, attrDir, c.cluster, 0)...)
				fillDir(c, n, false)
			} else {
				cl := c.cluster
				b = append(b, dirEntry(sn, attrArchive, cl, uint32(len(c.data)))...)
			}
		}
		n.entries = b
	}
	fillDir(root, nil, true)

	// FAT.
	fat := make([]byte, l.fatSectors*sectorSize)
	binary.LittleEndian.PutUint32(fat[0:], 0x0FFFFF00|0xF8)
	binary.LittleEndian.PutUint32(fat[4:], eoc)
	for _, n := range order {
		for i := uint32(0); i < n.nclus; i++ {
			v := n.cluster + i + 1
			if i == n.nclus-1 {
				v = eoc
			}
			binary.LittleEndian.PutUint32(fat[4*(n.cluster+i):], v)
		}
	}

	// Boot sector, FSInfo and their backups.
	bs := make([]byte, sectorSize)
	copy(bs, []byte{0xEB, 0x58, 0x90})
	copy(bs[3:], "OSGUARD ")
	binary.LittleEndian.PutUint16(bs[11:], sectorSize)
	bs[13] = byte(l.spc)
	binary.LittleEndian.PutUint16(bs[14:], fatReserved)
	bs[16] = fatCount
	bs[21] = 0xF8                              // fixed disk
	binary.LittleEndian.PutUint16(bs[24:], 32) // sectors per track (geometry is unused)
	binary.LittleEndian.PutUint16(bs[26:], 64) // heads
	binary.LittleEndian.PutUint32(bs[28:], o.HiddenSectors)
	binary.LittleEndian.PutUint32(bs[32:], l.totalSectors)
	binary.LittleEndian.PutUint32(bs[36:], l.fatSectors)
	binary.LittleEndian.PutUint32(bs[44:], 2) // root directory cluster
	binary.LittleEndian.PutUint16(bs[48:], 1) // FSInfo sector
	binary.LittleEndian.PutUint16(bs[50:], 6) // backup boot sector
	bs[64] = 0x80
	bs[66] = 0x29
	binary.LittleEndian.PutUint32(bs[67:], o.VolumeID)
	copy(bs[71:82], lab[:])
	copy(bs[82:90], "FAT32   ")
	bs[510], bs[511] = 0x55, 0xAA

	fsi := make([]byte, sectorSize)
	binary.LittleEndian.PutUint32(fsi[0:], 0x41615252)
	binary.LittleEndian.PutUint32(fsi[484:], 0x61417272)
	binary.LittleEndian.PutUint32(fsi[488:], l.clusters-(next-2)) // free clusters
	binary.LittleEndian.PutUint32(fsi[492:], next)                // next free hint
	binary.LittleEndian.PutUint32(fsi[508:], 0xAA550000)

	reserved := make([]byte, fatReserved*sectorSize)
	copy(reserved[0:], bs)
	copy(reserved[sectorSize:], fsi)
	copy(reserved[6*sectorSize:], bs)
	copy(reserved[7*sectorSize:], fsi)
	if _, err := w.WriteAt(reserved, 0); err != nil {
		return fmt.Errorf("disk: write FAT32 boot sectors: %w", err)
	}
	for i := int64(0); i < fatCount; i++ {
		if _, err := w.WriteAt(fat, int64(fatReserved+uint32(i)*l.fatSectors)*sectorSize); err != nil {
			return fmt.Errorf("disk: write FAT: %w", err)
		}
	}
	for _, n := range order {
		off := (int64(l.dataStart) + int64(n.cluster-2)*int64(l.spc)) * sectorSize
		buf := n.data
		if n.dir {
			buf = make([]byte, int(n.nclus)*int(clusterBytes))
			copy(buf, n.entries)
		}
		if _, err := w.WriteAt(buf, off); err != nil {
			return fmt.Errorf("disk: write FAT data: %w", err)
		}
	}
	// The volume's last byte, so that a file-backed w has its full size.
	if _, err := w.WriteAt([]byte{0}, size-1); err != nil {
		return fmt.Errorf("disk: write FAT32 end: %w", err)
	}
	return nil
}

// fatAutoSize is the size WriteFAT32 picks when none is given: room for
// the files and directories plus 1 MiB, at least 40 MiB, whole MiB.
func fatAutoSize(root *fatNode) int64 {
	var total int64
	var walk func(n *fatNode)
	walk = func(n *fatNode) {
		total += int64(len(n.data)) + 4096
		for _, c := range n.children {
			walk(c)
		}
	}
	walk(root)
	size := total + total/32 + 1<<20 // FATs take 4 bytes per 512-byte cluster
	size = max(size, 40<<20)
	return (size + 1<<20 - 1) &^ (1<<20 - 1)
}

// ESP returns a FAT32 image holding files, labelled "ESP" unless o says
// otherwise; for example files = {`\EFI\BOOT\BOOTX64.EFI`, uki}.
func ESP(o FATOptions, files ...File) ([]byte, error) {
	if o.Label == "" {
		o.Label = "ESP"
	}
	root, err := buildTree(files)
	if err != nil {
		return nil, err
	}
	if o.Size == 0 {
		o.Size = fatAutoSize(root)
	}
	buf := &memWriter{b: make([]byte, o.Size)}
	if err := WriteFAT32(buf, o, files); err != nil {
		return nil, err
	}
	return buf.b, nil
}

type memWriter struct{ b []byte }

func (m *memWriter) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m.b)) {
		return 0, errors.New("disk: write beyond the image")
	}
	return copy(m.b[off:], p), nil
}
