package initrd

import (
	"archive/tar"
	"bufio"
	"bytes"
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

// arMagic opens every ar archive, and so every .deb (deb(5)).
const arMagic = "!<arch>\n"

// arHeaderSize is the size of an ar member header (ar(5)): name 16, mtime 12,
// uid 6, gid 6, mode 8, size 10, magic 2.
const arHeaderSize = 60

// maxDebMember bounds a member read from a .deb; Debian kernel packages are
// well below this.
const maxDebMember = 1 << 31

// maxTreeFile bounds one file kept in memory from a kernel package.
const maxTreeFile = 256 << 20

// maxTreeTotal bounds all the files kept in memory from a kernel package: a
// compressed data.tar of a few MB could otherwise expand to any size.
const maxTreeTotal = 2 << 30

// maxZstdWindow bounds the window a zstd frame header can make the decoder
// allocate; it is zstd's own default limit for decompression (--long=27).
const maxZstdWindow = 1 << 27

// ErrNotDeb is returned for a file that is not an ar archive.
var ErrNotDeb = errors.New("initrd: not a Debian package (no ar magic)")

// ReadDeb reads a Debian kernel package (linux-image-*.deb): it keeps the
// kernel image, its config and the modules tree in memory and returns them as
// a Kernel.
func ReadDeb(debPath string) (*Kernel, error) {
	f, err := os.Open(debPath)
	if err != nil {
		return nil, fmt.Errorf("initrd: read deb: %w", err)
	}
	defer f.Close()
	k, err := readDeb(bufio.NewReaderSize(f, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("initrd: read deb %s: %w", debPath, err)
	}
	return k, nil
}

func readDeb(r io.Reader) (*Kernel, error) {
	magic := make([]byte, len(arMagic))
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != arMagic {
		return nil, ErrNotDeb
	}
	for {
		var hdr [arHeaderSize]byte
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if err == io.EOF {
				return nil, errors.New("no data.tar member")
			}
			return nil, fmt.Errorf("ar header: %w", err)
		}
		if hdr[58] != '`' || hdr[59] != '\n' {
			return nil, errors.New("ar header: bad terminator")
		}
		name := strings.TrimRight(strings.TrimSpace(string(hdr[0:16])), "/")
		size, err := strconv.ParseInt(strings.TrimSpace(string(hdr[48:58])), 10, 64)
		if err != nil || size < 0 || size > maxDebMember {
			return nil, fmt.Errorf("ar member %q: bad size %q", name, strings.TrimSpace(string(hdr[48:58])))
		}
		body := io.LimitReader(r, size)
		if strings.HasPrefix(name, "data.tar") {
			tr, err := decompressor(name, body)
			if err != nil {
				return nil, err
			}
			return kernelFromTar(tr)
		}
		// Members are 2-byte aligned.
		if _, err := io.CopyN(io.Discard, r, size+size%2); err != nil {
			return nil, fmt.Errorf("ar member %q: %w", name, err)
		}
	}
}

func decompressor(name string, r io.Reader) (io.Reader, error) {
	switch path.Ext(name) {
	case ".xz":
		cfg := xz.ReaderConfig{SingleStream: false}
		return cfg.NewReader(bufio.NewReaderSize(tarfs.GuardXZ(r, tarfs.MaxXZDict), 1<<20))
	case ".zst":
		d, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(maxZstdWindow))
		if err != nil {
			return nil, err
		}
		return d.IOReadCloser(), nil
	case ".gz":
		return gzip.NewReader(r)
	case ".tar":
		return r, nil
	}
	return nil, fmt.Errorf("unsupported member %q", name)
}

// kernelFromTar keeps what an initramfs build needs: /boot/vmlinuz-*,
// /boot/config-* and everything under (usr/)lib/modules/.
func kernelFromTar(r io.Reader) (*Kernel, error) {
	files := memFS{}
	var total int64
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("data.tar: %w", err)
		}
		name := path.Clean(strings.TrimPrefix(h.Name, "./"))
		if !keepInTree(name) {
			continue
		}
		switch h.Typeflag {
		case tar.TypeReg:
			if h.Size > maxTreeFile {
				return nil, fmt.Errorf("data.tar: %s: too large (%d bytes)", name, h.Size)
			}
			if total += h.Size; total > maxTreeTotal {
				return nil, fmt.Errorf("data.tar: %s: the kernel files exceed %d bytes", name, int64(maxTreeTotal))
			}
			// The declared size is not trusted for the first allocation:
			// a header of a truncated archive may claim maxTreeFile.
			var b bytes.Buffer
			b.Grow(int(min(h.Size, 1<<20)))
			if _, err := io.Copy(&b, tr); err != nil {
				return nil, fmt.Errorf("data.tar: %s: %w", name, err)
			}
			files[name] = b.Bytes()
		case tar.TypeSymlink:
			files[name] = nil // listed, unreadable: links are not needed for the closure
		}
	}
	return newKernel(files)
}

func keepInTree(name string) bool {
	return strings.HasPrefix(name, "boot/vmlinuz-") || strings.HasPrefix(name, "boot/config-") ||
		strings.HasPrefix(name, "usr/lib/modules/") || strings.HasPrefix(name, "lib/modules/")
}
