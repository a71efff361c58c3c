package update

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// DefaultSpoolDir is where apply keeps a bundle it cannot read twice (a
// URL, a pipe) while it verifies it.
const DefaultSpoolDir = "/var/tmp"

// source is a bundle that apply reads twice: once through verify, the
// verification pass, and once from the start of file, the write pass.
type source struct {
	name   string
	verify io.Reader
	file   *os.File
	// size is the source's length, -1 when unknown.
	size int64
	// spooled says file is a copy that the verification pass writes.
	spooled bool
	body    io.Closer // the HTTP response or the pipe being spooled
}

// openSource opens a bundle file or block device, which the two passes
// read in place, or a URL or anything else that cannot seek (a pipe),
// which the verification pass copies to an unlinked file in spoolDir as
// it reads it.
func openSource(ctx context.Context, src, spoolDir string) (*source, error) {
	s := &source{name: src, size: -1}
	if strings.HasPrefix(src, "http://") || strings.HasPrefix(src, "https://") {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
		if err != nil {
			return nil, fmt.Errorf("update: %w", err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, fmt.Errorf("update: %w", err)
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			return nil, fmt.Errorf("update: %s: %s", src, resp.Status)
		}
		s.body, s.size = resp.Body, resp.ContentLength
		if err := s.spool(resp.Body, spoolDir); err != nil {
			resp.Body.Close()
			return nil, err
		}
		return s, nil
	}
	f, err := os.Open(src)
	if err != nil {
		return nil, fmt.Errorf("update: %w", err)
	}
	// Seeking to the end gives the size of a file and of a block device.
	if size, err := f.Seek(0, io.SeekEnd); err == nil {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			f.Close()
			return nil, fmt.Errorf("update: %s: %w", src, err)
		}
		s.verify, s.file, s.size = f, f, size
		return s, nil
	}
	s.body = f
	if err := s.spool(f, spoolDir); err != nil {
		f.Close()
		return nil, err
	}
	return s, nil
}

// spool makes the verification pass copy r to an unlinked file in dir:
// nothing of it stays behind when apply fails or the node loses power.
func (s *source) spool(r io.Reader, dir string) error {
	if dir == "" {
		dir = DefaultSpoolDir
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("update: spool directory: %w", err)
	}
	if s.size > 0 {
		var st unix.Statfs_t
		if err := unix.Statfs(dir, &st); err == nil {
			if free := int64(st.Bavail) * st.Bsize; free < s.size {
				return fmt.Errorf("update: %s cannot be read twice, so apply keeps a copy while it verifies it, but %s has %d bytes free and the bundle has %d (--spool-dir elsewhere, or copy the bundle to a disk first)",
					s.name, dir, free, s.size)
			}
		}
	}
	f, err := os.CreateTemp(dir, ".osguard-update-*")
	if err != nil {
		return fmt.Errorf("update: spool: %w", err)
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return fmt.Errorf("update: spool: %w", err)
	}
	s.file, s.spooled = f, true
	s.verify = io.TeeReader(r, &spoolWriter{f})
	return nil
}

// spoolWriter names the spool in its write errors (a full /var).
type spoolWriter struct{ f *os.File }

func (w *spoolWriter) Write(b []byte) (int, error) {
	n, err := w.f.Write(b)
	if err != nil {
		err = fmt.Errorf("spooling the bundle: %w", err)
	}
	return n, err
}

// rewind returns the reader of the write pass: the bundle again from its
// first byte.
func (s *source) rewind() (io.Reader, error) {
	if s.body != nil {
		s.body.Close()
		s.body = nil
	}
	if _, err := s.file.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("update: %s: %w", s.name, err)
	}
	return s.file, nil
}

func (s *source) Close() error {
	var err error
	if s.body != nil {
		err = s.body.Close()
	}
	if s.file != nil {
		err = errors.Join(err, s.file.Close())
	}
	return err
}
