package erofs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"golang.org/x/sys/unix"
)

// TreeFromDir reads the tree below dir with lstat, never following
// symlinks: types, modes, owners, mtimes (with nanoseconds), device
// numbers, xattrs and hard links (by device and inode number). File
// content is read later, when the image is written.
func TreeFromDir(dir string) (*Tree, error) {
	// Only the argument itself may be a symlink; nothing below it is followed.
	dir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, fmt.Errorf("erofs: %w", err)
	}
	t := NewTree()
	type key struct{ dev, ino uint64 }
	links := map[key]string{}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("erofs: %w", err)
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return fmt.Errorf("erofs: %w", err)
		}
		rel = filepath.ToSlash(rel)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return fmt.Errorf("erofs: lstat %s: %w", p, err)
		}
		if rel == "." && st.Mode&S_IFMT != S_IFDIR {
			return fmt.Errorf("erofs: %s is not a directory", dir)
		}
		if st.Mode&S_IFMT != S_IFDIR && st.Nlink > 1 {
			k := key{st.Dev, st.Ino}
			if first, ok := links[k]; ok {
				return t.Link(rel, first)
			}
			links[k] = rel
		}
		ino := &Inode{
			Mode:      st.Mode,
			UID:       st.Uid,
			GID:       st.Gid,
			Mtime:     st.Mtim.Sec,
			MtimeNsec: uint32(st.Mtim.Nsec),
		}
		switch st.Mode & S_IFMT {
		case S_IFREG:
			ino.Size = st.Size
			if st.Size > 0 {
				ino.Open = FileOpener(p)
			}
		case S_IFLNK:
			if ino.Target, err = os.Readlink(p); err != nil {
				return fmt.Errorf("erofs: %w", err)
			}
		case S_IFCHR, S_IFBLK:
			ino.Rdev = st.Rdev
		}
		if ino.Xattrs, err = readXattrs(p); err != nil {
			return err
		}
		return t.Add(rel, ino)
	})
	if err != nil {
		return nil, err
	}
	return t, nil
}

// readXattrs returns every xattr of p, without following a symlink.
func readXattrs(p string) (map[string][]byte, error) {
	buf := make([]byte, 4096)
	var n int
	var err error
	for {
		n, err = unix.Llistxattr(p, buf)
		if errors.Is(err, unix.ERANGE) {
			buf = make([]byte, len(buf)*4)
			continue
		}
		break
	}
	if errors.Is(err, unix.ENOTSUP) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("erofs: listxattr %s: %w", p, err)
	}
	if n == 0 {
		return nil, nil
	}
	var names []string
	for start, i := 0, 0; i < n; i++ {
		if buf[i] == 0 {
			if i > start {
				names = append(names, string(buf[start:i]))
			}
			start = i + 1
		}
	}
	sort.Strings(names)
	m := make(map[string][]byte, len(names))
	val := make([]byte, 4096)
	for _, name := range names {
		for {
			sz, err := unix.Lgetxattr(p, name, val)
			if errors.Is(err, unix.ERANGE) {
				val = make([]byte, len(val)*4)
				continue
			}
			if errors.Is(err, unix.ENODATA) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("erofs: getxattr %s %s: %w", p, name, err)
			}
			m[name] = append([]byte(nil), val[:sz]...)
			break
		}
	}
	return m, nil
}

// BuildFromDir writes an image of the tree below dir to w and returns its
// size.
func BuildFromDir(dir string, w io.WriterAt, opts Options) (int64, error) {
	t, err := TreeFromDir(dir)
	if err != nil {
		return 0, err
	}
	defer t.Close()
	return t.WriteImage(w, opts)
}
