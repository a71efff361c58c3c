package image

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/osguard/osguard/internal/apt"
	"github.com/osguard/osguard/internal/atomicfile"
	"github.com/osguard/osguard/selinux"
	"github.com/osguard/osguard/sepolicy"
)

// osguardModule is osguard's SELinux policy module: what Debian's reference
// policy does not know of an osguard node's layout.
//
//go:embed selinux/osguard.cil
var osguardModule []byte

// osguardDebugModule lets the --debug-console shell run unconfined; only
// debug images get it.
//
//go:embed selinux/osguard-debug.cil
var osguardDebugModule []byte

// sePolicyFormat changes whenever the policy built from the same packages
// and module would change, so that cached policies of an older osguard are
// not reused.
const sePolicyFormat = "sepolicy-1"

// sePolicy is the build's SELinux policy and the file contexts that label
// /usr at build time and the tmpfs root at boot.
type sePolicy struct {
	Policy       []byte
	FileContexts []byte
	// SubsDist is file_contexts.subs_dist (path aliases), may be empty.
	SubsDist []byte
	// fcPath is the file_contexts file on disk, which labels loads to
	// label /usr.
	fcPath string
	// Etc holds the files of /etc/selinux a Debian root gets (path without
	// leading slash to content): config, the file contexts and the policy,
	// which the package's postinst would have written.
	Etc map[string][]byte
}

// debianPackage names the policy package of spec.selinux.debianPolicy, or "".
func (s SELinux) debianPackage() string {
	if s.Mode == "off" || s.DebianPolicy == "" {
		return ""
	}
	return "selinux-policy-" + s.DebianPolicy
}

// selinuxPolicy reads the policy and file contexts the config names, or
// builds them from the Debian reference policy (spec.selinux.debianPolicy).
// It returns nil when SELinux is off.
func (b *builder) selinuxPolicy() (*sePolicy, error) {
	s := b.cfg.Spec.SELinux
	if s.Mode == "off" {
		return nil, nil
	}
	if s.DebianPolicy != "" {
		return b.debianSELinuxPolicy()
	}
	p := &sePolicy{}
	var err error
	if p.Policy, err = os.ReadFile(b.cfg.Path(s.Policy)); err != nil {
		return nil, fmt.Errorf("selinux: %w", err)
	}
	fcPath := b.cfg.Path(s.FileContexts)
	if p.FileContexts, err = os.ReadFile(fcPath); err != nil {
		return nil, fmt.Errorf("selinux: %w", err)
	}
	if p.SubsDist, err = os.ReadFile(fcPath + ".subs_dist"); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("selinux: %w", err)
	}
	p.fcPath = fcPath
	return p, nil
}

// labels loads the file contexts that label /usr (none when p is nil:
// SELinux is off). Every regex is compiled, so that a bad one fails the
// build rather than the node's libselinux.
func (p *sePolicy) labels() (*selinux.Contexts, error) {
	if p == nil {
		return nil, nil
	}
	c, err := selinux.LoadFileContexts(p.fcPath)
	if err != nil {
		return nil, fmt.Errorf("selinux: %w", err)
	}
	return c, nil
}

// debianSELinuxPolicy compiles selinux-policy-NAME of the rootfs's suite
// plus osguard's module with the suite's secilc (package sepolicy), or reads
// the result of an earlier build from .cache/selinux.
func (b *builder) debianSELinuxPolicy() (*sePolicy, error) {
	s, d := b.cfg.Spec.SELinux, b.cfg.Spec.Rootfs.Debian
	c, err := newDebianCache(d.Suite)
	if err != nil {
		return nil, err
	}
	polPkg := s.debianPackage()
	pkgs, err := c.resolve(append([]string{polPkg}, sepolicy.ToolPackages...), false, func() {
		b.step("selinux: apt resolves %s and the SELinux tools of Debian %s", polPkg, d.Suite)
	})
	if err != nil {
		return nil, fmt.Errorf("selinux: %w", err)
	}
	debs, err := c.state.Download(pkgs, c.debs)
	if err != nil {
		return nil, fmt.Errorf("selinux: %w", err)
	}
	o := sepolicy.Options{Flavour: s.DebianPolicy, Disabled: sepolicy.DefaultDisabled,
		Modules: []sepolicy.Module{{Name: "osguard", CIL: osguardModule}}}
	if b.cfg.Spec.DebugConsole {
		o.Modules = append(o.Modules, sepolicy.Module{Name: "osguard-debug", CIL: osguardDebugModule})
	}
	for i, p := range pkgs {
		if p.Name == polPkg {
			o.PolicyDeb = debs[i]
		} else {
			o.ToolDebs = append(o.ToolDebs, debs[i])
		}
	}
	if o.PolicyDeb == "" {
		return nil, fmt.Errorf("selinux: apt's closure of %s lacks %s", polPkg, polPkg)
	}
	dir := filepath.Join(filepath.Dir(c.roots), "selinux", sePolicyKey(pkgs, o))
	p := &sePolicy{}
	files := map[string]*[]byte{"policy": &p.Policy, "file_contexts": &p.FileContexts, "file_contexts.subs_dist": &p.SubsDist}
	if err := readAll(files, dir); err != nil {
		b.step("selinux: compiling %s (%s) and osguard's module with Debian's secilc", polPkg, pkgVersion(pkgs, polPkg))
		res, err := sepolicy.Build(o)
		if err != nil {
			return nil, err
		}
		p.Policy, p.FileContexts, p.SubsDist = res.Policy, res.FileContexts, res.SubsDist
		if err := writeAll(files, dir); err != nil {
			return nil, fmt.Errorf("selinux: %w", err)
		}
	} else {
		b.step("selinux: %s (%s) compiled before (%s)", polPkg, pkgVersion(pkgs, polPkg), filepath.Base(dir))
	}
	p.fcPath = filepath.Join(dir, "file_contexts")
	et := "etc/selinux/" + s.DebianPolicy + "/"
	p.Etc = map[string][]byte{
		"etc/selinux/config":                                         []byte(fmt.Sprintf("# Written by osguard build: the policy is loaded by osguard-init.\nSELINUX=%s\nSELINUXTYPE=%s\n", s.Mode, s.DebianPolicy)),
		et + "contexts/files/file_contexts":                          p.FileContexts,
		et + fmt.Sprintf("policy/policy.%d", sepolicy.PolicyVersion): p.Policy,
	}
	return p, nil
}

func pkgVersion(pkgs []apt.Package, name string) string {
	for _, p := range pkgs {
		if p.Name == name {
			return p.Version
		}
	}
	return "?"
}

// sePolicyKey names a compiled policy by what decides its bytes.
func sePolicyKey(pkgs []apt.Package, o sepolicy.Options) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%d\x00%s\x00", sePolicyFormat, sepolicy.PolicyVersion, o.Flavour)
	for _, p := range pkgs {
		fmt.Fprintf(h, "%s\x00", p.FileName())
	}
	dis := append([]string(nil), o.Disabled...)
	sort.Strings(dis)
	fmt.Fprintf(h, "disabled\x00%s\x00", strings.Join(dis, "\x00"))
	for _, m := range o.Modules {
		fmt.Fprintf(h, "module\x00%s\x00%x\x00", m.Name, sha256.Sum256(m.CIL))
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
}

func readAll(files map[string]*[]byte, dir string) error {
	for name, dst := range files {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		*dst = b
	}
	return nil
}

// writeAll writes each file whole or not at all; a reader sees the
// directory as complete once the policy is there, so it goes last.
func writeAll(files map[string]*[]byte, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	names := make([]string, 0, len(files))
	for n := range files {
		if n != "policy" {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range append(names, "policy") {
		if err := atomicfile.WriteFile(filepath.Join(dir, n), *files[n], 0o644); err != nil {
			return err
		}
	}
	return nil
}
