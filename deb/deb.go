// Package deb reads Debian binary packages (deb(5)): an ar archive whose
// members are debian-binary, control.tar and data.tar, each plain or
// compressed with xz, zstd or gzip.
//
// It is ours because the format is small and the readers around (dpkg-deb,
// blakesmith/ar) either need a subprocess or trust the sizes in the headers:
// every size here is bounded, and the decompressors refuse dictionaries and
// windows that a few hostile bytes could make huge.
package deb

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/osguard/osguard/internal/tarfs"
)

// ArMagic opens every ar archive, and so every .deb.
const ArMagic = "!<arch>\n"

// arHeaderSize is the size of an ar member header (ar(5)): name 16, mtime 12,
// uid 6, gid 6, mode 8, size 10, magic 2.
const arHeaderSize = 60

// MaxMember bounds a member of a .deb; Debian's largest packages are well
// below it.
const MaxMember = 1 << 31

// MaxZstdWindow bounds the window a zstd frame header can make the decoder
// allocate; it is zstd's own default limit for decompression (--long=27).
const MaxZstdWindow = 1 << 27

// ErrNotDeb is returned for a file that is not an ar archive.
var ErrNotDeb = errors.New("deb: not a Debian package (no ar magic)")

// Reader walks the members of a .deb in order.
type Reader struct {
	r    io.Reader
	body io.Reader // the current member's unread rest
	pad  int64     // 1 after an odd-sized member
	err  error
}

// NewReader checks the ar magic and returns a Reader positioned before the
// first member.
func NewReader(r io.Reader) (*Reader, error) {
	magic := make([]byte, len(ArMagic))
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != ArMagic {
		return nil, ErrNotDeb
	}
	return &Reader{r: r}, nil
}

// File is an open .deb file.
type File struct {
	*Reader
	f *os.File
}

// Open opens a .deb file for reading its members in order.
func Open(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	r, err := NewReader(bufio.NewReaderSize(f, 1<<20))
	if err != nil {
		f.Close()
		return nil, err
	}
	return &File{Reader: r, f: f}, nil
}

// Close closes the file.
func (f *File) Close() error { return f.f.Close() }

// Next returns the next member's name and its content, valid until the next
// call. It returns io.EOF after the last member.
func (d *Reader) Next() (string, io.Reader, error) {
	if d.err != nil {
		return "", nil, d.err
	}
	if d.body != nil {
		if _, err := io.Copy(io.Discard, d.body); err != nil {
			return "", nil, d.fail(fmt.Errorf("ar member: %w", err))
		}
		if d.pad > 0 {
			if _, err := io.CopyN(io.Discard, d.r, d.pad); err != nil && err != io.EOF {
				return "", nil, d.fail(fmt.Errorf("ar padding: %w", err))
			}
		}
		d.body = nil
	}
	var hdr [arHeaderSize]byte
	if _, err := io.ReadFull(d.r, hdr[:]); err != nil {
		if err == io.EOF {
			return "", nil, d.fail(io.EOF)
		}
		return "", nil, d.fail(fmt.Errorf("ar header: %w", err))
	}
	if hdr[58] != '`' || hdr[59] != '\n' {
		return "", nil, d.fail(errors.New("ar header: bad terminator"))
	}
	name := strings.TrimRight(strings.TrimSpace(string(hdr[0:16])), "/")
	size, err := strconv.ParseInt(strings.TrimSpace(string(hdr[48:58])), 10, 64)
	if err != nil || size < 0 || size > MaxMember {
		return "", nil, d.fail(fmt.Errorf("ar member %q: bad size %q", name, strings.TrimSpace(string(hdr[48:58]))))
	}
	d.body = &exactReader{r: io.LimitReader(d.r, size), left: size, name: name}
	d.pad = size % 2
	return name, d.body, nil
}

func (d *Reader) fail(err error) error {
	d.err = err
	return err
}

// exactReader turns a member that ends early into an error instead of a
// short, silent EOF.
type exactReader struct {
	r    io.Reader
	left int64
	name string
}

func (e *exactReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	e.left -= int64(n)
	if err == io.EOF && e.left > 0 {
		return n, fmt.Errorf("ar member %q: %w", e.name, io.ErrUnexpectedEOF)
	}
	return n, err
}

// Decompress returns the tar stream of a member named *.tar, *.tar.xz,
// *.tar.zst or *.tar.gz. Close releases the decoder.
func Decompress(name string, r io.Reader) (io.ReadCloser, error) {
	switch path.Ext(name) {
	case ".xz":
		cfg := xz.ReaderConfig{SingleStream: false}
		xr, err := cfg.NewReader(bufio.NewReaderSize(tarfs.GuardXZ(r, tarfs.MaxXZDict), 1<<20))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		return io.NopCloser(xr), nil
	case ".zst":
		d, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(MaxZstdWindow))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		return d.IOReadCloser(), nil
	case ".gz":
		g, err := gzip.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		return g, nil
	case ".tar":
		return io.NopCloser(r), nil
	}
	return nil, fmt.Errorf("deb: unsupported member %q", name)
}

// Member finds the member whose name starts with prefix ("control.tar",
// "data.tar") and returns its decompressed tar stream.
func (d *Reader) Member(prefix string) (*tar.Reader, io.Closer, error) {
	for {
		name, body, err := d.Next()
		if err == io.EOF {
			return nil, nil, fmt.Errorf("deb: no %s member", prefix)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("deb: %w", err)
		}
		if strings.HasPrefix(name, prefix) {
			rc, err := Decompress(name, body)
			if err != nil {
				return nil, nil, fmt.Errorf("deb: %w", err)
			}
			return tar.NewReader(rc), rc, nil
		}
	}
}
