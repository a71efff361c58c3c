package layer

import (
	"fmt"
	"path"
	"strings"

	"github.com/osguard/osguard/erofs"
)

// OCI whiteout names (image-spec layer.md) and the overlayfs forms they take.
const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	whiteoutOpaque = ".wh..wh..opq"

	// OpaqueXattr marks a directory whose lower-layer content overlayfs hides.
	OpaqueXattr = "trusted.overlay.opaque"
	overlayNS   = "trusted.overlay."
)

// convertWhiteouts rewrites the OCI whiteouts of tree into overlayfs ones,
// and drops trusted.overlay.* xattrs the tar brought.
func convertWhiteouts(tree *erofs.Tree) error {
	var wh []string
	err := tree.Walk(func(p string, ino *erofs.Inode) error {
		for k := range ino.Xattrs {
			if strings.HasPrefix(k, overlayNS) {
				delete(ino.Xattrs, k)
			}
		}
		if strings.HasPrefix(path.Base(p), whiteoutPrefix) {
			wh = append(wh, p)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("layer: %w", err)
	}
	// Walk lists parents first: a whiteout inside a removed whiteout is
	// gone with it.
	removed := map[string]bool{}
	for _, p := range wh {
		if under(p, removed) {
			continue
		}
		dir, base := path.Split(p)
		ino := tree.Get(p)
		if err := tree.Remove(p); err != nil {
			return fmt.Errorf("layer: whiteout %s: %w", p, err)
		}
		removed[p] = true
		switch {
		case base == whiteoutOpaque:
			d := tree.Get(dir)
			if d == nil || !d.IsDir() {
				return fmt.Errorf("layer: opaque whiteout %s: parent is not a directory", p)
			}
			if d.Xattrs == nil {
				d.Xattrs = map[string][]byte{}
			}
			d.Xattrs[OpaqueXattr] = []byte("y")
		case strings.HasPrefix(base, whiteoutMeta):
			// aufs metadata (.wh..wh.plnk, .wh..wh.aufs): not content.
		default:
			name := strings.TrimPrefix(base, whiteoutPrefix)
			if name == "" || name == "." || name == ".." {
				return fmt.Errorf("layer: whiteout %s: invalid name", p)
			}
			target := path.Join(dir, name)
			// A whiteout hides lower layers only; an entry of this layer
			// with the same name stays (image-spec layer.md).
			if tree.Get(target) != nil {
				continue
			}
			dev := &erofs.Inode{Mode: erofs.S_IFCHR, UID: ino.UID, GID: ino.GID, Mtime: ino.Mtime, MtimeNsec: ino.MtimeNsec}
			if err := tree.Add(target, dev); err != nil {
				return fmt.Errorf("layer: whiteout %s: %w", p, err)
			}
		}
	}
	return nil
}

// under reports whether an ancestor of p is in dirs.
func under(p string, dirs map[string]bool) bool {
	for d := path.Dir(p); d != "/" && d != "."; d = path.Dir(d) {
		if dirs[d] {
			return true
		}
	}
	return false
}
