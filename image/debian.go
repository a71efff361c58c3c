package image

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/osguard/osguard/debroot"
	"github.com/osguard/osguard/erofs"
	"github.com/osguard/osguard/internal/apt"
	"github.com/osguard/osguard/internal/artifacts"
	"github.com/osguard/osguard/internal/atomicfile"
)

// debianRootfsFormat changes whenever debroot's output for the same packages
// changes, so that cached roots of an older osguard are not reused.
const debianRootfsFormat = "debroot-2"

// debianCache is where a Debian rootfs's pieces live: the private apt state
// of scripts/fetch-debian, its downloaded packages, apt's resolutions and
// the unpacked roots, all under the .cache of 'make deps'.
type debianCache struct {
	state    *apt.State
	debs     string
	resolved string
	roots    string
}

func newDebianCache(suite string) (*debianCache, error) {
	p, err := artifacts.Path()
	if err != nil {
		return nil, err
	}
	top := filepath.Dir(p) // .cache
	base := filepath.Join(top, "debian", suite)
	return &debianCache{
		state:    &apt.State{Dir: filepath.Join(base, "apt"), Suite: suite},
		debs:     filepath.Join(base, "debs"),
		resolved: filepath.Join(base, "resolved"),
		roots:    filepath.Join(top, "rootfs"),
	}, nil
}

// debianRootfs makes the root of spec.rootfs.debian: apt resolves and
// downloads the packages, debroot unpacks them into an uncompressed tar that
// is kept in the cache, and the tree reads its files from that tar in place.
// The tar's name is a digest of everything that decides its bytes, so a warm
// build reads it again without resolving or unpacking anything.
func (b *builder) debianRootfs() (*erofs.Tree, io.Closer, *digestCache, error) {
	d := b.cfg.Spec.Rootfs.Debian
	c, err := newDebianCache(d.Suite)
	if err != nil {
		return nil, nil, nil, err
	}
	names := d.Packages
	if pkg := b.cfg.Spec.SELinux.debianPackage(); pkg != "" {
		names = append(append([]string{}, names...), pkg)
	}
	pkgs, err := c.resolve(names, true, func() { b.step("rootfs: apt resolves %d packages of Debian %s", len(d.Packages), d.Suite) })
	if err != nil {
		return nil, nil, nil, err
	}
	files, links := b.rootfsAdditions()
	enable := append([]string(nil), d.Enable...)
	if b.cfg.Spec.Flavour == FlavourStandard && slices.Contains(d.Packages, "apparmor") && !slices.Contains(enable, "apparmor.service") {
		// The standard flavour's LSM loads Debian's profiles at boot, as
		// apparmor's postinst would have arranged.
		enable = append(enable, "apparmor.service")
	}
	key := rootKey(pkgs, enable, files, links, b.o.Epoch)
	tarPath := filepath.Join(c.roots, key+".tar")
	if _, err := os.Stat(tarPath); err != nil {
		b.step("rootfs: apt downloads what is missing of %d packages", len(pkgs))
		debs, err := c.state.Download(pkgs, c.debs)
		if err != nil {
			return nil, nil, nil, err
		}
		b.step("rootfs: unpacking %d packages (no maintainer scripts)", len(debs))
		if err := os.MkdirAll(c.roots, 0o755); err != nil {
			return nil, nil, nil, err
		}
		if err := writeRootTar(tarPath, debroot.Options{Debs: debs, Enable: enable, Files: files, Links: links, Epoch: b.o.Epoch}); err != nil {
			return nil, nil, nil, err
		}
	} else {
		b.step("rootfs: %d Debian %s packages, unpacked before (%s)", len(pkgs), d.Suite, filepath.Base(tarPath))
	}
	f, err := os.Open(tarPath)
	if err != nil {
		return nil, nil, nil, err
	}
	root, err := erofs.TreeFromTar(f, b.stage)
	if err != nil {
		f.Close()
		return nil, nil, nil, fmt.Errorf("%s: %w", tarPath, err)
	}
	digests, err := newDigestCache(strings.TrimSuffix(tarPath, ".tar")+".digests", root)
	if err != nil {
		root.Close()
		f.Close()
		return nil, nil, nil, err
	}
	return root, f, digests, nil
}

// writeRootTar writes the root to path, whole or not at all.
func writeRootTar(path string, o debroot.Options) error {
	f, err := atomicfile.Create(path, 0o644)
	if err != nil {
		return err
	}
	defer f.Abort()
	bw := bufio.NewWriterSize(f, 1<<20)
	if _, err := debroot.Write(bw, o); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	hwdb, err := compileHWDB(f.Name(), filepath.Dir(path))
	if err != nil {
		return err
	}
	if hwdb != nil {
		if err := appendTarFile(f.File, hwdbPath, hwdb, o.Epoch); err != nil {
			return fmt.Errorf("hwdb: %w", err)
		}
	}
	return f.Commit()
}

// rootfsAdditions are the files and links added to a Debian rootfs: the
// config's, and the debug console when asked for.
func (b *builder) rootfsAdditions() (files map[string][]byte, links map[string]string) {
	files, links = map[string][]byte{}, map[string]string{}
	for p, content := range b.cfg.Spec.Rootfs.Files {
		files[strings.TrimPrefix(p, "/")] = []byte(content)
	}
	for p, target := range b.cfg.Spec.Rootfs.Links {
		links[strings.TrimPrefix(p, "/")] = target
	}
	// An empty machine-id: systemd puts a new one over it at every boot
	// without calling the boot a first boot, which would run the
	// interactive systemd-firstboot and enable every unit its presets name
	// (machine-id(5), "First Boot Semantics"). The node is stateless.
	files["etc/machine-id"] = nil
	if b.se != nil {
		for p, content := range b.se.Etc {
			files[p] = content
		}
	}
	// No /etc/.updated: with a new /etc at every boot, the units with
	// ConditionNeedsUpdate=/etc run each time, and they are the ones that
	// do what the packages' maintainer scripts did not: systemd-sysusers,
	// ldconfig and systemd-hwdb-update.
	if *b.cfg.Spec.Rootfs.AddOsguard {
		// A trial boot of an update is committed once the node is
		// healthy, and rolled back otherwise (osguard update check-boot).
		files["usr/lib/systemd/system/osguard-update-check.service"] = []byte(updateCheckUnit)
		links["etc/systemd/system/multi-user.target.wants/osguard-update-check.service"] = "/usr/lib/systemd/system/osguard-update-check.service"
	}
	if b.cfg.Spec.DebugConsole {
		files["etc/systemd/system/osguard-debug-shell.service"] = []byte(debugShellUnit)
		links["etc/systemd/system/sysinit.target.wants/osguard-debug-shell.service"] = "/etc/systemd/system/osguard-debug-shell.service"
		// The console is the debug shell's: no login prompt beside it.
		links["etc/systemd/system/serial-getty@ttyS0.service"] = "/dev/null"
	}
	return files, links
}

// rootKey names a cached root by what decides its bytes.
func rootKey(pkgs []apt.Package, enable []string, files map[string][]byte, links map[string]string, epoch int64) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%d\x00", debianRootfsFormat, epoch)
	for _, p := range pkgs {
		fmt.Fprintf(h, "%s\x00", p.FileName())
	}
	fmt.Fprintf(h, "enable\x00%s\x00", strings.Join(enable, "\x00"))
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(h, "%s\x00%x\x00", n, sha256.Sum256(files[n]))
	}
	names = names[:0]
	for n := range links {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(h, "link\x00%s\x00%s\x00", n, links[n])
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
}

// resolve asks apt for the closure of names, or reads the answer apt gave
// for the same names and the same package indices before (resolving takes
// apt seconds). announce is called before apt runs.
// With essential false the closure leaves the Essential set out.
func (c *debianCache) resolve(names []string, essential bool, announce func()) ([]apt.Package, error) {
	if err := c.state.Check(); err != nil {
		return nil, err
	}
	h := sha256.New()
	sorted := append([]string(nil), names...)
	sort.Strings(sorted)
	fmt.Fprintf(h, "%s\x00", strings.Join(sorted, " "))
	if !essential {
		fmt.Fprintf(h, "no-essential\x00")
	}
	// The indices apt resolves from: their Release files change whenever
	// they do.
	releases, _ := filepath.Glob(filepath.Join(c.state.Dir, "lists", "*Release"))
	sort.Strings(releases)
	for _, r := range releases {
		b, err := os.ReadFile(r)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(h, "%s\x00%x\x00", filepath.Base(r), sha256.Sum256(b))
	}
	cached := filepath.Join(c.resolved, hex.EncodeToString(h.Sum(nil))[:32]+".json")
	if b, err := os.ReadFile(cached); err == nil {
		var pkgs []apt.Package
		if json.Unmarshal(b, &pkgs) == nil && len(pkgs) > 0 {
			return pkgs, nil
		}
	}
	announce()
	resolve := c.state.Resolve
	if !essential {
		resolve = c.state.ResolveDeps
	}
	pkgs, err := resolve(names)
	if err != nil {
		return nil, err
	}
	b, err := json.MarshalIndent(pkgs, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(c.resolved, 0o755); err != nil {
		return nil, err
	}
	if err := atomicfile.WriteFile(cached, b, 0o644); err != nil {
		return nil, err
	}
	return pkgs, nil
}

// updateCheckUnit runs 'osguard update check-boot' at every boot of a
// systemd node: on the trial boot of an update it waits for the node to be
// healthy (containerd active included) and commits the new slot, or reboots
// into the old one.
const updateCheckUnit = `[Unit]
Description=osguard: commit or roll back the trial boot of an update
After=containerd.service systemd-pcrphase.service
ConditionPathExists=/sys/firmware/efi/efivars

[Service]
Type=oneshot
ExecStart=/usr/bin/osguard update check-boot
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target
`

// debugShellUnit is the debug console of --debug-console on a systemd node:
// a root shell on the serial console, in place of the login prompt.
const debugShellUnit = `# osguard --debug-console: a root shell without password on ttyS0, for
# tests and demos. 'osguard status' fails its debug-console check here.
[Unit]
Description=osguard debug console (root shell on ttyS0)
DefaultDependencies=no
Conflicts=serial-getty@ttyS0.service
After=systemd-sysusers.service

[Service]
Environment=TERM=vt220 HOME=/root
WorkingDirectory=-/root
ExecStart=/usr/bin/sh
# Under SELinux the shell is unconfined (osguard's policy module allows the
# transition); without SELinux systemd ignores this.
SELinuxContext=-system_u:system_r:unconfined_t:s0
Restart=always
RestartSec=0
StandardInput=tty
TTYPath=/dev/ttyS0
TTYReset=yes
TTYVHangup=yes
KillMode=process
KillSignal=SIGHUP

[Install]
WantedBy=sysinit.target
`
