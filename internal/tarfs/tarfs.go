// Package tarfs holds the pieces of reading untrusted tar streams that do
// not depend on what the entries become: detecting and undoing gzip, zstd,
// xz (and bzip2) compression by magic number, and cleaning member names so
// that they stay inside the root.
//
// Parsing itself is archive/tar's (ustar, PAX, GNU long names and sparse
// files).
package tarfs

import (
	"bufio"
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// Compression names a detected stream format.
type Compression string

// The formats Decompress recognises.
const (
	None  Compression = "none"
	Gzip  Compression = "gzip"
	Zstd  Compression = "zstd"
	Xz    Compression = "xz"
	Bzip2 Compression = "bzip2"
)

// maxZstdWindow bounds the memory a hostile zstd frame can make us use; it
// is zstd's own default limit for decompression (--long=27).
const maxZstdWindow = 1 << 27

// ErrInsecurePath is returned for names that leave the root ("..").
var ErrInsecurePath = errors.New("tarfs: insecure path")

// Detect looks at the first bytes of a stream.
func Detect(head []byte) Compression {
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		return Gzip
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return Zstd
	case bytes.HasPrefix(head, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		return Xz
	case bytes.HasPrefix(head, []byte("BZh")):
		return Bzip2
	}
	return None
}

// Decompress returns a reader of the uncompressed stream r, the format it
// found, and a function that releases decoder resources.
func Decompress(r io.Reader) (io.Reader, Compression, func(), error) {
	br := bufio.NewReaderSize(r, 64*1024)
	head, err := br.Peek(6)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, "", nil, fmt.Errorf("tarfs: read: %w", err)
	}
	c := Detect(head)
	nop := func() {}
	switch c {
	case Gzip:
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, c, nil, fmt.Errorf("tarfs: gzip: %w", err)
		}
		return zr, c, nop, nil
	case Zstd:
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(maxZstdWindow))
		if err != nil {
			return nil, c, nil, fmt.Errorf("tarfs: zstd: %w", err)
		}
		return zr, c, zr.Close, nil
	case Xz:
		zr, err := xz.NewReader(GuardXZ(br, MaxXZDict))
		if err != nil {
			return nil, c, nil, fmt.Errorf("tarfs: xz: %w", err)
		}
		return zr, c, nop, nil
	case Bzip2:
		return bzip2.NewReader(br), c, nop, nil
	}
	return br, None, nop, nil
}

// Clean turns a member name into a path relative to the root: leading "/"
// and "./" are dropped (as tar does on extraction), empty and "."
// components removed; a ".." component is refused. The root is "".
func Clean(name string) (string, error) {
	if strings.IndexByte(name, 0) >= 0 {
		return "", fmt.Errorf("tarfs: NUL byte in name %q", name)
	}
	var parts []string
	for _, c := range strings.Split(name, "/") {
		switch c {
		case "", ".":
			continue
		case "..":
			return "", fmt.Errorf("%w: %q", ErrInsecurePath, name)
		}
		parts = append(parts, c)
	}
	return strings.Join(parts, "/"), nil
}
