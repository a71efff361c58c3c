package initrd

import (
	"bufio"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
)

// newc constants, cpio(5) "New ASCII Format" and the kernel's reader
// (init/initramfs.c): a 110-byte header of "070701" and 13 eight-digit hex
// fields, then the NUL-terminated name, then the data, each padded to 4 bytes.
const (
	newcMagic      = "070701"
	newcHeaderSize = 110
	newcTrailer    = "TRAILER!!!"

	modeDir     = 0o040000
	modeRegular = 0o100000
	modeSymlink = 0o120000
	modeChar    = 0o020000
)

// entry is one member of an Archive.
type entry struct {
	mode         uint32 // type and permission bits, as st_mode
	data         []byte // file content or symlink target
	rmaj, rminor uint32 // device numbers of a device node
}

// Archive collects the members of a newc cpio archive and writes them in a
// reproducible form: sorted by name (so directories come before what they
// hold), inode numbers counted from 1 in that order, uid and gid 0, and one
// mtime for all members. Missing parent directories are added (mode 0755).
type Archive struct {
	entries map[string]entry
}

// NewArchive returns an empty archive.
func NewArchive() *Archive { return &Archive{entries: map[string]entry{}} }

func cleanName(name string) (string, error) {
	n := strings.TrimPrefix(path.Clean("/"+name), "/")
	if n == "" {
		return "", fmt.Errorf("initrd: cpio: empty name %q", name)
	}
	return n, nil
}

func (a *Archive) add(name string, e entry) error {
	n, err := cleanName(name)
	if err != nil {
		return err
	}
	if old, ok := a.entries[n]; ok && !(old.mode&0o170000 == modeDir && e.mode&0o170000 == modeDir) {
		return fmt.Errorf("initrd: cpio: %s added twice", n)
	}
	for d := path.Dir(n); d != "."; d = path.Dir(d) {
		old, ok := a.entries[d]
		if ok && old.mode&0o170000 != modeDir {
			return fmt.Errorf("initrd: cpio: %s: parent %s is not a directory", n, d)
		}
		if !ok {
			a.entries[d] = entry{mode: modeDir | 0o755}
		}
	}
	a.entries[n] = e
	return nil
}

// AddFile adds a regular file with permission bits perm (e.g. 0o755).
func (a *Archive) AddFile(name string, perm uint32, data []byte) error {
	return a.add(name, entry{mode: modeRegular | perm&0o7777, data: data})
}

// AddDir adds a directory with permission bits perm.
func (a *Archive) AddDir(name string, perm uint32) error {
	return a.add(name, entry{mode: modeDir | perm&0o7777})
}

// AddSymlink adds a symbolic link to target.
func (a *Archive) AddSymlink(name, target string) error {
	return a.add(name, entry{mode: modeSymlink | 0o777, data: []byte(target)})
}

// AddCharDev adds a character device node (e.g. /dev/console, 5:1, which the
// kernel opens for PID 1's stdio before any devtmpfs is mounted).
func (a *Archive) AddCharDev(name string, perm, major, minor uint32) error {
	return a.add(name, entry{mode: modeChar | perm&0o7777, rmaj: major, rminor: minor})
}

// Names returns the member names in archive order.
func (a *Archive) Names() []string {
	names := make([]string, 0, len(a.entries))
	for n := range a.entries {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// WriteTo writes the archive in newc format with every mtime set to mtime
// (seconds since the epoch), ending with the TRAILER!!! member.
func (a *Archive) WriteTo(w io.Writer, mtime int64) (int64, error) {
	cw := &countWriter{w: bufio.NewWriterSize(w, 1<<16)}
	ino := uint32(0)
	for _, n := range a.Names() {
		e := a.entries[n]
		ino++
		nlink := uint32(1)
		if e.mode&0o170000 == modeDir {
			nlink = 2
		}
		writeNewc(cw, n, ino, e.mode, nlink, uint32(mtime), e.data, e.rmaj, e.rminor)
	}
	writeNewc(cw, newcTrailer, 0, 0, 1, 0, nil, 0, 0)
	if cw.err == nil {
		cw.err = cw.w.(*bufio.Writer).Flush()
	}
	if cw.err != nil {
		return cw.n, fmt.Errorf("initrd: cpio: %w", cw.err)
	}
	return cw.n, nil
}

func writeNewc(w *countWriter, name string, ino, mode, nlink, mtime uint32, data []byte, rmaj, rmin uint32) {
	hdr := fmt.Sprintf("%s%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		newcMagic, ino, mode, 0, 0, nlink, mtime, len(data), 0, 0, rmaj, rmin, len(name)+1, 0)
	w.WriteString(hdr)
	w.WriteString(name)
	w.Write([]byte{0})
	w.pad()
	w.Write(data)
	w.pad()
}

// countWriter counts bytes and keeps the first error (sticky, as in
// archive/tar), so the writing code above stays linear.
type countWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (c *countWriter) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.err = err
	return n, err
}

func (c *countWriter) WriteString(s string) { c.Write([]byte(s)) }

func (c *countWriter) pad() {
	if r := c.n % 4; r != 0 {
		c.Write(make([]byte, 4-r))
	}
}
