package initrd

import (
	"github.com/osguard/osguard/deb"

	"bytes"
	"compress/gzip"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/osguard/osguard/internal/tarfs"
)

// maxModuleSize bounds an uncompressed module; the largest Debian 6.12
// modules are a few tens of MiB.
const maxModuleSize = 512 << 20

// ErrNoModule is returned for a module that is neither a file of the package
// nor built into the kernel.
var ErrNoModule = errors.New("no such module")

// ModInfo is the part of a module's .modinfo section that the closure uses.
// The section is a sequence of NUL-terminated "key=value" strings
// (include/linux/moduleparam.h, __MODULE_INFO).
type ModInfo struct {
	Name    string   // "name=", dashes as underscores
	Depends []string // "depends=", comma-separated module names
	Pre     []string // "softdep=pre: ...", names or aliases
	Post    []string // "softdep=post: ..."
	Aliases []string // "alias="
}

func decompressModule(name string, raw []byte) ([]byte, error) {
	var r io.Reader
	switch {
	case strings.HasSuffix(name, ".ko"):
		return raw, nil
	case strings.HasSuffix(name, ".ko.xz"):
		xr, err := xz.NewReader(tarfs.GuardXZ(bytes.NewReader(raw), tarfs.MaxXZDict))
		if err != nil {
			return nil, fmt.Errorf("xz: %w", err)
		}
		r = xr
	case strings.HasSuffix(name, ".ko.zst"):
		zr, err := zstd.NewReader(bytes.NewReader(raw), zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(deb.MaxZstdWindow))
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		defer zr.Close()
		r = zr
	case strings.HasSuffix(name, ".ko.gz"):
		gr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		r = gr
	default:
		return nil, fmt.Errorf("unknown module suffix in %q", name)
	}
	var out bytes.Buffer
	out.Grow(min(3*len(raw), maxModuleSize))
	n, err := io.Copy(&out, io.LimitReader(r, maxModuleSize+1))
	if err != nil {
		return nil, fmt.Errorf("decompress: %w", err)
	}
	if n > maxModuleSize {
		return nil, fmt.Errorf("decompressed module larger than %d bytes", maxModuleSize)
	}
	return out.Bytes(), nil
}

// ParseModInfo reads the .modinfo section of an uncompressed module.
func ParseModInfo(ko []byte) (*ModInfo, error) {
	f, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		return nil, fmt.Errorf("initrd: modinfo: %w", err)
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, errors.New("initrd: modinfo: no .modinfo section")
	}
	if sec.Size > uint64(len(ko)) {
		return nil, errors.New("initrd: modinfo: section larger than the file")
	}
	data, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("initrd: modinfo: %w", err)
	}
	return parseModInfoStrings(data), nil
}

func parseModInfoStrings(data []byte) *ModInfo {
	mi := &ModInfo{}
	for _, kv := range bytes.Split(data, []byte{0}) {
		key, val, ok := strings.Cut(string(kv), "=")
		if !ok {
			continue
		}
		switch key {
		case "name":
			mi.Name = normalizeName(val)
		case "depends":
			for _, d := range strings.Split(val, ",") {
				if d = strings.TrimSpace(d); d != "" {
					mi.Depends = append(mi.Depends, normalizeName(d))
				}
			}
		case "alias":
			mi.Aliases = append(mi.Aliases, val)
		case "softdep":
			// "pre: a b post: c" (kmod's config grammar, also used in modinfo).
			var dst *[]string
			for _, w := range strings.Fields(val) {
				switch w {
				case "pre:":
					dst = &mi.Pre
				case "post:":
					dst = &mi.Post
				default:
					if dst != nil {
						*dst = append(*dst, w)
					}
				}
			}
		}
	}
	return mi
}

// ModInfo returns the parsed .modinfo of module name (cached).
func (k *Kernel) ModInfo(name string) (*ModInfo, error) {
	return k.modInfo(name, false)
}

// modInfo is ModInfo; keep holds on to the decompressed module for
// ModuleData, which Assemble calls next for every module of the closure.
func (k *Kernel) modInfo(name string, keep bool) (*ModInfo, error) {
	name = normalizeName(name)
	k.mu.Lock()
	mi := k.info[name]
	k.mu.Unlock()
	if mi != nil {
		return mi, nil
	}
	ko, err := k.readModule(name)
	if err != nil {
		return nil, err
	}
	mi, err = ParseModInfo(ko)
	if err != nil {
		return nil, fmt.Errorf("initrd: module %s: %w", name, err)
	}
	if mi.Name == "" {
		mi.Name = name
	}
	k.mu.Lock()
	k.info[name] = mi
	if keep {
		k.kept[name] = ko
	}
	k.mu.Unlock()
	return mi, nil
}
