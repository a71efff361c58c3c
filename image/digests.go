package image

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/osguard/osguard/erofs"
	"github.com/osguard/osguard/internal/atomicfile"
	"github.com/osguard/osguard/sbom"
)

// digestCache keeps the SBOM digests of the files of a cached root tar in
// a file next to it (KEY.digests), so that a warm build does not hash the
// 360 MB of /usr again. The tar's name is a digest of everything that
// decides its bytes, so the digests of its files are fixed with it; they
// are trusted as far as the tar is, whose bytes go into the image as they
// are. Only files whose inode is still the one the tar gave (not replaced
// by the config's additions) take a digest from here.
type digestCache struct {
	path    string
	fromTar map[*erofs.Inode]string // the tar's regular files, by their tar path
	known   map[string]cachedDigests
	dirty   bool
}

type cachedDigests struct {
	size   int64
	sha1   [sha1.Size]byte
	sha256 [sha256.Size]byte
}

// newDigestCache reads the digests kept at path (none yet: an empty
// cache) for the regular files of root, a tree just read from the tar.
func newDigestCache(path string, root *erofs.Tree) (*digestCache, error) {
	c := &digestCache{path: path, fromTar: map[*erofs.Inode]string{}, known: map[string]cachedDigests{}}
	err := root.Walk(func(p string, ino *erofs.Inode) error {
		if ino.Mode&erofs.S_IFMT == erofs.S_IFREG {
			if _, ok := c.fromTar[ino]; !ok {
				c.fromTar[ino] = p
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return nil, fmt.Errorf("digest cache: %w", err)
	}
	// One line a file: size, SHA-1, SHA-256 and the tar path (last: it
	// may hold spaces).
	for i, line := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		f := strings.SplitN(line, " ", 4)
		var d cachedDigests
		var err error
		if len(f) == 4 {
			if d.size, err = strconv.ParseInt(f[0], 10, 64); err == nil {
				err = decodeDigest(d.sha1[:], f[1])
			}
			if err == nil {
				err = decodeDigest(d.sha256[:], f[2])
			}
		}
		if len(f) != 4 || err != nil {
			return nil, fmt.Errorf("digest cache %s: line %d is damaged (remove the file)", path, i+1)
		}
		c.known[f[3]] = d
	}
	return c, nil
}

func decodeDigest(dst []byte, s string) error {
	if n, err := hex.Decode(dst, []byte(s)); err != nil || n != len(dst) {
		return errors.New("bad digest")
	}
	return nil
}

// lookup returns the kept digests of ino, if it is a file of the tar.
func (c *digestCache) lookup(ino *erofs.Inode) (cachedDigests, bool) {
	if c == nil {
		return cachedDigests{}, false
	}
	p, ok := c.fromTar[ino]
	if !ok {
		return cachedDigests{}, false
	}
	d, ok := c.known[p]
	return d, ok && d.size == ino.Size
}

// add keeps the digests of ino if it is a file of the tar.
func (c *digestCache) add(ino *erofs.Inode, d cachedDigests) {
	if c == nil {
		return
	}
	if p, ok := c.fromTar[ino]; ok {
		c.known[p] = d
		c.dirty = true
	}
}

// save writes the cache back if hashing added to it.
func (c *digestCache) save() error {
	if c == nil || !c.dirty {
		return nil
	}
	paths := make([]string, 0, len(c.known))
	for p := range c.known {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var b bytes.Buffer
	for _, p := range paths {
		d := c.known[p]
		fmt.Fprintf(&b, "%d %x %x %s\n", d.size, d.sha1, d.sha256, p)
	}
	if err := atomicfile.WriteFile(c.path, b.Bytes(), 0o644); err != nil {
		return fmt.Errorf("digest cache: %w", err)
	}
	return nil
}

// hashFiles digests every regular file of the /usr tree for the SBOM
// (taking what the cache knows) and returns a manifest of the whole tree
// (paths, modes, owners, targets and digests) from which the build derives
// its UUIDs and salts.
func hashFiles(usr *erofs.Tree, cache *digestCache) ([]sbom.File, []byte, error) {
	var files []sbom.File
	var manifest bytes.Buffer
	buf := make([]byte, 1<<20)
	err := usr.Walk(func(p string, ino *erofs.Inode) error {
		fmt.Fprintf(&manifest, "%s %o %d %d %s", p, ino.Mode, ino.UID, ino.GID, ino.Target)
		if ino.Mode&erofs.S_IFMT == erofs.S_IFREG {
			d, ok := cache.lookup(ino)
			if !ok {
				var err error
				if d, err = digestFile(ino, buf); err != nil {
					return fmt.Errorf("%s: %w", p, err)
				}
				cache.add(ino, d)
			}
			files = append(files, sbom.File{Path: "/usr" + p, Size: ino.Size, SHA1: d.sha1, SHA256: d.sha256})
			fmt.Fprintf(&manifest, " %x", d.sha256)
		}
		keys := make([]string, 0, len(ino.Xattrs))
		for k := range ino.Xattrs {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&manifest, " %s=%x", k, ino.Xattrs[k])
		}
		manifest.WriteByte('\n')
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return files, manifest.Bytes(), cache.save()
}

// digestFile reads a regular file of the tree through buf and digests it.
func digestFile(ino *erofs.Inode, buf []byte) (cachedDigests, error) {
	d := cachedDigests{size: ino.Size}
	if ino.Size == 0 {
		d.sha1, d.sha256 = sha1.Sum(nil), sha256.Sum256(nil)
		return d, nil
	}
	rc, err := ino.Open()
	if err != nil {
		return d, err
	}
	defer rc.Close()
	h1, h256 := sha1.New(), sha256.New()
	n, err := io.CopyBuffer(io.MultiWriter(h1, h256), struct{ io.Reader }{rc}, buf) // struct: through buf, whatever rc implements
	if err != nil {
		return d, err
	}
	if n != ino.Size {
		return d, fmt.Errorf("read %d bytes, want %d", n, ino.Size)
	}
	h1.Sum(d.sha1[:0])
	h256.Sum(d.sha256[:0])
	return d, nil
}
