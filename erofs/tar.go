package erofs

import (
	"archive/tar"
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strings"

	"github.com/osguard/osguard/internal/tarfs"
	"golang.org/x/sys/unix"
)

// TreeFromTar reads a tar stream (plain, gzip, zstd, xz or bzip2; ustar,
// PAX and GNU formats) into a Tree. PAX xattrs (SCHILY.xattr.*), hard
// links, symlinks, devices and fifos are kept. A duplicate name replaces
// the earlier entry, as extraction does.
//
// When r is an uncompressed regular *os.File, file contents are read from
// it later, at their offsets, and r must stay open until the image is
// written. Otherwise contents are copied to an unlinked spool file in
// tempDir (os.TempDir() when empty). Close the tree to release the spool.
func TreeFromTar(r io.Reader, tempDir string) (*Tree, error) {
	return treeFromTar(r, tempDir, true)
}

// TreeFromPlainTar is TreeFromTar for a stream known to be an uncompressed
// tar: no compression is detected, so a tar whose first bytes happen to
// look like a compression magic is still read as a tar. Callers that
// decompress (and digest) the stream themselves use it.
func TreeFromPlainTar(r io.Reader, tempDir string) (*Tree, error) {
	return treeFromTar(r, tempDir, false)
}

func treeFromTar(r io.Reader, tempDir string, detect bool) (*Tree, error) {
	t := NewTree()
	b := &tarBuilder{t: t, tempDir: tempDir}
	if f, ok := r.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			pos, err := f.Seek(0, io.SeekCurrent)
			head := make([]byte, 6)
			n, _ := f.ReadAt(head, pos)
			if err == nil && (!detect || tarfs.Detect(head[:n]) == tarfs.None) {
				b.file, b.fileSize = f, fi.Size()
			}
		}
	}
	src := r
	if b.file != nil {
		pos, err := b.file.Seek(0, io.SeekCurrent)
		if err != nil {
			return nil, fmt.Errorf("erofs: tar: %w", err)
		}
		b.in = &headerReader{f: b.file, pos: pos, size: b.fileSize, buf: make([]byte, 0, 32<<10)}
		src = b.in
	}
	if b.file == nil && detect {
		dr, _, release, err := tarfs.Decompress(r)
		if err != nil {
			return nil, fmt.Errorf("erofs: %w", err)
		}
		defer release()
		src = dr
	}
	if err := b.read(tar.NewReader(src)); err != nil {
		t.Close()
		return nil, err
	}
	if b.spoolW != nil {
		if err := b.spoolW.Flush(); err != nil {
			t.Close()
			return nil, fmt.Errorf("erofs: spool: %w", err)
		}
	}
	return t, nil
}

// MaxSparseSize bounds the logical size of a sparse tar member. Its holes
// become real zero blocks in the image, so a few bytes of hostile input
// could otherwise ask for terabytes.
const MaxSparseSize = 1 << 30

type tarBuilder struct {
	t        *Tree
	tempDir  string
	file     *os.File // seekable uncompressed input, or nil
	fileSize int64
	in       *headerReader // what the tar reader reads file through
	spool    *os.File
	spoolW   *bufio.Writer
	spoolOff int64
}

func (b *tarBuilder) read(tr *tar.Reader) error {
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("erofs: tar: %w", err)
		}
		if hdr.Typeflag == tar.TypeXGlobalHeader {
			continue
		}
		if err := b.entry(tr, hdr); err != nil {
			return err
		}
	}
}

// maxTarPath bounds a member name (and hard link target), as Linux's
// PATH_MAX does. Without it a PAX name of up to 1 MiB of "a/a/a/..." makes a
// tree half a million directories deep, which Walk and WriteImage take
// quadratic time (hours) over.
const maxTarPath = 4095

func (b *tarBuilder) entry(tr *tar.Reader, hdr *tar.Header) error {
	if len(hdr.Name) > maxTarPath || len(hdr.Linkname) > maxTarPath {
		return fmt.Errorf("erofs: tar: %.64q...: name or link target longer than %d bytes", hdr.Name, maxTarPath)
	}
	name, err := tarfs.Clean(hdr.Name)
	if err != nil {
		return fmt.Errorf("erofs: tar: %w", err)
	}
	if hdr.Uid < 0 || hdr.Gid < 0 || int64(hdr.Uid) > math.MaxUint32 || int64(hdr.Gid) > math.MaxUint32 {
		return fmt.Errorf("erofs: tar: %q: uid/gid %d/%d out of range", hdr.Name, hdr.Uid, hdr.Gid)
	}
	ino := &Inode{
		Mode:      uint32(hdr.Mode) & 0o7777,
		UID:       uint32(hdr.Uid),
		GID:       uint32(hdr.Gid),
		Mtime:     hdr.ModTime.Unix(),
		MtimeNsec: uint32(hdr.ModTime.Nanosecond()),
	}
	for k, v := range hdr.PAXRecords {
		if x, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
			if ino.Xattrs == nil {
				ino.Xattrs = map[string][]byte{}
			}
			ino.Xattrs[x] = []byte(v)
		}
	}
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeRegA, tar.TypeCont, tar.TypeGNUSparse:
		ino.Mode |= S_IFREG
		ino.Size = hdr.Size
		if hdr.Size > 0 {
			if ino.Open, err = b.content(tr, hdr); err != nil {
				return err
			}
		}
	case tar.TypeLink:
		target, err := tarfs.Clean(hdr.Linkname)
		if err != nil {
			return fmt.Errorf("erofs: tar: hard link %q: %w", hdr.Name, err)
		}
		if err := b.t.Link(name, target); err != nil {
			return err
		}
		return nil
	case tar.TypeSymlink:
		ino.Mode |= S_IFLNK
		ino.Target = hdr.Linkname
	case tar.TypeChar, tar.TypeBlock:
		ino.Mode |= S_IFCHR
		if hdr.Typeflag == tar.TypeBlock {
			ino.Mode = ino.Mode&^S_IFMT | S_IFBLK
		}
		if hdr.Devmajor < 0 || hdr.Devminor < 0 || hdr.Devmajor > 0xfff || hdr.Devminor > 0xfffff {
			return fmt.Errorf("erofs: tar: %q: device %d:%d out of range", hdr.Name, hdr.Devmajor, hdr.Devminor)
		}
		ino.Rdev = unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
	case tar.TypeDir:
		ino.Mode |= S_IFDIR
	case tar.TypeFifo:
		ino.Mode |= S_IFIFO
	default:
		return fmt.Errorf("erofs: tar: %q: unsupported entry type %q", hdr.Name, hdr.Typeflag)
	}
	return b.t.Add(name, ino)
}

// content records where the data of the current entry can be read again.
func (b *tarBuilder) content(tr *tar.Reader, hdr *tar.Header) (Opener, error) {
	sparse := hdr.Typeflag == tar.TypeGNUSparse
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			sparse = true
		}
	}
	size := hdr.Size
	if sparse && size > MaxSparseSize {
		return nil, fmt.Errorf("erofs: tar: %q: sparse file of %d bytes exceeds the limit of %d", hdr.Name, size, int64(MaxSparseSize))
	}
	if b.file != nil && !sparse {
		off := b.in.pos
		if off > b.fileSize || size > b.fileSize-off {
			return nil, fmt.Errorf("erofs: tar: %q: %d bytes claimed, archive truncated: %w", hdr.Name, size, io.ErrUnexpectedEOF)
		}
		f := b.file
		return func() (io.ReadCloser, error) { return sectionCloser{io.NewSectionReader(f, off, size)}, nil }, nil
	}
	if b.spool == nil {
		f, err := os.CreateTemp(b.tempDir, "osguard-erofs-spool-*")
		if err != nil {
			return nil, fmt.Errorf("erofs: spool: %w", err)
		}
		// Unlinked at once: nothing is left behind whatever happens.
		os.Remove(f.Name())
		b.spool, b.spoolW = f, bufio.NewWriterSize(f, 1<<20)
		b.t.closers = append(b.t.closers, f)
	}
	off := b.spoolOff
	n, err := io.CopyN(b.spoolW, tr, size)
	b.spoolOff += n
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("erofs: tar: %q: reading %d bytes: %w", hdr.Name, size, err)
	}
	f := b.spool
	return func() (io.ReadCloser, error) { return io.NopCloser(io.NewSectionReader(f, off, size)), nil }, nil
}

// BuildFromTar writes an image of the tar stream r (see TreeFromTar) to w
// and returns its size.
func BuildFromTar(r io.Reader, w io.WriterAt, opts Options) (int64, error) {
	t, err := TreeFromTar(r, opts.TempDir)
	if err != nil {
		return 0, err
	}
	defer t.Close()
	return t.WriteImage(w, opts)
}

// sectionCloser is a tar member read in place. It stays an
// *io.SectionReader underneath (not an io.NopCloser), so that the image
// writer can find the file and offset and copy the data in the kernel.
type sectionCloser struct{ *io.SectionReader }

func (sectionCloser) Close() error { return nil }

// headerReader is what the tar reader reads an uncompressed tar file
// through when the contents stay in place: a small buffer, so that the
// headers of a run of small members take one read, and seeks over the
// data of the others that cost no system call. A root of 20,000 files
// would otherwise take five system calls a member.
type headerReader struct {
	f     *os.File
	pos   int64 // the tar reader's position in f
	size  int64
	buf   []byte
	bufAt int64 // where buf starts in f
}

func (r *headerReader) Read(p []byte) (int, error) {
	if r.pos < r.bufAt || r.pos >= r.bufAt+int64(len(r.buf)) {
		n, err := r.f.ReadAt(r.buf[:cap(r.buf)], r.pos)
		r.buf, r.bufAt = r.buf[:n], r.pos
		if n == 0 {
			if err == nil {
				err = io.EOF
			}
			return 0, err
		}
	}
	n := copy(p, r.buf[r.pos-r.bufAt:])
	r.pos += int64(n)
	return n, nil
}

func (r *headerReader) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		off += r.pos
	case io.SeekEnd:
		off += r.size
	default:
		return 0, errors.New("erofs: tar: bad whence")
	}
	if off < 0 {
		return 0, errors.New("erofs: tar: seek before the start")
	}
	r.pos = off
	return off, nil
}
