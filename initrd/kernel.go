package initrd

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
)

// Kernel is one kernel build: its image, its config and its modules tree,
// read from a Debian package (ReadDeb) or an unpacked tree (OpenDir).
type Kernel struct {
	Version string // the uname -r string, e.g. 6.12.117+deb13-cloud-amd64
	Vmlinuz []byte // the bootable image (/boot/vmlinuz-Version)
	Config  []byte // /boot/config-Version, empty when absent

	tree    tree
	modDir  string            // e.g. usr/lib/modules/<Version>, inside tree
	modules map[string]string // module name (dashes as underscores) -> path in tree
	builtin map[string]bool   // modules.builtin, same naming

	// Cache, when set, keeps decompressed modules by the SHA-256 of their
	// compressed file, so that a warm build decompresses none: xz is most
	// of the time an initramfs takes to build.
	Cache Cache

	mu   sync.Mutex
	info map[string]*ModInfo // by module name
	// kept holds the decompressed modules of the last Closure until
	// ModuleData hands them out, so that Assemble decompresses each once.
	kept map[string][]byte
}

// Cache keeps results under keys that name everything that decides them
// (internal/blobcache.Dir is one). Get must miss on a damaged entry.
type Cache interface {
	Get(key string) ([]byte, bool)
	Put(key string, data []byte) error
}

// tree is the read side of a kernel package: regular files by slash path.
type tree interface {
	names() []string
	read(name string) ([]byte, error)
}

// memFS holds the files of a .deb kept in memory.
type memFS map[string][]byte

func (m memFS) names() []string {
	n := make([]string, 0, len(m))
	for k := range m {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

func (m memFS) read(name string) ([]byte, error) {
	b, ok := m[name]
	if !ok || b == nil {
		return nil, &fs.PathError{Op: "read", Path: name, Err: fs.ErrNotExist}
	}
	return b, nil
}

// dirTree is an unpacked kernel package on disk.
type dirTree struct {
	root  string
	files []string
}

func (d *dirTree) names() []string { return d.files }

func (d *dirTree) read(name string) ([]byte, error) {
	return os.ReadFile(filepath.Join(d.root, filepath.FromSlash(name)))
}

// OpenDir opens an unpacked kernel package (the root that holds boot/ and
// usr/lib/modules/ or lib/modules/).
func OpenDir(root string) (*Kernel, error) {
	d := &dirTree{root: root}
	for _, top := range []string{"boot", "usr/lib/modules", "lib/modules"} {
		err := filepath.WalkDir(filepath.Join(root, top), func(p string, e fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			if !e.Type().IsRegular() {
				return nil
			}
			rel, err := filepath.Rel(root, p)
			if err != nil {
				return err
			}
			if rel = filepath.ToSlash(rel); keepInTree(rel) {
				d.files = append(d.files, rel)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("initrd: open kernel tree: %w", err)
		}
	}
	sort.Strings(d.files)
	k, err := newKernel(d)
	if err != nil {
		return nil, fmt.Errorf("initrd: open kernel tree %s: %w", root, err)
	}
	return k, nil
}

func newKernel(t tree) (*Kernel, error) {
	k := &Kernel{tree: t, modules: map[string]string{}, builtin: map[string]bool{}, info: map[string]*ModInfo{}, kept: map[string][]byte{}}
	var versions []string
	for _, n := range t.names() {
		if v, ok := strings.CutPrefix(n, "boot/vmlinuz-"); ok {
			versions = append(versions, v)
		}
	}
	if len(versions) != 1 {
		return nil, fmt.Errorf("want exactly one boot/vmlinuz-*, found %d", len(versions))
	}
	k.Version = versions[0]
	var err error
	if k.Vmlinuz, err = t.read("boot/vmlinuz-" + k.Version); err != nil {
		return nil, err
	}
	k.Config, _ = t.read("boot/config-" + k.Version)
	for _, dir := range []string{"usr/lib/modules/" + k.Version, "lib/modules/" + k.Version} {
		prefix := dir + "/"
		for _, n := range t.names() {
			rel, ok := strings.CutPrefix(n, prefix)
			if !ok {
				continue
			}
			k.modDir = dir
			name, ok := moduleName(rel)
			if !ok {
				continue
			}
			// updates/ overrides kernel/, as in depmod's default search order.
			if _, dup := k.modules[name]; !dup || strings.HasPrefix(rel, "updates/") {
				k.modules[name] = n
			}
		}
		if k.modDir != "" {
			break
		}
	}
	if k.modDir == "" {
		return nil, fmt.Errorf("no modules directory for kernel %s", k.Version)
	}
	if b, err := t.read(k.modDir + "/modules.builtin"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if name, ok := moduleName(strings.TrimSpace(line)); ok {
				k.builtin[name] = true
			}
		}
	}
	return k, nil
}

// moduleName returns the kernel's name for a module file: the base name
// without .ko and compression suffix, with dashes turned into underscores
// (the kernel and kmod treat them as the same character).
func moduleName(p string) (string, bool) {
	base := path.Base(p)
	for _, ext := range []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"} {
		if n, ok := strings.CutSuffix(base, ext); ok {
			return normalizeName(n), true
		}
	}
	return "", false
}

func normalizeName(n string) string { return strings.ReplaceAll(n, "-", "_") }

// ModulePath returns the path of module name inside the package tree (e.g.
// usr/lib/modules/V/kernel/drivers/md/dm-verity.ko.xz).
func (k *Kernel) ModulePath(name string) (string, bool) {
	p, ok := k.modules[normalizeName(name)]
	return p, ok
}

// Builtin reports whether module name is built into the kernel image.
func (k *Kernel) Builtin(name string) bool { return k.builtin[normalizeName(name)] }

// ModuleData returns the uncompressed ELF of module name. The caller owns
// it: a module that Closure decompressed is handed out once, then read
// again.
func (k *Kernel) ModuleData(name string) ([]byte, error) {
	name = normalizeName(name)
	k.mu.Lock()
	elf, ok := k.kept[name]
	delete(k.kept, name)
	k.mu.Unlock()
	if ok {
		return elf, nil
	}
	return k.readModule(name)
}

// readModule reads and decompresses module name.
func (k *Kernel) readModule(name string) ([]byte, error) {
	p, ok := k.ModulePath(name)
	if !ok {
		return nil, fmt.Errorf("initrd: module %s: %w", name, ErrNoModule)
	}
	raw, err := k.tree.read(p)
	if err != nil {
		return nil, fmt.Errorf("initrd: module %s: %w", name, err)
	}
	elf, err := k.decompress(p, raw)
	if err != nil {
		return nil, fmt.Errorf("initrd: module %s: %w", name, err)
	}
	return elf, nil
}

// decompress returns the uncompressed module of file p, whose bytes are
// raw, from k.Cache when it has it. The key is the digest of the
// compressed bytes and their format: decompression is a function of them
// alone.
func (k *Kernel) decompress(p string, raw []byte) ([]byte, error) {
	format := strings.TrimPrefix(path.Ext(p), ".")
	if k.Cache == nil || strings.HasSuffix(p, ".ko") {
		return decompressModule(p, raw)
	}
	key := fmt.Sprintf("ko-%s-%x", format, sha256.Sum256(raw))
	if elf, ok := k.Cache.Get(key); ok {
		return elf, nil
	}
	elf, err := decompressModule(p, raw)
	if err != nil {
		return nil, err
	}
	// A cache that cannot be written only costs the next build time.
	_ = k.Cache.Put(key, elf)
	return elf, nil
}
