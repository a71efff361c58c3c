package initrd

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/smallstep/pkcs7"
	"github.com/ulikunitz/xz"

	"github.com/osguard/osguard/initrd/bootconfig"
	"github.com/osguard/osguard/internal/blobcache"
)

// Compression names accepted in Options.Compression.
const (
	CompressZstd = "zstd"
	CompressXZ   = "xz"
	CompressNone = "none"
)

// File is an extra file for the initramfs: Data, or the content of Src.
type File struct {
	Src  string
	Dst  string // absolute path in the initramfs
	Data []byte
	Mode uint32 // permission bits; 0 means 0644, or 0755 when Src is executable
}

// Options describes one initramfs.
type Options struct {
	// The kernel: an opened Kernel, a .deb, or an unpacked package tree
	// (first one set wins).
	Kernel     *Kernel
	KernelDeb  string
	KernelRoot string

	// Modules are loaded in addition to DefaultModules.
	Modules []string
	// NoDefaultModules leaves DefaultModules out.
	NoDefaultModules bool

	// Init is the osguard-init binary (InitPath is read when Init is nil).
	Init     []byte
	InitPath string

	// Policy is the signed IPE policy (attached PKCS#7, DER). PolicyName
	// is read from its policy_name= when empty.
	Policy     []byte
	PolicyName string
	// SELinuxPolicy is a binary SELinux policy (policy.33).
	SELinuxPolicy []byte

	Add []File

	// Config carries the modes; the builder fills the module list, the
	// kernel version and the policy name.
	Config bootconfig.Config

	// Compression is zstd (default), xz or none.
	Compression string
	// MTime is the mtime of every member (SOURCE_DATE_EPOCH); 0 by default.
	MTime int64

	// Cache, when set, keeps compressed archives by the digest of the
	// archive and of the code that compressed it (blobcache.CodeID), so
	// that a warm build, whose archive is the same, compresses nothing.
	Cache Cache
}

// Build writes the compressed initramfs described by opts to w.
func Build(opts Options, w io.Writer) error {
	a, err := Assemble(opts)
	if err != nil {
		return err
	}
	if opts.Cache == nil || opts.Compression == CompressNone {
		return Write(a, opts.Compression, opts.MTime, w)
	}
	return writeCached(a, opts, w)
}

// writeCached is Write through opts.Cache. The key covers every byte of
// the uncompressed archive and the executable that compresses it, so a
// kept entry is the bytes Write would give.
func writeCached(a *Archive, opts Options, w io.Writer) error {
	code, err := blobcache.CodeID()
	if err != nil {
		return Write(a, opts.Compression, opts.MTime, w)
	}
	h := sha256.New()
	if _, err := a.WriteTo(h, opts.MTime); err != nil {
		return err
	}
	key := fmt.Sprintf("initramfs-%s-%x-%s", orZstd(opts.Compression), h.Sum(nil), code)
	if b, ok := opts.Cache.Get(key); ok {
		_, err := w.Write(b)
		return err
	}
	var out bytes.Buffer
	if err := Write(a, opts.Compression, opts.MTime, &out); err != nil {
		return err
	}
	// A cache that cannot be written only costs the next build time.
	_ = opts.Cache.Put(key, out.Bytes())
	_, err = w.Write(out.Bytes())
	return err
}

func orZstd(compression string) string {
	if compression == "" {
		return CompressZstd
	}
	return compression
}

// Write writes a with the named compression.
func Write(a *Archive, compression string, mtime int64, w io.Writer) error {
	switch compression {
	case "", CompressZstd:
		// One encoder goroutine: the output then depends only on the input.
		zw, err := zstd.NewWriter(w, zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(true))
		if err != nil {
			return fmt.Errorf("initrd: zstd: %w", err)
		}
		if _, err := a.WriteTo(zw, mtime); err != nil {
			zw.Close()
			return err
		}
		if err := zw.Close(); err != nil {
			return fmt.Errorf("initrd: zstd: %w", err)
		}
	case CompressXZ:
		// The kernel's xz decoder checks CRC32 or nothing, not CRC64/SHA-256.
		xw, err := xz.WriterConfig{CheckSum: xz.CRC32}.NewWriter(w)
		if err != nil {
			return fmt.Errorf("initrd: xz: %w", err)
		}
		if _, err := a.WriteTo(xw, mtime); err != nil {
			return err
		}
		if err := xw.Close(); err != nil {
			return fmt.Errorf("initrd: xz: %w", err)
		}
	case CompressNone:
		_, err := a.WriteTo(w, mtime)
		return err
	default:
		return fmt.Errorf("initrd: unknown compression %q (want zstd, xz or none)", compression)
	}
	return nil
}

// Assemble builds the uncompressed archive described by opts.
func Assemble(opts Options) (*Archive, error) {
	k := opts.Kernel
	var err error
	switch {
	case k != nil:
	case opts.KernelDeb != "":
		k, err = ReadDeb(opts.KernelDeb)
	case opts.KernelRoot != "":
		k, err = OpenDir(opts.KernelRoot)
	default:
		err = errors.New("initrd: no kernel given (Kernel, KernelDeb or KernelRoot)")
	}
	if err != nil {
		return nil, err
	}
	init := opts.Init
	if init == nil {
		if opts.InitPath == "" {
			return nil, errors.New("initrd: no init binary given (Init or InitPath)")
		}
		if init, err = os.ReadFile(opts.InitPath); err != nil {
			return nil, fmt.Errorf("initrd: init: %w", err)
		}
	}

	cfg := opts.Config
	cfg.Defaults()
	cfg.KernelVersion = k.Version
	cfg.Modules = nil
	cfg.IPEPolicyName = ""
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("initrd: %w", err)
	}

	a := NewArchive()
	for _, d := range []string{"dev", "proc", "sys", "run", "tmp", "sysroot", "etc/osguard"} {
		if err := a.AddDir(d, 0o755); err != nil {
			return nil, err
		}
	}
	// The kernel opens /dev/console for PID 1 before anything is mounted.
	if err := a.AddCharDev("dev/console", 0o600, 5, 1); err != nil {
		return nil, err
	}
	if err := a.AddFile("init", 0o755, init); err != nil {
		return nil, err
	}

	wanted := append([]string{}, opts.Modules...)
	if !opts.NoDefaultModules {
		wanted = append(append([]string{}, DefaultModules...), wanted...)
	}
	order, err := k.Closure(wanted)
	if err != nil {
		return nil, err
	}
	for _, name := range order {
		ko, err := k.ModuleData(name)
		if err != nil {
			return nil, err
		}
		dst := path.Join(bootconfig.ModulesDir, k.Version, name+".ko")
		if err := a.AddFile(dst, 0o644, ko); err != nil {
			return nil, err
		}
		m := bootconfig.Module{Name: name, Path: dst}
		if name == "dm_verity" {
			// Refuse unsigned tables in the kernel itself. The parameter is
			// read-only after load and only kmod's modprobe would take it
			// from the command line.
			m.Params = "require_signatures=1"
		}
		cfg.Modules = append(cfg.Modules, m)
	}

	if len(opts.Policy) > 0 {
		name := opts.PolicyName
		if name == "" {
			if name, err = PolicyNameFromP7(opts.Policy); err != nil {
				return nil, err
			}
		}
		cfg.IPEPolicyName = name
		if err := a.AddFile(bootconfig.IPEPolicyPath, 0o644, opts.Policy); err != nil {
			return nil, err
		}
	}
	if len(opts.SELinuxPolicy) > 0 {
		if err := a.AddFile(bootconfig.SELinuxPolicyPath, 0o644, opts.SELinuxPolicy); err != nil {
			return nil, err
		}
	}
	for _, f := range opts.Add {
		if err := addFile(a, f); err != nil {
			return nil, err
		}
	}
	js, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := a.AddFile(bootconfig.Path, 0o644, append(js, '\n')); err != nil {
		return nil, err
	}
	return a, nil
}

func addFile(a *Archive, f File) error {
	if !strings.HasPrefix(f.Dst, "/") {
		return fmt.Errorf("initrd: add %q: destination must be absolute", f.Dst)
	}
	data, mode := f.Data, f.Mode
	if data == nil {
		st, err := os.Stat(f.Src)
		if err != nil {
			return fmt.Errorf("initrd: add: %w", err)
		}
		if st.IsDir() {
			return fmt.Errorf("initrd: add %s: directories are not supported", f.Src)
		}
		if data, err = os.ReadFile(f.Src); err != nil {
			return fmt.Errorf("initrd: add: %w", err)
		}
		if mode == 0 && st.Mode()&0o111 != 0 {
			mode = 0o755
		}
	}
	if mode == 0 {
		mode = 0o644
	}
	return a.AddFile(f.Dst, mode, data)
}

// PolicyNameFromP7 returns the policy_name= of an IPE policy signed as an
// attached PKCS#7 (the policy header is the first line of the content,
// Documentation/admin-guide/LSM/ipe.rst). The signature is not checked here:
// the kernel checks it when the init loads the policy.
func PolicyNameFromP7(der []byte) (string, error) {
	p7, err := pkcs7.Parse(der)
	if err != nil {
		return "", fmt.Errorf("initrd: ipe policy: %w", err)
	}
	return PolicyName(p7.Content)
}

// PolicyName returns the policy_name= of an IPE policy text.
func PolicyName(text []byte) (string, error) {
	sc := bufio.NewScanner(bytes.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, "policy_name="); ok && v != "" {
				return v, nil
			}
		}
		break
	}
	return "", errors.New("initrd: ipe policy: no policy_name= in the policy header")
}
