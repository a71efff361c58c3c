package image

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// APIVersion and Kind identify an osguard image configuration.
const (
	APIVersion = "osguard.dev/v1alpha1"
	Kind       = "Image"
)

// Config is an osguard.yaml file. Every field has a default; the zero
// Config plus Defaults() is the embedded default profile.
type Config struct {
	APIVersion string   `yaml:"apiVersion"`
	Kind       string   `yaml:"kind"`
	Metadata   Metadata `yaml:"metadata"`
	Spec       Spec     `yaml:"spec"`

	// dir is the directory of the config file; relative paths are resolved against it.
	dir string
	// Profile names the embedded profile the config came from; "custom"
	// for a file of the user's.
	Profile string `yaml:"-"`
}

// Metadata names the image.
type Metadata struct {
	Name    string `yaml:"name"`
	Version string `yaml:"version"`
}

// Spec is what the image is built from and how.
type Spec struct {
	Rootfs  Rootfs   `yaml:"rootfs"`
	Kernel  Kernel   `yaml:"kernel"`
	Keys    string   `yaml:"keys"`
	Cmdline []string `yaml:"cmdline"`
	IPE     IPE      `yaml:"ipe"`
	SELinux SELinux  `yaml:"selinux"`
	Layout  Layout   `yaml:"layout"`
	// Flavour is guard (default: IPE, signed verity, SELinux) or standard
	// (the same signed /usr, no IPE, AppArmor as the major LSM).
	Flavour string `yaml:"flavour"`
	// DebugConsole puts a root shell without password on the serial
	// console, for tests and demos; 'osguard status' fails its
	// debug-console check on such a node.
	DebugConsole bool `yaml:"debugConsole"`
	// Attestation, when set, starts the attestation agent on the node.
	Attestation *Attestation `yaml:"attestation"`
}

// Attestation configures the node agent (osguard attest agent), which the
// default userland starts at boot; other userlands start it themselves. The
// settings reach the node as /etc/osguard/attestation.json.
type Attestation struct {
	// Verifier is the verifier's URL as the node reaches it; default
	// http://10.0.2.100:80, which 'osguard run DIR --verifier HOST:PORT'
	// forwards to HOST:PORT.
	Verifier string `yaml:"verifier" json:"verifier"`
	// Interval between attestations after the one at boot (default 5m).
	Interval string `yaml:"interval" json:"interval"`
}

// DefaultVerifierURL is where 'osguard run --verifier' forwards to.
const DefaultVerifierURL = "http://10.0.2.100:80"

// Rootfs is the userland. Path is a directory, a tar file (plain, gzip, zstd
// or xz) or an OCI image layout directory (its layers are flattened). Empty
// means the built-in busybox-static userland.
type Rootfs struct {
	Path string `yaml:"path"`
	// Init is the userland's init (osguard.init=); default /sbin/init.
	Init string `yaml:"init"`
	// AddOsguard puts the static osguard binary at /usr/bin/osguard (default true).
	AddOsguard *bool `yaml:"addOsguard"`
	// Debian, when set, makes the rootfs from Debian packages (Path must
	// then be empty).
	Debian *DebianRootfs `yaml:"debian"`
	// Files are added to a Debian rootfs last: absolute path to content.
	Files map[string]string `yaml:"files"`
	// Links are symbolic links added to a Debian rootfs: path to target.
	Links map[string]string `yaml:"links"`
}

// DebianRootfs is a rootfs made of Debian packages: the named ones, what
// they depend on and every Essential package, resolved and downloaded by
// apt through the private apt state of 'make deps' and unpacked without
// maintainer scripts (package debroot).
type DebianRootfs struct {
	// Suite is the Debian suite (default trixie).
	Suite    string   `yaml:"suite"`
	Packages []string `yaml:"packages"`
	// Enable names systemd units to enable, as 'systemctl enable' would.
	Enable []string `yaml:"enable"`
}

// Kernel is a Debian kernel package, or a vmlinuz with its modules directory.
// Empty means the fetched trixie cloud kernel (.cache/artifacts.env).
type Kernel struct {
	Deb     string   `yaml:"deb"`
	Vmlinuz string   `yaml:"vmlinuz"`
	Modules string   `yaml:"modules"`
	Extra   []string `yaml:"extraModules"`
	// Stub is the systemd EFI stub; empty means the fetched trixie one.
	Stub string `yaml:"stub"`
}

// IPE configures the code-integrity policy.
type IPE struct {
	// Mode is enforce (default) or audit.
	Mode string `yaml:"mode"`
	// Policy is a policy file; empty means one generated from the build.
	Policy string `yaml:"policy"`
	// AllowRootHashes adds dm-verity root hashes (alg:hex) that may execute.
	AllowRootHashes []string `yaml:"allowRootHashes"`
	// PolicyVersion of the generated policy; default: the image version
	// as MAJOR.MINOR.REVISION (version "2" gives 2.0.0), or 1.0.0 when the
	// image version is not such a number. Updates need it to grow.
	PolicyVersion string `yaml:"policyVersion"`
}

// SELinux configures the SELinux mode and policy.
type SELinux struct {
	// Mode is off (default), permissive or enforcing.
	Mode string `yaml:"mode"`
	// Policy is a binary policy (e.g. /etc/selinux/default/policy/policy.33).
	Policy string `yaml:"policy"`
	// FileContexts labels the files of /usr.
	FileContexts string `yaml:"fileContexts"`
	// DebianPolicy, in place of Policy and FileContexts, names a Debian
	// reference policy ("default": selinux-policy-default) of the Debian
	// rootfs's suite. The build compiles it with osguard's policy module
	// using the suite's own secilc, and the package joins the rootfs.
	DebianPolicy string `yaml:"debianPolicy"`
}

// Layout sizes the disk. Sizes take K, M, G suffixes (powers of 1024).
type Layout struct {
	ESPSize string `yaml:"espSize"`
	// UsrSize is the usr partition size; "auto" fits the image with 25 % room.
	UsrSize string `yaml:"usrSize"`
	// Slots is 2 (A/B, default) or 1.
	Slots int `yaml:"slots"`
	// VarSize is the var partition's size; "0" leaves it out.
	VarSize string `yaml:"varSize"`
}

//go:embed profiles/*.yaml
var profileFS embed.FS

// DefaultProfile is the profile 'osguard build' builds without -c or --profile.
const DefaultProfile = "default"

// Profiles lists the embedded profiles.
func Profiles() []string {
	ents, _ := profileFS.ReadDir("profiles")
	var names []string
	for _, e := range ents {
		names = append(names, strings.TrimSuffix(e.Name(), ".yaml"))
	}
	return names
}

// ProfileYAML returns an embedded profile's text.
func ProfileYAML(name string) ([]byte, error) {
	b, err := profileFS.ReadFile("profiles/" + name + ".yaml")
	if err != nil {
		return nil, fmt.Errorf("config: no profile %q (the profiles are: %s)", name, strings.Join(Profiles(), ", "))
	}
	return b, nil
}

// DefaultYAML returns the embedded default profile.
func DefaultYAML() []byte {
	b, _ := ProfileYAML(DefaultProfile)
	return b
}

// LoadProfile parses an embedded profile.
func LoadProfile(name string) (*Config, error) {
	b, err := ProfileYAML(name)
	if err != nil {
		return nil, err
	}
	c, err := ParseConfig(b, "")
	if err != nil {
		return nil, fmt.Errorf("profile %s: %w", name, err)
	}
	c.Profile = name
	return c, nil
}

// ParseConfig strictly parses a configuration: unknown fields, a wrong
// apiVersion or kind, and bad values are errors that name the line.
func ParseConfig(data []byte, dir string) (*Config, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var c Config
	if err := dec.Decode(&c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("config: empty document")
		}
		return nil, fmt.Errorf("config: %w", err)
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("config: more than one YAML document")
	}
	c.dir = dir
	var node yaml.Node
	yaml.Unmarshal(data, &node)
	if err := c.defaults().validate(&node); err != nil {
		return nil, err
	}
	return &c, nil
}

// LoadConfig reads a config file, or the default profile when path is "".
func LoadConfig(path string) (*Config, error) {
	if path == "" {
		return LoadProfile(DefaultProfile)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := ParseConfig(b, filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	c.Profile = "custom"
	return c, nil
}

func (c *Config) defaults() *Config {
	if c.APIVersion == "" {
		c.APIVersion = APIVersion
	}
	if c.Kind == "" {
		c.Kind = Kind
	}
	if c.Metadata.Name == "" {
		c.Metadata.Name = "osguard"
	}
	if c.Metadata.Version == "" {
		c.Metadata.Version = "1"
	}
	s := &c.Spec
	if s.Rootfs.Init == "" {
		s.Rootfs.Init = "/sbin/init"
	}
	if s.Rootfs.AddOsguard == nil {
		t := true
		s.Rootfs.AddOsguard = &t
	}
	if s.IPE.Mode == "" {
		s.IPE.Mode = "enforce"
	}
	if s.SELinux.Mode == "" {
		s.SELinux.Mode = "off"
	}
	if s.Layout.ESPSize == "" {
		s.Layout.ESPSize = "64M"
	}
	if s.Layout.UsrSize == "" {
		s.Layout.UsrSize = "auto"
	}
	if s.Layout.Slots == 0 {
		s.Layout.Slots = 2
	}
	if s.Layout.VarSize == "" {
		s.Layout.VarSize = "64M"
	}
	if s.Flavour == "" {
		s.Flavour = FlavourGuard
	}
	if d := s.Rootfs.Debian; d != nil && d.Suite == "" {
		d.Suite = "trixie"
	}
	if a := s.Attestation; a != nil {
		if a.Verifier == "" {
			a.Verifier = DefaultVerifierURL
		}
		if a.Interval == "" {
			a.Interval = "5m"
		}
		if !slices.Contains(s.Kernel.Extra, "virtio_net") {
			// The network of 'osguard run': QEMU's virtio-net.
			s.Kernel.Extra = append(s.Kernel.Extra, "virtio_net")
		}
	}
	return c
}

// IPEPolicyVersion is the version of the generated IPE policy: the
// configured one, or the image version as MAJOR.MINOR.REVISION.
func (c *Config) IPEPolicyVersion() string {
	if v := c.Spec.IPE.PolicyVersion; v != "" {
		return v
	}
	parts := strings.Split(c.Metadata.Version, ".")
	if len(parts) > 3 {
		return "1.0.0"
	}
	out := []string{"0", "0", "0"}
	for i, p := range parts {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil {
			return "1.0.0"
		}
		out[i] = strconv.FormatUint(n, 10)
	}
	return strings.Join(out, ".")
}

// lineOf finds the line of a mapping key path such as "spec.ipe.mode".
func lineOf(node *yaml.Node, path string) int {
	n := node
	if n != nil && n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := 0
	for _, key := range strings.Split(path, ".") {
		if n == nil || n.Kind != yaml.MappingNode {
			return line
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == key {
				line, next = n.Content[i].Line, n.Content[i+1]
				break
			}
		}
		n = next
	}
	return line
}

// The flavours of spec.flavour.
const (
	FlavourGuard    = "guard"
	FlavourStandard = "standard"
)

// IPEOff is measurements.json's IPE mode for the standard flavour, which
// loads no IPE policy.
const IPEOff = "off"

var debNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+$`)

var debianPolicyRE = regexp.MustCompile(`^(default|mls)$`)

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$`)

func (c *Config) validate(node *yaml.Node) error {
	bad := func(path, format string, args ...any) error {
		msg := fmt.Sprintf(format, args...)
		if l := lineOf(node, path); l > 0 {
			return fmt.Errorf("config: line %d: %s: %s", l, path, msg)
		}
		return fmt.Errorf("config: %s: %s", path, msg)
	}
	if c.APIVersion != APIVersion {
		return bad("apiVersion", "%q is not supported (want %s)", c.APIVersion, APIVersion)
	}
	if c.Kind != Kind {
		return bad("kind", "%q is not supported (want %s)", c.Kind, Kind)
	}
	if !nameRE.MatchString(c.Metadata.Name) {
		return bad("metadata.name", "%q must be lowercase letters, digits, '.' or '-' (at most 63)", c.Metadata.Name)
	}
	s := c.Spec
	switch s.IPE.Mode {
	case "enforce", "audit":
	default:
		return bad("spec.ipe.mode", "%q must be enforce or audit", s.IPE.Mode)
	}
	switch s.SELinux.Mode {
	case "off":
	case "permissive", "enforcing":
		switch {
		case s.SELinux.DebianPolicy != "":
			if s.SELinux.Policy != "" || s.SELinux.FileContexts != "" {
				return bad("spec.selinux", "give either debianPolicy, or policy and fileContexts")
			}
			if s.Rootfs.Debian == nil {
				return bad("spec.selinux.debianPolicy", "needs a Debian rootfs (spec.rootfs.debian), whose suite the policy comes from")
			}
			if !debianPolicyRE.MatchString(s.SELinux.DebianPolicy) {
				return bad("spec.selinux.debianPolicy", "%q must be default or mls (the package selinux-policy-NAME)", s.SELinux.DebianPolicy)
			}
		case s.SELinux.Policy == "" || s.SELinux.FileContexts == "":
			return bad("spec.selinux", "mode %s needs debianPolicy, or policy and fileContexts", s.SELinux.Mode)
		}
	default:
		return bad("spec.selinux.mode", "%q must be off, permissive or enforcing", s.SELinux.Mode)
	}
	if s.Kernel.Deb != "" && (s.Kernel.Vmlinuz != "" || s.Kernel.Modules != "") {
		return bad("spec.kernel", "give either deb, or vmlinuz and modules")
	}
	if (s.Kernel.Vmlinuz == "") != (s.Kernel.Modules == "") {
		return bad("spec.kernel", "vmlinuz and modules go together")
	}
	switch s.Flavour {
	case FlavourGuard:
	case FlavourStandard:
		if s.SELinux.Mode != "off" {
			return bad("spec.flavour", "standard uses AppArmor, so selinux.mode must be off")
		}
	default:
		return bad("spec.flavour", "%q must be guard or standard", s.Flavour)
	}
	if d := s.Rootfs.Debian; d != nil {
		if s.Rootfs.Path != "" {
			return bad("spec.rootfs", "give either path or debian")
		}
		if len(d.Packages) == 0 {
			return bad("spec.rootfs.debian.packages", "name at least one package")
		}
		for _, p := range d.Packages {
			if !debNameRE.MatchString(p) {
				return bad("spec.rootfs.debian.packages", "%q is not a Debian package name", p)
			}
		}
		if !regexp.MustCompile(`^[a-z]+$`).MatchString(d.Suite) {
			return bad("spec.rootfs.debian.suite", "%q is not a suite name", d.Suite)
		}
	}
	if (len(s.Rootfs.Files) > 0 || len(s.Rootfs.Links) > 0) && s.Rootfs.Debian == nil {
		return bad("spec.rootfs", "files and links go with debian")
	}
	for p := range s.Rootfs.Links {
		if !strings.HasPrefix(p, "/") || strings.Contains(p, "..") || (!strings.HasPrefix(p, "/usr/") && !strings.HasPrefix(p, "/etc/")) {
			return bad("spec.rootfs.links", "%q must be an absolute path under /usr or /etc", p)
		}
	}
	for p := range s.Rootfs.Files {
		if !strings.HasPrefix(p, "/") || strings.Contains(p, "..") || (!strings.HasPrefix(p, "/usr/") && !strings.HasPrefix(p, "/etc/")) {
			return bad("spec.rootfs.files", "%q must be an absolute path under /usr or /etc", p)
		}
	}
	if s.Layout.Slots != 1 && s.Layout.Slots != 2 {
		return bad("spec.layout.slots", "%d must be 1 or 2", s.Layout.Slots)
	}
	for _, f := range []struct{ path, val string }{
		{"spec.layout.espSize", s.Layout.ESPSize}, {"spec.layout.varSize", s.Layout.VarSize},
	} {
		if _, err := ParseSize(f.val); err != nil {
			return bad(f.path, "%v", err)
		}
	}
	if s.Layout.UsrSize != "auto" {
		if _, err := ParseSize(s.Layout.UsrSize); err != nil {
			return bad("spec.layout.usrSize", "%v", err)
		}
	}
	if esp, _ := ParseSize(s.Layout.ESPSize); esp < 33<<20 {
		return bad("spec.layout.espSize", "%s is below the 33M a FAT32 ESP needs", s.Layout.ESPSize)
	}
	for _, h := range s.IPE.AllowRootHashes {
		if !regexp.MustCompile(`^sha(256|384|512|1):[0-9a-f]+$`).MatchString(h) {
			return bad("spec.ipe.allowRootHashes", "%q must be alg:lowercase-hex", h)
		}
	}
	if a := s.Attestation; a != nil {
		if u, err := url.Parse(a.Verifier); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return bad("spec.attestation.verifier", "%q must be an http:// or https:// URL", a.Verifier)
		}
		if d, err := time.ParseDuration(a.Interval); err != nil || d <= 0 {
			return bad("spec.attestation.interval", "%q must be a positive duration such as 5m", a.Interval)
		}
	}
	for _, a := range s.Cmdline {
		if strings.ContainsAny(a, " \t\n") || strings.HasPrefix(a, "usrhash=") {
			return bad("spec.cmdline", "%q: one argument per item, and usrhash= is set by the build", a)
		}
	}
	return nil
}

// Overrides are the build flags that change a config or profile.
type Overrides struct {
	SELinux, IPE, ImageVersion, Init, Flavour string
	DebugConsole                              bool
}

// Apply sets the overridden fields and checks the config again.
func (c *Config) Apply(o Overrides) error {
	if o.SELinux != "" {
		c.Spec.SELinux.Mode = o.SELinux
	}
	if o.IPE != "" {
		c.Spec.IPE.Mode = o.IPE
	}
	if o.ImageVersion != "" {
		c.Metadata.Version = o.ImageVersion
	}
	if o.Init != "" {
		if !strings.HasPrefix(o.Init, "/") {
			return fmt.Errorf("--init %s: must be an absolute path", o.Init)
		}
		c.Spec.Rootfs.Init = o.Init
	}
	if o.DebugConsole {
		c.Spec.DebugConsole = true
	}
	if o.Flavour != "" {
		c.Spec.Flavour = o.Flavour
		if o.Flavour == FlavourStandard && o.SELinux == "" {
			// The standard flavour's major LSM is AppArmor: a profile's
			// SELinux default gives way unless asked for explicitly.
			c.Spec.SELinux.Mode = "off"
		}
	}
	return c.validate(nil)
}

// ParseSize parses a size such as 64M, 1G, 4096 or 512K.
func ParseSize(s string) (int64, error) {
	mult := int64(1)
	num := strings.TrimSpace(s)
	if num == "" {
		return 0, errors.New("empty size")
	}
	if len(num) > 1 && strings.ContainsAny(num[len(num)-2:len(num)-1], "KMGkmg") && (num[len(num)-1] == 'i') {
		num = num[:len(num)-1] // Kubernetes-style Mi, Gi
	}
	switch strings.ToUpper(num[len(num)-1:]) {
	case "K":
		mult, num = 1<<10, num[:len(num)-1]
	case "M":
		mult, num = 1<<20, num[:len(num)-1]
	case "G":
		mult, num = 1<<30, num[:len(num)-1]
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > (1<<46)/mult {
		return 0, fmt.Errorf("%q is not a size (e.g. 64M, 1G)", s)
	}
	return n * mult, nil
}

// Path resolves a path from the config against the config file's directory.
func (c *Config) Path(p string) string {
	if p == "" || filepath.IsAbs(p) || c.dir == "" {
		return p
	}
	return filepath.Join(c.dir, p)
}

// EnableAttestation turns on spec.attestation with its defaults when the
// config does not set it (osguard build --attest).
func (c *Config) EnableAttestation() error {
	if c.Spec.Attestation == nil {
		c.Spec.Attestation = &Attestation{}
	}
	return c.defaults().validate(nil)
}
