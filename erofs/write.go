package erofs

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"io/fs"
	"math"
	"os"
	"path"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// On-disk constants from fs/erofs/erofs_fs.h.
const (
	blockBits   = 12
	blockSize   = 1 << blockBits
	superOffset = 1024 // EROFS_SUPER_OFFSET
	superMagic  = 0xE0F5E1E2

	featureCompatSbChksum = 0x1 // EROFS_FEATURE_COMPAT_SB_CHKSUM
	featureCompatMtime    = 0x2 // EROFS_FEATURE_COMPAT_MTIME

	layoutFlatPlain  = 0 // EROFS_INODE_FLAT_PLAIN
	layoutFlatInline = 2 // EROFS_INODE_FLAT_INLINE

	compactSize  = 32 // sizeof(struct erofs_inode_compact)
	extendedSize = 64 // sizeof(struct erofs_inode_extended)
	slotSize     = 32 // inodes are addressed in 32-byte slots (nid)
	direntSize   = 12 // sizeof(struct erofs_dirent)
	xattrHdrSize = 12 // sizeof(struct erofs_xattr_ibody_header)

	metaBlkAddr = 1
	nullAddr    = 0xffffffff // EROFS_NULL_ADDR: no data blocks
)

// erofs_dirent file types (EROFS_FT_*).
var fileTypes = map[uint32]uint8{
	S_IFREG: 1, S_IFDIR: 2, S_IFCHR: 3, S_IFBLK: 4, S_IFIFO: 5, S_IFSOCK: 6, S_IFLNK: 7,
}

// xattr name indexes (EROFS_XATTR_INDEX_*); an empty suffix means the
// whole name is the prefix (POSIX ACLs).
var xattrPrefixes = []struct {
	prefix string
	index  uint8
}{
	{"user.", 1},
	{"system.posix_acl_access", 2},
	{"system.posix_acl_default", 3},
	{"trusted.", 4},
	{"security.", 6},
}

func xattrIndex(name string) (uint8, string, error) {
	for _, p := range xattrPrefixes {
		if strings.HasPrefix(name, p.prefix) {
			suffix := name[len(p.prefix):]
			if !strings.HasSuffix(p.prefix, ".") && suffix != "" {
				continue
			}
			if strings.HasSuffix(p.prefix, ".") && suffix == "" {
				return 0, "", fmt.Errorf("erofs: xattr %q has no name", name)
			}
			if len(suffix) > 255 {
				return 0, "", fmt.Errorf("erofs: xattr name %q too long", name)
			}
			return p.index, suffix, nil
		}
	}
	return 0, "", fmt.Errorf("erofs: xattr %q: namespace not supported by EROFS", name)
}

// Labeler returns the security.selinux value for an absolute path of the
// given type, as *selinux.Contexts does; ok is false for "leave as is".
type Labeler interface {
	Lookup(path string, mode fs.FileMode) (label string, ok bool)
}

// Options control how a Tree becomes an image. The zero value is usable.
type Options struct {
	BuildTime  int64    // superblock build time (unix seconds); also the mtime of compact inodes
	UUID       [16]byte // superblock volume UUID
	Label      string   // volume name, at most 16 bytes
	AllRoot    bool     // make every file owned by uid 0, gid 0
	ClampMtime bool     // clamp mtimes newer than BuildTime to BuildTime
	// Labeler, when set, gives security.selinux for each path; a found
	// label replaces any label from the source, "not found" keeps it.
	Labeler Labeler
	// MountPoint is where the image will be mounted ("/" when empty);
	// labels are looked up for MountPoint joined with the image path.
	MountPoint string
	// FileDigest, when set, is called for every path of a regular file
	// (image path, starting with "/") with its size and SHA-256, while the
	// data is written.
	FileDigest func(path string, size int64, sum [sha256.Size]byte)
	// At is where the image starts in w. Writing into a partition of a
	// disk file this way rather than through an io.OffsetWriter keeps w an
	// *os.File, into which the data of file sources is copied in the
	// kernel.
	At int64
	// UUIDFrom, when set, gives the UUID in place of the UUID field. It is
	// called once every file's data is written, just before the
	// superblock, so that a UUID derived from the contents (which the
	// caller may be hashing meanwhile) costs no second pass over the image.
	UUIDFrom func() ([16]byte, error)
	// TempDir is where BuildFromTar spools compressed or streamed input
	// (os.TempDir() when empty).
	TempDir string
}

// inode layout state, one per distinct Inode.
type wnode struct {
	ino       *Inode
	path      string // first path (image-absolute)
	paths     []string
	dir       *node
	parent    *wnode
	nlink     uint32
	mode      uint32
	uid, gid  uint32
	mtime     int64
	nsec      uint32
	xattrs    []byte // encoded ibody, empty if none
	size      uint64
	extended  bool
	inline    bool   // tail after the inode
	nid       uint64 // (position - meta start) / 32
	metaBlock uint64 // metadata block (from meta start) holding the inode
	metaSpan  bool   // inode and xattrs span whole blocks of their own
	blkaddr   uint32 // first data block
	nblocks   uint64 // data blocks outside the metadata area
	dirents   []dirent
}

type dirent struct {
	name string
	n    *wnode
}

// WriteImage writes t as an EROFS image to w, starting at offset 0, and
// returns the image size. (It is not WriteTo: an image needs random
// access, so it takes an io.WriterAt.)
func (t *Tree) WriteImage(w io.WriterAt, opts Options) (int64, error) {
	if len(opts.Label) > 16 {
		return 0, fmt.Errorf("erofs: volume label %q longer than 16 bytes", opts.Label)
	}
	mount := opts.MountPoint
	if mount == "" {
		mount = "/"
	}
	if !path.IsAbs(mount) {
		return 0, fmt.Errorf("erofs: mount point %q is not absolute", mount)
	}
	order, err := t.order()
	if err != nil {
		return 0, err
	}
	for _, wn := range order {
		if err := wn.prepare(&opts, mount); err != nil {
			return 0, err
		}
	}
	metaBlocks, pending := placeInodes(order)
	if order[0].nid > math.MaxUint16 {
		return 0, errors.New("erofs: root inode out of reach") // cannot happen: root is first
	}
	next := uint64(metaBlkAddr) + metaBlocks
	for _, wn := range order {
		if !wn.hasData() {
			continue
		}
		wn.nblocks = wn.size / blockSize
		if !wn.inline && wn.size%blockSize != 0 {
			wn.nblocks++
		}
		if wn.nblocks > 0 {
			wn.blkaddr = uint32(next)
		} else {
			wn.blkaddr = nullAddr
		}
		next += wn.nblocks
		if next >= nullAddr {
			return 0, errors.New("erofs: image larger than 2^32 blocks")
		}
	}
	totalBlocks := next
	for _, wn := range order {
		if wn.ino.IsDir() {
			wn.buildDirents()
		}
	}

	wr := &imageWriter{w: w, buf: make([]byte, 1<<20), opts: &opts,
		pending: pending, blocks: map[uint64][]byte{}}
	wr.file, _ = w.(*os.File)
	if opts.At != 0 {
		wr.w = io.NewOffsetWriter(w, opts.At)
	}
	for _, wn := range order {
		if err := wr.writeNode(wn); err != nil {
			return 0, err
		}
	}
	if len(wr.blocks) != 0 {
		return 0, errors.New("erofs: internal error: metadata blocks left unwritten")
	}
	if opts.UUIDFrom != nil {
		if opts.UUID, err = opts.UUIDFrom(); err != nil {
			return 0, fmt.Errorf("erofs: UUID: %w", err)
		}
	}
	sb := superblock(&opts, order[0].nid, uint64(len(order)), uint32(totalBlocks))
	if _, err := wr.w.WriteAt(sb, 0); err != nil {
		return 0, fmt.Errorf("erofs: write superblock: %w", err)
	}
	return int64(totalBlocks) * blockSize, nil
}

func alignUp(v, a uint64) uint64 { return (v + a - 1) / a * a }

// maxOpenBlocks is how many partly filled metadata blocks placeInodes
// keeps looking into; more packs tighter and costs more time.
const maxOpenBlocks = 64

// placeInodes assigns each inode its nid and decides which tails go
// inline. An inode, its xattrs and its inline tail always share one block
// (inline data must not cross a block boundary); to waste little space
// they go into the first of the last few partly filled blocks with room
// (first fit), so the order of nids is not the order of inodes. It returns
// the number of metadata blocks and, per block, how many inodes it holds.
func placeInodes(order []*wnode) (uint64, map[uint64]int) {
	type open struct{ idx, used uint64 }
	// Slot 0 stays empty: nid 0 would give the root st_ino 0, and
	// readdir(3) skips entries with d_ino 0.
	blocks := []*open{{0, slotSize}}
	next := uint64(1)
	pending := map[uint64]int{}
	for _, wn := range order {
		isz := uint64(compactSize)
		if wn.extended {
			isz = extendedSize
		}
		xsz := uint64(len(wn.xattrs))
		tail := wn.size % blockSize
		wn.inline = tail > 0 && isz+xsz+tail <= blockSize && wn.hasData()
		total := isz + xsz
		if wn.inline {
			total += tail
		}
		if total > blockSize {
			// Only huge xattrs get here: blocks of its own.
			wn.nid = next * blockSize / slotSize
			wn.metaBlock, wn.metaSpan = next, true
			next += alignUp(total, blockSize) / blockSize
			continue
		}
		var b *open
		for _, c := range blocks {
			if blockSize-c.used >= total {
				b = c
				break
			}
		}
		if b == nil {
			b = &open{idx: next}
			next++
			blocks = append(blocks, b)
			if len(blocks) > maxOpenBlocks {
				blocks = blocks[1:]
			}
		}
		wn.nid = (b.idx*blockSize + b.used) / slotSize
		wn.metaBlock = b.idx
		pending[b.idx]++
		b.used += alignUp(total, slotSize)
		if b.used == blockSize {
			for i, c := range blocks {
				if c == b {
					blocks = append(blocks[:i], blocks[i+1:]...)
					break
				}
			}
		}
	}
	return next, pending
}

func (wn *wnode) hasData() bool {
	switch wn.mode & S_IFMT {
	case S_IFREG, S_IFLNK, S_IFDIR:
		return wn.size > 0
	}
	return false
}

// order lists the inodes breadth-first, children by name; the root comes
// first and a hard-linked inode where it is first met.
func (t *Tree) order() ([]*wnode, error) {
	seen := map[*Inode]*wnode{}
	root := &wnode{ino: t.root.ino, path: "/", paths: []string{"/"}, dir: t.root}
	root.parent = root
	seen[t.root.ino] = root
	order := []*wnode{root}
	for i := 0; i < len(order); i++ {
		d := order[i]
		if d.dir == nil {
			continue
		}
		for _, name := range sortedNames(d.dir) {
			c := d.dir.children[name]
			p := path.Join(d.path, name)
			wn := seen[c.ino]
			if wn == nil {
				wn = &wnode{ino: c.ino, path: p}
				if c.ino.IsDir() {
					wn.dir = c
					wn.parent = d
				}
				seen[c.ino] = wn
				order = append(order, wn)
			} else if c.ino.IsDir() {
				return nil, fmt.Errorf("erofs: directory %q linked twice", p)
			}
			wn.paths = append(wn.paths, p)
			d.dirents = append(d.dirents, dirent{name, wn})
		}
	}
	return order, nil
}

// prepare settles the metadata of wn as it will be written.
func (wn *wnode) prepare(opts *Options, mount string) error {
	ino := wn.ino
	wn.mode, wn.uid, wn.gid = ino.Mode, ino.UID, ino.GID
	wn.mtime, wn.nsec = ino.Mtime, ino.MtimeNsec
	if ino.implicit {
		wn.mtime, wn.nsec = opts.BuildTime, 0
	}
	if opts.AllRoot {
		wn.uid, wn.gid = 0, 0
	}
	if opts.ClampMtime && (wn.mtime > opts.BuildTime || wn.mtime == opts.BuildTime && wn.nsec > 0) {
		wn.mtime, wn.nsec = opts.BuildTime, 0
	}
	switch ino.Mode & S_IFMT {
	case S_IFDIR:
		wn.nlink = 2
		for _, d := range wn.dirents {
			if d.n.ino.IsDir() {
				wn.nlink++
			}
		}
		wn.size = dirSize(wn.dirents)
	case S_IFREG:
		wn.nlink = uint32(len(wn.paths))
		wn.size = uint64(ino.Size)
	case S_IFLNK:
		wn.nlink = uint32(len(wn.paths))
		wn.size = uint64(len(ino.Target))
	default:
		wn.nlink = uint32(len(wn.paths))
	}
	xattrs := ino.Xattrs
	if opts.Labeler != nil {
		if label, ok := opts.Labeler.Lookup(path.Join(mount, wn.path), ino.FileMode()); ok {
			xattrs = make(map[string][]byte, len(ino.Xattrs)+1)
			for k, v := range ino.Xattrs {
				xattrs[k] = v
			}
			// libselinux's setfilecon stores the terminating NUL too.
			xattrs["security.selinux"] = append([]byte(label), 0)
		}
	}
	var err error
	if wn.xattrs, err = encodeXattrs(xattrs); err != nil {
		return fmt.Errorf("%w (%s)", err, wn.path)
	}
	wn.extended = wn.uid > math.MaxUint16 || wn.gid > math.MaxUint16 || wn.nlink > math.MaxUint16 ||
		wn.size > math.MaxUint32 || wn.mtime != opts.BuildTime || wn.nsec != 0
	return nil
}

// dirSize returns the size of a directory with these entries plus "." and
// "..": full blocks, then the used part of the last one.
func dirSize(ents []dirent) uint64 {
	names := make([]string, 0, len(ents)+2)
	names = append(names, ".", "..")
	for _, e := range ents {
		names = append(names, e.name)
	}
	sort.Strings(names)
	var size, used uint64
	for _, n := range names {
		need := uint64(direntSize + len(n))
		if used+need > blockSize {
			size += blockSize
			used = 0
		}
		used += need
	}
	return size + used
}

func (wn *wnode) buildDirents() {
	wn.dirents = append(wn.dirents, dirent{".", wn}, dirent{"..", wn.parent})
	sort.Slice(wn.dirents, func(i, j int) bool { return wn.dirents[i].name < wn.dirents[j].name })
}

// dirData renders the directory blocks (the last one only as far as used).
func (wn *wnode) dirData() []byte {
	out := make([]byte, 0, wn.size)
	ents := wn.dirents
	for len(ents) > 0 {
		n, used := 0, 0
		for n < len(ents) && used+direntSize+len(ents[n].name) <= blockSize {
			used += direntSize + len(ents[n].name)
			n++
		}
		blk := make([]byte, used, blockSize)
		nameOff := n * direntSize
		for i, e := range ents[:n] {
			d := blk[i*direntSize:]
			binary.LittleEndian.PutUint64(d[0:], e.n.nid)
			binary.LittleEndian.PutUint16(d[8:], uint16(nameOff))
			d[10] = fileTypes[e.n.mode&S_IFMT]
			copy(blk[nameOff:], e.name)
			nameOff += len(e.name)
		}
		ents = ents[n:]
		if len(ents) > 0 {
			blk = blk[:blockSize]
		}
		out = append(out, blk...)
	}
	return out
}

func encodeXattrs(m map[string][]byte) ([]byte, error) {
	if len(m) == 0 {
		return nil, nil
	}
	type ent struct {
		index  uint8
		suffix string
		value  []byte
	}
	ents := make([]ent, 0, len(m))
	for name, v := range m {
		idx, suffix, err := xattrIndex(name)
		if err != nil {
			return nil, err
		}
		if len(v) > math.MaxUint16 {
			return nil, fmt.Errorf("erofs: xattr %s: value too long", name)
		}
		ents = append(ents, ent{idx, suffix, v})
	}
	sort.Slice(ents, func(i, j int) bool {
		if ents[i].index != ents[j].index {
			return ents[i].index < ents[j].index
		}
		return ents[i].suffix < ents[j].suffix
	})
	out := make([]byte, xattrHdrSize) // h_name_filter 0, no shared xattrs
	for _, e := range ents {
		var h [4]byte
		h[0] = uint8(len(e.suffix))
		h[1] = e.index
		binary.LittleEndian.PutUint16(h[2:], uint16(len(e.value)))
		out = append(out, h[:]...)
		out = append(out, e.suffix...)
		out = append(out, e.value...)
		for len(out)%4 != 0 {
			out = append(out, 0)
		}
	}
	if (len(out)-xattrHdrSize)/4+1 > math.MaxUint16 {
		return nil, errors.New("erofs: xattrs too large for one inode")
	}
	return out, nil
}

func (wn *wnode) inodeBytes() []byte {
	layout := uint16(layoutFlatPlain)
	if wn.inline {
		layout = layoutFlatInline
	}
	var icount uint16
	if len(wn.xattrs) > 0 {
		icount = uint16((len(wn.xattrs)-xattrHdrSize)/4 + 1)
	}
	var iu uint32
	switch wn.mode & S_IFMT {
	case S_IFCHR, S_IFBLK:
		iu = encodeDev(wn.ino.Rdev)
	case S_IFREG, S_IFDIR, S_IFLNK:
		if wn.size > 0 {
			iu = wn.blkaddr
		}
	}
	// i_ino only serves 32-bit stat; the kernel derives st_ino from the nid.
	ino := uint32(wn.nid) + 1
	if !wn.extended {
		b := make([]byte, compactSize)
		binary.LittleEndian.PutUint16(b[0:], layout<<1)
		binary.LittleEndian.PutUint16(b[2:], icount)
		binary.LittleEndian.PutUint16(b[4:], uint16(wn.mode))
		binary.LittleEndian.PutUint16(b[6:], uint16(wn.nlink))
		binary.LittleEndian.PutUint32(b[8:], uint32(wn.size))
		binary.LittleEndian.PutUint32(b[16:], iu)
		binary.LittleEndian.PutUint32(b[20:], ino)
		binary.LittleEndian.PutUint16(b[24:], uint16(wn.uid))
		binary.LittleEndian.PutUint16(b[26:], uint16(wn.gid))
		return b
	}
	b := make([]byte, extendedSize)
	binary.LittleEndian.PutUint16(b[0:], layout<<1|1)
	binary.LittleEndian.PutUint16(b[2:], icount)
	binary.LittleEndian.PutUint16(b[4:], uint16(wn.mode))
	binary.LittleEndian.PutUint64(b[8:], wn.size)
	binary.LittleEndian.PutUint32(b[16:], iu)
	binary.LittleEndian.PutUint32(b[20:], ino)
	binary.LittleEndian.PutUint32(b[24:], wn.uid)
	binary.LittleEndian.PutUint32(b[28:], wn.gid)
	binary.LittleEndian.PutUint64(b[32:], uint64(wn.mtime))
	binary.LittleEndian.PutUint32(b[40:], wn.nsec)
	binary.LittleEndian.PutUint32(b[44:], wn.nlink)
	return b
}

// encodeDev is the kernel's new_encode_dev, which EROFS stores in i_rdev.
func encodeDev(rdev uint64) uint32 {
	major, minor := unix.Major(rdev), unix.Minor(rdev)
	return minor&0xff | major<<8 | (minor&^0xff)<<12
}

func superblock(opts *Options, rootNid, inos uint64, blocks uint32) []byte {
	blk := make([]byte, blockSize)
	sb := blk[superOffset:]
	binary.LittleEndian.PutUint32(sb[0:], superMagic)
	binary.LittleEndian.PutUint32(sb[8:], featureCompatSbChksum|featureCompatMtime)
	sb[12] = blockBits
	binary.LittleEndian.PutUint16(sb[14:], uint16(rootNid))
	binary.LittleEndian.PutUint64(sb[16:], inos)
	binary.LittleEndian.PutUint64(sb[24:], uint64(opts.BuildTime))
	binary.LittleEndian.PutUint32(sb[36:], blocks)
	binary.LittleEndian.PutUint32(sb[40:], metaBlkAddr)
	copy(sb[48:64], opts.UUID[:])
	copy(sb[64:80], opts.Label)
	// The kernel checks crc32c(~0, sb, blocksize - 1024) without the final
	// inversion that hash/crc32 applies.
	crc := ^crc32.Checksum(sb, crc32.MakeTable(crc32.Castagnoli))
	binary.LittleEndian.PutUint32(sb[4:], crc)
	return blk
}

type imageWriter struct {
	w       io.WriterAt // at the image's start
	file    *os.File    // the output, if a file (the image is at opts.At)
	buf     []byte
	opts    *Options
	zero    [blockSize]byte
	pending map[uint64]int    // inodes still to come, per metadata block
	blocks  map[uint64][]byte // metadata blocks being filled
}

// putMeta stores the inode, xattrs and inline tail of wn in its metadata
// block, and writes the block out once its last inode is in.
func (wr *imageWriter) putMeta(wn *wnode, chunk []byte) error {
	if wn.metaSpan {
		b := make([]byte, alignUp(uint64(len(chunk)), blockSize))
		copy(b, chunk)
		if _, err := wr.w.WriteAt(b, int64(metaBlkAddr+wn.metaBlock)*blockSize); err != nil {
			return fmt.Errorf("erofs: write: %w", err)
		}
		return nil
	}
	blk := wr.blocks[wn.metaBlock]
	if blk == nil {
		blk = make([]byte, blockSize)
		wr.blocks[wn.metaBlock] = blk
	}
	copy(blk[wn.nid*slotSize-wn.metaBlock*blockSize:], chunk)
	wr.pending[wn.metaBlock]--
	if wr.pending[wn.metaBlock] > 0 {
		return nil
	}
	delete(wr.blocks, wn.metaBlock)
	if _, err := wr.w.WriteAt(blk, int64(metaBlkAddr+wn.metaBlock)*blockSize); err != nil {
		return fmt.Errorf("erofs: write: %w", err)
	}
	return nil
}

func (wr *imageWriter) writeNode(wn *wnode) error {
	chunk := append(wn.inodeBytes(), wn.xattrs...)
	var data io.Reader
	switch wn.mode & S_IFMT {
	case S_IFDIR:
		d := wn.dirData()
		if uint64(len(d)) != wn.size {
			return fmt.Errorf("erofs: internal error: directory %s is %d bytes, planned %d", wn.path, len(d), wn.size)
		}
		data = strings.NewReader(string(d))
	case S_IFLNK:
		data = strings.NewReader(wn.ino.Target)
	case S_IFREG:
		if wn.size == 0 {
			if wr.opts.FileDigest != nil {
				for _, p := range wn.paths {
					wr.opts.FileDigest(p, 0, sha256.Sum256(nil))
				}
			}
			return wr.putMeta(wn, chunk)
		}
		rc, err := wn.ino.Open()
		if err != nil {
			return fmt.Errorf("erofs: %s: %w", wn.path, err)
		}
		defer rc.Close()
		var h hash.Hash
		data = rc
		if wr.opts.FileDigest != nil {
			h = sha256.New()
			data = io.TeeReader(rc, h)
		}
		tail, err := wr.writeData(wn, data)
		if err != nil {
			return err
		}
		// The source must end where its size says.
		if n, _ := io.ReadFull(data, wr.buf[:1]); n != 0 {
			return fmt.Errorf("erofs: %s: file is longer than its size %d (changed while building?)", wn.path, wn.size)
		}
		if h != nil {
			var sum [sha256.Size]byte
			h.Sum(sum[:0])
			for _, p := range wn.paths {
				wr.opts.FileDigest(p, int64(wn.size), sum)
			}
		}
		return wr.putMeta(wn, append(chunk, tail...))
	default:
		return wr.putMeta(wn, chunk)
	}
	tail, err := wr.writeData(wn, data)
	if err != nil {
		return err
	}
	return wr.putMeta(wn, append(chunk, tail...))
}

// writeData copies the whole blocks of wn into the data area and returns
// the tail to go inline, or writes the tail into a padded block of its own.
func (wr *imageWriter) writeData(wn *wnode, r io.Reader) ([]byte, error) {
	if wn.size == 0 {
		return nil, nil
	}
	full := wn.size / blockSize * blockSize
	if !wn.inline {
		full = wn.size
	}
	off := uint64(wn.blkaddr) * blockSize
	done := wr.copyInKernel(r, off, full)
	for done < full {
		n := min(uint64(len(wr.buf)), full-done)
		if _, err := io.ReadFull(r, wr.buf[:n]); err != nil {
			return nil, wr.shortErr(wn, err)
		}
		if _, err := wr.w.WriteAt(wr.buf[:n], int64(off+done)); err != nil {
			return nil, fmt.Errorf("erofs: write: %w", err)
		}
		done += n
	}
	if !wn.inline {
		if pad := alignUp(full, blockSize) - full; pad > 0 {
			if _, err := wr.w.WriteAt(wr.zero[:pad], int64(off+full)); err != nil {
				return nil, fmt.Errorf("erofs: write: %w", err)
			}
		}
		return nil, nil
	}
	tail := wr.buf[:wn.size-full]
	if _, err := io.ReadFull(r, tail); err != nil {
		return nil, wr.shortErr(wn, err)
	}
	return tail, nil
}

// copyInKernel copies up to n bytes from r to the image at off with
// copy_file_range, when r is a file or a section of one (a tar member read
// in place) and the output is a file: no trip of the data through user
// space. It returns how much it copied, r having moved past it; the caller
// reads and writes the rest.
func (wr *imageWriter) copyInKernel(r io.Reader, off, n uint64) uint64 {
	if wr.file == nil {
		return 0
	}
	var src *os.File
	var srcOff *int64 // nil: the file's position, which the kernel moves
	var section io.Seeker
	switch v := r.(type) {
	case *os.File:
		src = v
	case interface {
		Outer() (io.ReaderAt, int64, int64)
		io.Seeker
	}:
		outer, base, _ := v.Outer()
		f, ok := outer.(*os.File)
		pos, err := v.Seek(0, io.SeekCurrent)
		if !ok || err != nil {
			return 0
		}
		src, section = f, v
		at := base + pos
		srcOff = &at
	default:
		return 0
	}
	done := uint64(0)
	for done < n {
		dstOff := wr.opts.At + int64(off+done)
		c, err := unix.CopyFileRange(int(src.Fd()), srcOff, int(wr.file.Fd()), &dstOff, int(min(n-done, 1<<30)), 0)
		if err != nil || c <= 0 {
			break // the caller reads and writes the rest
		}
		done += uint64(c)
	}
	if section != nil {
		if _, err := section.Seek(int64(done), io.SeekCurrent); err != nil {
			return 0 // cannot happen: a section seeks within its bounds
		}
	}
	return done
}

func (wr *imageWriter) shortErr(wn *wnode, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("erofs: %s: file is shorter than its size %d (changed while building?): %w", wn.path, wn.size, io.ErrUnexpectedEOF)
	}
	return fmt.Errorf("erofs: read %s: %w", wn.path, err)
}
