package oci

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
)

// source gives access to the files of a layout by slash-separated name.
type source interface {
	open(name string) (io.ReadCloser, int64, error)
}

// dirSource is a layout directory, opened through os.Root.
type dirSource struct{ root *os.Root }

func (d dirSource) open(name string) (io.ReadCloser, int64, error) {
	f, err := d.root.Open(name)
	if err != nil {
		return nil, 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, 0, fmt.Errorf("%s is not a regular file", name)
	}
	return f, fi.Size(), nil
}

// archiveSource is a tar of a layout, indexed once.
type archiveSource struct {
	r     io.ReaderAt
	files map[string]section
}

type section struct{ off, size int64 }

// maxArchiveEntries bounds the members an archive may have.
const maxArchiveEntries = 100000

func newArchiveSource(r io.ReaderAt, size int64) (*archiveSource, error) {
	if size < 0 {
		return nil, errors.New("negative archive size")
	}
	sr := io.NewSectionReader(r, 0, size)
	tr := tar.NewReader(sr)
	a := &archiveSource{r: r, files: map[string]section{}}
	for n := 0; ; n++ {
		if n > maxArchiveEntries {
			return nil, fmt.Errorf("archive has more than %d members", maxArchiveEntries)
		}
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("archive: %w", err)
		}
		name := strings.TrimPrefix(strings.TrimPrefix(h.Name, "./"), "/")
		if h.Typeflag == tar.TypeDir || name == "" || name == "." {
			continue
		}
		if !fs.ValidPath(name) {
			return nil, fmt.Errorf("archive: invalid member name %q", h.Name)
		}
		if h.Typeflag != tar.TypeReg && h.Typeflag != tar.TypeRegA {
			// Links and devices have no place in a layout; ignore
			// them rather than follow them.
			continue
		}
		for k := range h.PAXRecords {
			if strings.HasPrefix(k, "GNU.sparse.") {
				return nil, fmt.Errorf("archive: %s: sparse members are not supported", name)
			}
		}
		if _, dup := a.files[name]; dup {
			return nil, fmt.Errorf("archive: %s appears twice", name)
		}
		off, err := sr.Seek(0, io.SeekCurrent)
		if err != nil {
			return nil, fmt.Errorf("archive: %w", err)
		}
		if h.Size > size-off {
			return nil, fmt.Errorf("archive: %s: %d bytes claimed, archive truncated: %w", name, h.Size, io.ErrUnexpectedEOF)
		}
		a.files[name] = section{off, h.Size}
	}
	return a, nil
}

func (a *archiveSource) open(name string) (io.ReadCloser, int64, error) {
	s, ok := a.files[name]
	if !ok {
		return nil, 0, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	return io.NopCloser(io.NewSectionReader(a.r, s.off, s.size)), s.size, nil
}
