package erofs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
)

// File type bits of Inode.Mode (Linux S_IFMT values).
const (
	S_IFMT   = 0o170000
	S_IFSOCK = 0o140000
	S_IFLNK  = 0o120000
	S_IFREG  = 0o100000
	S_IFBLK  = 0o060000
	S_IFDIR  = 0o040000
	S_IFCHR  = 0o020000
	S_IFIFO  = 0o010000
)

// maxNameLen is EROFS_NAME_LEN, the longest directory entry name.
const maxNameLen = 255

// ErrInsecurePath is returned for names that would leave the image root.
var ErrInsecurePath = errors.New("erofs: insecure path")

// Opener opens the content of a regular file. The reader must yield
// exactly Inode.Size bytes.
type Opener func() (io.ReadCloser, error)

// Inode is one file of the tree. Hard links are paths that share one
// *Inode: adding the same pointer at several paths (with Add or Link, in
// one tree or when copying entries from tree to tree) makes them links. A
// directory inode must appear at one path only.
type Inode struct {
	Mode      uint32 // st_mode: S_IF* type and permission bits, incl. setuid, setgid, sticky
	UID, GID  uint32
	Mtime     int64 // seconds since the epoch
	MtimeNsec uint32
	Rdev      uint64            // character and block devices, as unix.Mkdev(major, minor)
	Size      int64             // regular files
	Target    string            // symlinks
	Xattrs    map[string][]byte // full names, e.g. "security.capability"
	Open      Opener            // regular files with Size > 0

	implicit bool // a parent directory nobody described; gets the build time
}

// FileMode returns the Go form of Mode.
func (ino *Inode) FileMode() fs.FileMode {
	m := fs.FileMode(ino.Mode & 0o777)
	if ino.Mode&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if ino.Mode&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if ino.Mode&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	switch ino.Mode & S_IFMT {
	case S_IFDIR:
		m |= fs.ModeDir
	case S_IFLNK:
		m |= fs.ModeSymlink
	case S_IFIFO:
		m |= fs.ModeNamedPipe
	case S_IFSOCK:
		m |= fs.ModeSocket
	case S_IFCHR:
		m |= fs.ModeDevice | fs.ModeCharDevice
	case S_IFBLK:
		m |= fs.ModeDevice
	}
	return m
}

// IsDir reports whether the inode is a directory.
func (ino *Inode) IsDir() bool { return ino.Mode&S_IFMT == S_IFDIR }

// FileOpener returns an Opener for a file on disk.
func FileOpener(name string) Opener {
	return func() (io.ReadCloser, error) { return os.Open(name) }
}

// BytesOpener returns an Opener for an in-memory file.
func BytesOpener(b []byte) Opener {
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
}

type node struct {
	ino      *Inode
	children map[string]*node // directories only
}

// Tree is a file tree to be written as an EROFS image. The zero value is
// not usable; call NewTree. Paths are slash-separated and relative to the
// image root; a leading "/" is ignored and "" or "/" is the root.
type Tree struct {
	root    *node
	closers []io.Closer
}

// NewTree returns a tree holding only a root directory (mode 0755, owned
// by root, with the build time as mtime unless replaced with Add).
func NewTree() *Tree {
	return &Tree{root: &node{ino: &Inode{Mode: S_IFDIR | 0o755, implicit: true}, children: map[string]*node{}}}
}

// Close releases what the tree's Openers depend on (the spool of a tar).
func (t *Tree) Close() error {
	var err error
	for _, c := range t.closers {
		if e := c.Close(); e != nil && err == nil {
			err = e
		}
	}
	t.closers = nil
	return err
}

// splitPath cleans p into its components, refusing "..".
func splitPath(p string) ([]string, error) {
	var parts []string
	for _, c := range strings.Split(p, "/") {
		switch c {
		case "", ".":
			continue
		case "..":
			return nil, fmt.Errorf("%w: %q", ErrInsecurePath, p)
		}
		if len(c) > maxNameLen {
			return nil, fmt.Errorf("erofs: name longer than %d bytes in %q", maxNameLen, p)
		}
		if strings.IndexByte(c, 0) >= 0 {
			return nil, fmt.Errorf("erofs: NUL byte in name %q", p)
		}
		parts = append(parts, c)
	}
	return parts, nil
}

// parent returns the directory node that holds the last component,
// creating missing directories.
func (t *Tree) parent(parts []string, p string) (*node, error) {
	dir := t.root
	for _, c := range parts[:len(parts)-1] {
		n := dir.children[c]
		if n == nil {
			n = &node{ino: &Inode{Mode: S_IFDIR | 0o755, implicit: true}, children: map[string]*node{}}
			dir.children[c] = n
		} else if !n.ino.IsDir() {
			return nil, fmt.Errorf("erofs: %q: parent %q is not a directory", p, c)
		}
		dir = n
	}
	return dir, nil
}

func (t *Tree) lookup(parts []string) *node {
	n := t.root
	for _, c := range parts {
		if n.children == nil {
			return nil
		}
		if n = n.children[c]; n == nil {
			return nil
		}
	}
	return n
}

// Add puts ino at path p, creating missing parent directories (mode 0755,
// owned by root, with the build time as mtime). An existing
// entry is replaced, as extraction would do; when both are directories the
// existing children are kept.
func (t *Tree) Add(p string, ino *Inode) error {
	if err := checkInode(ino); err != nil {
		return fmt.Errorf("erofs: %q: %w", p, err)
	}
	parts, err := splitPath(p)
	if err != nil {
		return err
	}
	if len(parts) == 0 {
		if !ino.IsDir() {
			return fmt.Errorf("erofs: the root must be a directory")
		}
		t.root.ino = ino
		return nil
	}
	dir, err := t.parent(parts, p)
	if err != nil {
		return err
	}
	name := parts[len(parts)-1]
	if old := dir.children[name]; old != nil && old.ino.IsDir() && ino.IsDir() {
		old.ino = ino
		return nil
	}
	n := &node{ino: ino}
	if ino.IsDir() {
		n.children = map[string]*node{}
	}
	dir.children[name] = n
	return nil
}

func checkInode(ino *Inode) error {
	switch ino.Mode & S_IFMT {
	case S_IFREG:
		if ino.Size < 0 {
			return fmt.Errorf("negative size")
		}
		if ino.Size > 0 && ino.Open == nil {
			return fmt.Errorf("regular file without content")
		}
	case S_IFLNK:
		if ino.Target == "" {
			return fmt.Errorf("empty symlink target")
		}
		if len(ino.Target) >= 4096 {
			return fmt.Errorf("symlink target longer than 4095 bytes")
		}
	case S_IFDIR, S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK:
	default:
		return fmt.Errorf("unknown file type %#o", ino.Mode&S_IFMT)
	}
	if ino.Mode&^uint32(S_IFMT|0o7777) != 0 {
		return fmt.Errorf("mode %#o has unknown bits", ino.Mode)
	}
	for name, v := range ino.Xattrs {
		if _, _, err := xattrIndex(name); err != nil {
			return err
		}
		if len(v) > 0xffff {
			return fmt.Errorf("xattr %s: value longer than 65535 bytes", name)
		}
	}
	return nil
}

// Link makes p a hard link to the existing non-directory at target.
func (t *Tree) Link(p, target string) error {
	tparts, err := splitPath(target)
	if err != nil {
		return err
	}
	tn := t.lookup(tparts)
	if tn == nil {
		return fmt.Errorf("erofs: hard link %q: target %q does not exist", p, target)
	}
	if tn.ino.IsDir() {
		return fmt.Errorf("erofs: hard link %q: target %q is a directory", p, target)
	}
	parts, err := splitPath(p)
	if err != nil {
		return err
	}
	if len(parts) == 0 {
		return fmt.Errorf("erofs: hard link to the root")
	}
	dir, err := t.parent(parts, p)
	if err != nil {
		return err
	}
	dir.children[parts[len(parts)-1]] = &node{ino: tn.ino}
	return nil
}

// Remove deletes p and everything below it; a missing p is not an error.
func (t *Tree) Remove(p string) error {
	parts, err := splitPath(p)
	if err != nil {
		return err
	}
	if len(parts) == 0 {
		t.root.children = map[string]*node{}
		return nil
	}
	if dir := t.lookup(parts[:len(parts)-1]); dir != nil && dir.children != nil {
		delete(dir.children, parts[len(parts)-1])
	}
	return nil
}

// Get returns the inode at p, or nil.
func (t *Tree) Get(p string) *Inode {
	parts, err := splitPath(p)
	if err != nil {
		return nil
	}
	if n := t.lookup(parts); n != nil {
		return n.ino
	}
	return nil
}

// Walk calls fn for every path of the tree, parents before children and
// children in name order; paths start with "/". A hard-linked inode is
// visited once per path.
func (t *Tree) Walk(fn func(p string, ino *Inode) error) error {
	var walk func(p string, n *node) error
	walk = func(p string, n *node) error {
		if err := fn(p, n.ino); err != nil {
			return err
		}
		for _, name := range sortedNames(n) {
			if err := walk(path.Join(p, name), n.children[name]); err != nil {
				return err
			}
		}
		return nil
	}
	return walk("/", t.root)
}

func sortedNames(n *node) []string {
	names := make([]string, 0, len(n.children))
	for name := range n.children {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}
