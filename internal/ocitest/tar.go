// Package ocitest makes test fixtures for container images: layer tars
// (with whiteouts, opaque directories, xattrs, hard links, devices), in
// plain, gzip and zstd form, and whole OCI image layouts around them, with
// a busybox-static base layer from the host's Debian package. Everything
// is built in Go from fixed inputs, so the same call gives the same bytes.
package ocitest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

// Entry is one tar member. Type is a tar.Type* flag (tar.TypeReg when 0).
type Entry struct {
	Name     string
	Type     byte
	Mode     int64 // permission bits; 0644 for files and 0755 for directories when 0
	UID, GID int
	Body     []byte // regular files
	Link     string // symlink target or hard link target
	Xattrs   map[string]string
	Devmajor int64
	Devminor int64
	ModTime  time.Time // Epoch when zero
}

// Epoch is the mtime of entries that give none.
var Epoch = time.Unix(1700000000, 0).UTC()

// Tar returns the uncompressed PAX tar of entries, in order.
func Tar(t testing.TB, entries []Entry) []byte {
	t.Helper()
	b, err := TarBytes(entries)
	if err != nil {
		t.Fatalf("ocitest: tar: %v", err)
	}
	return b
}

// TarBytes is Tar without a testing.TB (for fuzz seeds and benchmarks).
func TarBytes(entries []Entry) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{
			Name: e.Name, Typeflag: e.Type, Mode: e.Mode, Uid: e.UID, Gid: e.GID,
			Linkname: e.Link, Devmajor: e.Devmajor, Devminor: e.Devminor,
			ModTime: e.ModTime, Format: tar.FormatPAX,
		}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.ModTime.IsZero() {
			h.ModTime = Epoch
		}
		if h.Mode == 0 {
			h.Mode = 0o644
			if h.Typeflag == tar.TypeDir {
				h.Mode = 0o755
			}
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.Body))
		}
		if len(e.Xattrs) > 0 {
			h.PAXRecords = map[string]string{}
			for k, v := range e.Xattrs {
				h.PAXRecords["SCHILY.xattr."+k] = v
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(e.Body); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Compression is how a layer blob is compressed.
type Compression string

// The compressions OCI layers use.
const (
	Plain Compression = "plain"
	Gzip  Compression = "gzip"
	Zstd  Compression = "zstd"
)

// Compressions lists them all, for table-driven tests.
var Compressions = []Compression{Plain, Gzip, Zstd}

// MediaType returns the OCI layer media type of c.
func (c Compression) MediaType() string {
	switch c {
	case Gzip:
		return "application/vnd.oci.image.layer.v1.tar+gzip"
	case Zstd:
		return "application/vnd.oci.image.layer.v1.tar+zstd"
	}
	return "application/vnd.oci.image.layer.v1.tar"
}

// Compress returns data compressed with c (deterministically).
func Compress(t testing.TB, data []byte, c Compression) []byte {
	t.Helper()
	b, err := CompressBytes(data, c)
	if err != nil {
		t.Fatalf("ocitest: %s: %v", c, err)
	}
	return b
}

// CompressBytes is Compress without a testing.TB.
func CompressBytes(data []byte, c Compression) ([]byte, error) {
	var buf bytes.Buffer
	var zw io.WriteCloser
	var err error
	switch c {
	case Gzip:
		zw, err = gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	case Zstd:
		zw, err = zstd.NewWriter(&buf, zstd.WithEncoderConcurrency(1))
	default:
		return append([]byte(nil), data...), nil
	}
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(data); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
