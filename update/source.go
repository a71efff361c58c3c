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
// verification pass, and once at at, the write pass.
type source struct {
	name   string
	verify io.Reader
	at     io.ReaderAt
	file   *os.File // the file, device or spool; closed by Close
	direct *directFile
	// size is the source's length, -1 when unknown.
	size int64
	// spooled says file is a copy that the verification pass writes.
	spooled bool
	body    io.Closer // the HTTP response or the pipe being spooled
	// stable says why the bytes cannot change between the passes, or is
	// empty when they can (the write pass then checks usr again).
	stable string
	// leased is the descriptor holding a read lease on a bundle file.
	leased *os.File
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
	d, err := openDirect(src)
	if err != nil {
		return nil, fmt.Errorf("update: %w", err)
	}
	// Seeking to the end gives the size of a file and of a block device.
	if size, err := d.Seek(0, io.SeekEnd); err == nil {
		if _, err := d.Seek(0, io.SeekStart); err != nil {
			d.Close()
			return nil, fmt.Errorf("update: %s: %w", src, err)
		}
		s.verify, s.at, s.direct, s.size = d, d, d, size
		s.stable, s.leased = stability(d.File)
		return s, nil
	}
	d.Close()
	f, err := os.Open(src)
	if err != nil {
		return nil, fmt.Errorf("update: %w", err)
	}
	s.body = f
	if err := s.spool(f, spoolDir); err != nil {
		f.Close()
		return nil, err
	}
	return s, nil
}

// stability finds out whether anything on the node can change f between
// the passes: nothing writes a read-only block device (a bundle attached
// read-only, a CD), and nobody can open a file for writing, or truncate
// it, while apply holds a read lease on it without the lease breaking
// (which changed notices). A lease is refused while anyone has the file
// open for writing, and on file systems without leases.
func stability(f *os.File) (string, *os.File) {
	st, err := f.Stat()
	if err != nil {
		return "", nil
	}
	switch {
	case st.Mode()&os.ModeDevice != 0:
		if ro, err := unix.IoctlGetInt(int(f.Fd()), unix.BLKROGET); err == nil && ro != 0 {
			return "a read-only block device", nil
		}
	case st.Mode().IsRegular():
		if _, err := unix.FcntlInt(f.Fd(), unix.F_SETLEASE, unix.F_RDLCK); err == nil {
			return "a file under a read lease", f
		}
	}
	return "", nil
}

// changed reports a lease that broke: someone opened the bundle file for
// writing (or truncated it) since apply took the lease.
func (s *source) changed() error {
	if s.leased == nil {
		return nil
	}
	if l, err := unix.FcntlInt(s.leased.Fd(), unix.F_GETLEASE, 0); err != nil || l != unix.F_RDLCK {
		return fmt.Errorf("%w: %s was opened for writing during apply", errChanged, s.name)
	}
	return nil
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
	s.file, s.spooled, s.at = f, true, f
	s.stable = "a private unlinked copy"
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

func (s *source) Close() error {
	var err error
	if s.body != nil {
		err = s.body.Close()
	}
	if s.file != nil {
		err = errors.Join(err, s.file.Close())
	}
	if s.direct != nil {
		err = errors.Join(err, s.direct.Close())
	}
	return err
}
