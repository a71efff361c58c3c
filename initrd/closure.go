package initrd

import (
	"fmt"
	"path"
	"sort"
	"strings"
)

// DefaultModules are the modules every osguard initramfs carries: dm-verity
// and its dependencies, EROFS, efivarfs, the virtio, AHCI and SCSI disk
// drivers, vfat with the code pages the ESP uses, overlayfs, and softdog.
// Modules that a kernel has built in are skipped.
//
// softdog is the watchdog osguard-init arms on an update's trial boot, so
// that a trial userland that hangs is reset and the firmware goes back to
// the old slot (internal/bootinit/watchdog.go). It is here and not in a
// profile's extraModules because that rollback is osguard-init's promise
// for every image, whatever its profile; loaded, it does nothing until
// /dev/watchdog is opened, which only a trial boot does.
var DefaultModules = []string{
	"dm_verity", "erofs", "efivarfs",
	"virtio_blk", "virtio_scsi", "ahci", "sd_mod",
	"vfat", "nls_cp437", "nls_iso8859_1", "nls_ascii",
	"overlay", "softdog",
}

// Closure returns the modules to load for the wanted ones, dependencies
// first, each once: for every module its "softdep=pre:" modules, then its
// "depends=" modules, then itself, then its "softdep=post:" modules. This is
// the order `modprobe --show-depends` prints. Modules built into the kernel
// are left out; a wanted module that is neither a file nor built in is an
// error (ErrNoModule). A soft dependency that names nothing is ignored, as
// modprobe does.
func (k *Kernel) Closure(wanted []string) ([]string, error) {
	const (
		visiting = 1
		done     = 2
	)
	state := map[string]int{}
	var order []string
	var visit func(name string, soft bool, chain []string) error
	visit = func(name string, soft bool, chain []string) error {
		switch state[name] {
		case done:
			return nil
		case visiting:
			if soft {
				return nil // softdep loops are legal; modprobe breaks them too
			}
			return fmt.Errorf("initrd: module dependency cycle: %s -> %s", strings.Join(chain, " -> "), name)
		}
		state[name] = visiting
		chain = append(chain, name)
		mi, err := k.modInfo(name, true)
		if err != nil {
			return err
		}
		for _, s := range mi.Pre {
			if err := k.visitSoft(s, visit, chain); err != nil {
				return err
			}
		}
		for _, d := range mi.Depends {
			if k.Builtin(d) {
				continue
			}
			if err := visit(d, false, chain); err != nil {
				return err
			}
		}
		state[name] = done
		order = append(order, name)
		for _, s := range mi.Post {
			if err := k.visitSoft(s, visit, chain); err != nil {
				return err
			}
		}
		return nil
	}
	for _, w := range wanted {
		names, err := k.resolve(w)
		if err != nil {
			return nil, err
		}
		for _, n := range names {
			if err := visit(n, false, nil); err != nil {
				return nil, err
			}
		}
	}
	return order, nil
}

func (k *Kernel) visitSoft(s string, visit func(string, bool, []string) error, chain []string) error {
	names, err := k.resolve(s)
	if err != nil {
		return nil // an unresolvable soft dependency is not an error
	}
	for _, n := range names {
		if err := visit(n, true, chain); err != nil {
			return err
		}
	}
	return nil
}

// resolve turns a module name or alias into module files to load: none when
// it is built in, the module when a file has that name, else every module
// that declares a matching alias.
func (k *Kernel) resolve(s string) ([]string, error) {
	n := normalizeName(s)
	if k.builtin[n] {
		return nil, nil
	}
	if _, ok := k.modules[n]; ok {
		return []string{n}, nil
	}
	names, err := k.resolveAlias(s)
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("initrd: module %s: %w", s, ErrNoModule)
	}
	return names, nil
}

// resolveAlias finds the modules whose "alias=" patterns match s. Reading
// every module's .modinfo means decompressing the whole tree (seconds), so
// it first tries the modules whose file name contains the alias (crc32c ->
// crc32c-intel, the case in Debian's kernels) and scans the rest only when
// none of those match. This can miss a second provider of an alias that one
// matching candidate already satisfies; the closure test checks the result
// against modprobe.
func (k *Kernel) resolveAlias(s string) ([]string, error) {
	stem := normalizeName(strings.TrimPrefix(s, "crypto-"))
	var first, rest []string
	for n := range k.modules {
		if strings.Contains(n, stem) {
			first = append(first, n)
		} else {
			rest = append(rest, n)
		}
	}
	sort.Strings(first)
	sort.Strings(rest)
	for _, group := range [][]string{first, rest} {
		var found []string
		for _, n := range group {
			mi, err := k.ModInfo(n)
			if err != nil {
				return nil, err
			}
			for _, a := range mi.Aliases {
				if ok, _ := path.Match(a, s); ok || a == s {
					found = append(found, n)
					break
				}
			}
		}
		if len(found) > 0 {
			return found, nil
		}
	}
	return nil, nil
}
