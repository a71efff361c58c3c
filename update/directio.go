package update

import (
	"errors"
	"fmt"
	"io"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Direct I/O. Under emulation (and on any machine, for a large slot), the
// page cache costs apply more than the disk does: every byte would be
// copied from the bundle's cache pages and into the partition's. Payloads
// start at multiples of Align in a bundle, so apply reads and writes whole
// aligned chunks with O_DIRECT, straight between the devices and its
// buffers. Whatever is not aligned (the last bytes of a UKI) goes through
// an ordinary descriptor of the same file.

// alignedBuf returns n bytes that start at a multiple of Align. Go's heap
// does not move objects, so the address stays aligned.
func alignedBuf(n int) []byte {
	b := make([]byte, n+Align)
	skip := (Align - int(uintptr(unsafe.Pointer(unsafe.SliceData(b)))%Align)) % Align
	return b[skip : skip+n : skip+n]
}

func aligned(b []byte, off int64) bool {
	return len(b) > 0 && off%Align == 0 && len(b)%512 == 0 && uintptr(unsafe.Pointer(unsafe.SliceData(b)))%Align == 0
}

// directFile reads a file or block device with O_DIRECT where the buffer
// and offset allow, and through f otherwise; it is also f's io.Reader.
type directFile struct {
	*os.File
	direct *os.File // nil: the file system has no direct I/O
}

// openDirect opens path for reading both ways.
func openDirect(path string) (*directFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	d := &directFile{File: f}
	if g, err := os.OpenFile(path, os.O_RDONLY|unix.O_DIRECT, 0); err == nil {
		d.direct = g
	}
	return d, nil
}

func (d *directFile) ReadAt(b []byte, off int64) (int, error) {
	if d.direct != nil && aligned(b, off) {
		n, err := d.direct.ReadAt(b, off)
		if !errors.Is(err, unix.EINVAL) {
			return n, err
		}
	}
	return d.File.ReadAt(b, off)
}

func (d *directFile) Close() error {
	err := d.File.Close()
	if d.direct != nil {
		err = errors.Join(err, d.direct.Close())
	}
	return err
}

// directWriter writes a partition from its start: aligned chunks with
// O_DIRECT, the rest through the page cache.
type directWriter struct {
	buffered, direct *os.File
	off              int64
	name             string
}

func (w *directWriter) Write(b []byte) (int, error) {
	if w.direct != nil && aligned(b, w.off) {
		n, err := w.direct.WriteAt(b, w.off)
		if !errors.Is(err, unix.EINVAL) { // EINVAL: a device of larger logical blocks
			w.off += int64(n)
			if err != nil {
				return n, fmt.Errorf("update: write %s: %w", w.name, err)
			}
			return n, nil
		}
	}
	n, err := w.buffered.WriteAt(b, w.off)
	w.off += int64(n)
	if err != nil {
		return n, fmt.Errorf("update: write %s: %w", w.name, err)
	}
	return n, nil
}

var _ io.Writer = (*directWriter)(nil)
