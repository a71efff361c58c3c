// Package artifacts finds the Debian trixie pieces that scripts/fetch-artifacts
// downloaded (the 6.12 kernel, the systemd stub, ukify) by reading the one file
// where their resolved names and paths are recorded: .cache/artifacts.env at
// the top of the checkout, or the file named by $OSGUARD_ARTIFACTS.
package artifacts

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Set holds the recorded artifacts.
type Set struct {
	KernelPackage      string // e.g. linux-image-6.12.117+deb13-cloud-amd64
	KernelVersion      string // e.g. 6.12.117+deb13-cloud-amd64
	KernelDeb          string // the downloaded .deb
	KernelRoot         string // the unpacked .deb
	Vmlinuz            string
	Modules            string // /usr/lib/modules/<version> inside KernelRoot
	SystemdStub        string // linuxx64.efi.stub from trixie's systemd-boot-efi
	SystemdBootEFIRoot string
	UkifyRoot          string // unpacked systemd-ukify
	Busybox            string // static busybox from trixie's busybox-static
	BusyboxDeb         string
	// SPDXSchema is the SPDX 2.3 JSON schema (from syft's Go module, in the
	// Go module cache of whoever ran make deps); only tests read it, so
	// Load does not insist on it.
	SPDXSchema string
}

// ErrNotFetched is returned when the artifacts file does not exist yet.
var ErrNotFetched = errors.New("artifacts: not fetched yet; run 'make deps' (scripts/fetch-artifacts)")

// TopDir returns the top of the checkout: the nearest parent of the working
// directory that holds go.mod.
func TopDir() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("artifacts: no go.mod above the working directory")
		}
		dir = parent
	}
}

// Path returns the location of the artifacts file: $OSGUARD_ARTIFACTS, else
// .cache/artifacts.env in the checkout that holds the working directory,
// else in the checkout of the running program (bin/osguard after 'make build').
func Path() (string, error) {
	if p := os.Getenv("OSGUARD_ARTIFACTS"); p != "" {
		return p, nil
	}
	if top, err := TopDir(); err == nil {
		return filepath.Join(top, ".cache", "artifacts.env"), nil
	}
	if self, err := os.Executable(); err == nil {
		for dir := filepath.Dir(self); ; dir = filepath.Dir(dir) {
			p := filepath.Join(dir, ".cache", "artifacts.env")
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
			if dir == filepath.Dir(dir) {
				break
			}
		}
	}
	return "", errors.New("artifacts: no .cache/artifacts.env found (run 'make deps' in the osguard checkout, or set OSGUARD_ARTIFACTS)")
}

// Load reads the artifacts file and checks that every path in it exists.
func Load() (*Set, error) {
	p, err := Path()
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNotFetched
	}
	if err != nil {
		return nil, fmt.Errorf("artifacts: %w", err)
	}
	defer f.Close()
	kv := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("artifacts: %s: malformed line %q", p, line)
		}
		kv[k] = v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("artifacts: read %s: %w", p, err)
	}
	s := &Set{
		KernelPackage:      kv["KERNEL_PACKAGE"],
		KernelVersion:      kv["KERNEL_VERSION"],
		KernelDeb:          kv["KERNEL_DEB"],
		KernelRoot:         kv["KERNEL_ROOT"],
		Vmlinuz:            kv["KERNEL_VMLINUZ"],
		Modules:            kv["KERNEL_MODULES"],
		SystemdStub:        kv["SYSTEMD_STUB"],
		SystemdBootEFIRoot: kv["SYSTEMD_BOOT_EFI_ROOT"],
		UkifyRoot:          kv["SYSTEMD_UKIFY_ROOT"],
		Busybox:            kv["BUSYBOX"],
		BusyboxDeb:         kv["BUSYBOX_DEB"],
		SPDXSchema:         kv["SPDX_SCHEMA"],
	}
	for name, path := range map[string]string{
		"KERNEL_DEB": s.KernelDeb, "KERNEL_VMLINUZ": s.Vmlinuz, "KERNEL_MODULES": s.Modules,
		"SYSTEMD_STUB": s.SystemdStub, "SYSTEMD_UKIFY_ROOT": s.UkifyRoot,
		"BUSYBOX": s.Busybox, "BUSYBOX_DEB": s.BusyboxDeb,
	} {
		if path == "" {
			return nil, fmt.Errorf("artifacts: %s: %s is not set; run 'make deps'", p, name)
		}
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("artifacts: %s (%s): %w; run 'make deps'", name, path, err)
		}
	}
	return s, nil
}
