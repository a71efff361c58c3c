// Package debroot makes the root file system of a node from Debian binary
// packages, without root on the build host and without running any
// maintainer script.
//
// Why not mmdebstrap --mode=unshare or debootstrap: both run the packages'
// maintainer scripts, which needs root or a user namespace with subordinate
// ids on the build host, takes a minute for a container host, and writes
// clock-dependent and random state (logs, machine-id, caches) that has to be
// scrubbed afterwards to get reproducible bytes. An osguard node needs little
// of what those scripts do, because its /usr is read-only and its root is a
// tmpfs built anew at every boot: systemd does the rest there, the way it does
// on any stateless system. systemd-sysusers creates the system users from
// /usr/lib/sysusers.d, systemd-tmpfiles creates /var and /run, systemd makes
// /etc/machine-id, and ldconfig.service and systemd-hwdb-update.service
// build their caches. What remains is done here, from the packages' own data:
//
//   - base-passwd's users and groups (passwd.master, group.master) become
//     /etc/passwd, group, shadow and gshadow, with every password locked;
//   - update-alternatives --install calls in postinst scripts become the
//     links they would make, the highest priority winning;
//   - ca-certificates' bundle /etc/ssl/certs/ca-certificates.crt is the
//     concatenation of the certificates the package ships;
//   - the units to enable get the links of their [Install] section;
//   - /var/lib/dpkg/status lists every package as installed (for the SBOM).
//
// Files of the packages that are outside /usr (merged-/usr stragglers in
// /bin, /sbin, /lib*) move under /usr, as Debian's usrmerge does.
//
// The output is one uncompressed tar, written in package name order, so that
// the same packages give the same bytes.
package debroot

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/osguard/osguard/deb"
	"github.com/osguard/osguard/internal/tarfs"
)

// Options say what goes into the root.
type Options struct {
	// Debs are the package files; each is read once, in the order given
	// (sort them for reproducible output).
	Debs []string
	// Enable names systemd units (in /usr/lib/systemd/system) to enable.
	Enable []string
	// Files are added last, replacing any file of the packages: path (no
	// leading slash) to content.
	Files map[string][]byte
	// Links are symbolic links added last: path (no leading slash) to target.
	Links map[string]string
	// Epoch is the modification time of generated files (Unix seconds).
	Epoch int64
}

// Package is one unpacked package, from its control file.
type Package struct {
	Name, Version, Architecture, Source, Homepage, Maintainer string
	// Control is the control paragraph, as dpkg's status file holds it.
	Control string
}

// Result describes a written root.
type Result struct {
	Packages []Package
	// Alternatives maps an alternative's name to the path it points at.
	Alternatives map[string]string
	// Enabled lists the links made for the units to enable.
	Enabled []string
}

// keepAlways names the package files the generated files are made from.
var keepAlways = map[string]bool{
	"usr/share/base-passwd/passwd.master": true,
	"usr/share/base-passwd/group.master":  true,
}

const unitDir = "usr/lib/systemd/system/"

type writer struct {
	o       Options
	tw      *tar.Writer
	res     *Result
	emitted map[string]byte // path -> tar type flag
	keep    map[string]bool // package files to keep in memory
	kept    map[string][]byte
	alts    map[string]alternative
	certs   []string // paths of ca-certificates' certificates
}

type alternative struct {
	link, path string
	priority   int
}

// Write writes the root made of o.Debs to w as a tar stream.
func Write(w io.Writer, o Options) (*Result, error) {
	wr := &writer{
		o: o, tw: tar.NewWriter(w), res: &Result{Alternatives: map[string]string{}},
		emitted: map[string]byte{}, keep: map[string]bool{}, kept: map[string][]byte{}, alts: map[string]alternative{},
	}
	for k := range keepAlways {
		wr.keep[k] = true
	}
	for _, u := range o.Enable {
		wr.keep[unitDir+u] = true
	}
	for _, p := range o.Debs {
		if err := wr.unpack(p); err != nil {
			return nil, fmt.Errorf("debroot: %s: %w", path.Base(p), err)
		}
	}
	if err := wr.generate(); err != nil {
		return nil, fmt.Errorf("debroot: %w", err)
	}
	if err := wr.tw.Close(); err != nil {
		return nil, fmt.Errorf("debroot: %w", err)
	}
	return wr.res, nil
}

func (wr *writer) unpack(debPath string) error {
	d, err := deb.Open(debPath)
	if err != nil {
		return err
	}
	defer d.Close()
	ctl, closer, err := d.Member("control.tar")
	if err != nil {
		return err
	}
	pkg, postinst, err := readControl(ctl)
	closer.Close()
	if err != nil {
		return fmt.Errorf("control.tar: %w", err)
	}
	data, closer, err := d.Member("data.tar")
	if err != nil {
		return err
	}
	defer closer.Close()
	if err := wr.copyData(data); err != nil {
		return fmt.Errorf("data.tar: %w", err)
	}
	wr.res.Packages = append(wr.res.Packages, *pkg)
	for _, a := range parseAlternatives(postinst) {
		if cur, ok := wr.alts[a.name]; !ok || a.priority > cur.priority {
			wr.alts[a.name] = a.alternative
		}
	}
	return nil
}

// maxControlFile bounds a file read from control.tar.
const maxControlFile = 4 << 20

func readControl(tr *tar.Reader) (*Package, []byte, error) {
	var control, postinst []byte
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, nil, err
		}
		name := path.Clean(strings.TrimPrefix(h.Name, "./"))
		if name != "control" && name != "postinst" {
			continue
		}
		if h.Size > maxControlFile {
			return nil, nil, fmt.Errorf("%s: %d bytes is too large", name, h.Size)
		}
		b, err := io.ReadAll(io.LimitReader(tr, maxControlFile))
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", name, err)
		}
		if name == "control" {
			control = b
		} else {
			postinst = b
		}
	}
	if control == nil {
		return nil, nil, errors.New("no control file")
	}
	pkg, err := ParseControl(control)
	return pkg, postinst, err
}

// ParseControl reads a package's control paragraph.
func ParseControl(b []byte) (*Package, error) {
	p := &Package{Control: strings.TrimRight(string(b), "\n")}
	for _, line := range strings.Split(p.Control, "\n") {
		if line == "" || line[0] == ' ' || line[0] == '\t' {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("control: malformed line %q", line)
		}
		v = strings.TrimSpace(v)
		switch k {
		case "Package":
			p.Name = v
		case "Version":
			p.Version = v
		case "Architecture":
			p.Architecture = v
		case "Source":
			p.Source = v
		case "Homepage":
			p.Homepage = v
		case "Maintainer":
			p.Maintainer = v
		}
	}
	if p.Name == "" || p.Version == "" {
		return nil, errors.New("control: no Package or Version field")
	}
	return p, nil
}

// usrName maps a package path to where it lives on a merged-/usr node.
// ok is false for what the node makes itself: the top-level compatibility
// links /bin -> usr/bin and friends.
func usrName(name string, typ byte) (string, bool) {
	top, rest, _ := strings.Cut(name, "/")
	switch top {
	case "bin", "sbin", "lib", "lib32", "lib64", "libx32":
		if rest == "" && (typ == tar.TypeSymlink || typ == tar.TypeDir) {
			return "", false
		}
		return "usr/" + name, true
	}
	return name, true
}

func (wr *writer) copyData(tr *tar.Reader) error {
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if h.Typeflag == tar.TypeXGlobalHeader {
			continue
		}
		name, err := tarfs.Clean(h.Name)
		if err != nil {
			return err
		}
		if name == "" || name == "." {
			continue
		}
		name, ok := usrName(name, h.Typeflag)
		if !ok {
			continue
		}
		if h.Typeflag == tar.TypeLink {
			target, err := tarfs.Clean(h.Linkname)
			if err != nil {
				return fmt.Errorf("hard link %s: %w", name, err)
			}
			h.Linkname, _ = usrName(target, tar.TypeReg)
		}
		if h.Typeflag == tar.TypeDir {
			if _, done := wr.emitted[name]; done {
				continue // shared directories: the first package's metadata
			}
		}
		if strings.HasPrefix(name, "usr/share/ca-certificates/") && strings.HasSuffix(name, ".crt") && h.Typeflag == tar.TypeReg {
			wr.certs = append(wr.certs, name)
			wr.keep[name] = true
		}
		if wr.keep[name] && h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(io.LimitReader(tr, maxControlFile+1))
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			if len(b) > maxControlFile {
				return fmt.Errorf("%s: larger than %d bytes", name, maxControlFile)
			}
			wr.kept[name] = b
			if err := wr.header(name, h); err != nil {
				return err
			}
			if _, err := wr.tw.Write(b); err != nil {
				return err
			}
			continue
		}
		if err := wr.header(name, h); err != nil {
			return err
		}
		if h.Typeflag == tar.TypeReg || h.Typeflag == tar.TypeRegA {
			if _, err := io.Copy(wr.tw, tr); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
	}
}

func (wr *writer) header(name string, h *tar.Header) error {
	out := &tar.Header{
		Typeflag: h.Typeflag, Name: name, Linkname: h.Linkname, Size: h.Size,
		Mode: h.Mode, Uid: h.Uid, Gid: h.Gid, ModTime: h.ModTime,
		Devmajor: h.Devmajor, Devminor: h.Devminor, Format: tar.FormatPAX,
	}
	if out.Typeflag == tar.TypeRegA {
		out.Typeflag = tar.TypeReg
	}
	if out.Typeflag != tar.TypeReg {
		out.Size = 0
	}
	for k, v := range h.PAXRecords {
		if strings.HasPrefix(k, "SCHILY.xattr.") {
			if out.PAXRecords == nil {
				out.PAXRecords = map[string]string{}
			}
			out.PAXRecords[k] = v
		}
	}
	if out.Typeflag == tar.TypeDir {
		out.Name += "/"
	}
	wr.emitted[name] = out.Typeflag
	if err := wr.tw.WriteHeader(out); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

type namedAlternative struct {
	name string
	alternative
}

// installRE matches 'update-alternatives --install LINK NAME PATH PRIORITY'
// once shell line continuations are joined; --slave parts are ignored.
var installRE = regexp.MustCompile(`update-alternatives\s+(?:--quiet\s+)?--install\s+(/\S+)\s+([A-Za-z0-9_.+-]+)\s+(/\S+)\s+(\d+)`)

func parseAlternatives(postinst []byte) []namedAlternative {
	if len(postinst) == 0 {
		return nil
	}
	text := strings.ReplaceAll(string(postinst), "\\\n", " ")
	var out []namedAlternative
	for _, m := range installRE.FindAllStringSubmatch(text, -1) {
		prio, err := strconv.Atoi(m[4])
		if err != nil {
			continue
		}
		out = append(out, namedAlternative{name: m[2], alternative: alternative{link: m[1], path: m[3], priority: prio}})
	}
	return out
}

// generate writes what the maintainer scripts would have made.
func (wr *writer) generate() error {
	mtime := time.Unix(wr.o.Epoch, 0).UTC()
	dir := func(name string) error {
		for _, d := range parents(name) {
			if _, ok := wr.emitted[d]; ok {
				continue
			}
			if err := wr.header(d, &tar.Header{Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mtime}); err != nil {
				return err
			}
		}
		return nil
	}
	file := func(name string, mode int64, data []byte) error {
		if err := dir(name); err != nil {
			return err
		}
		if err := wr.header(name, &tar.Header{Typeflag: tar.TypeReg, Mode: mode, Size: int64(len(data)), ModTime: mtime}); err != nil {
			return err
		}
		_, err := wr.tw.Write(data)
		return err
	}
	symlink := func(name, target string) error {
		if err := dir(name); err != nil {
			return err
		}
		return wr.header(name, &tar.Header{Typeflag: tar.TypeSymlink, Linkname: target, Mode: 0o777, ModTime: mtime})
	}

	// Users and groups: base-passwd's masters, passwords locked.
	if pw, ok := wr.kept["usr/share/base-passwd/passwd.master"]; ok {
		gr := wr.kept["usr/share/base-passwd/group.master"]
		shadow, gshadow := lockedShadow(pw, wr.o.Epoch), lockedShadow(gr, -1)
		for _, f := range []struct {
			name string
			mode int64
			data []byte
		}{{"etc/passwd", 0o644, pw}, {"etc/group", 0o644, gr}, {"etc/shadow", 0o640, shadow}, {"etc/gshadow", 0o640, gshadow}} {
			if err := file(f.name, f.mode, f.data); err != nil {
				return err
			}
		}
	}

	// Alternatives, by name.
	names := make([]string, 0, len(wr.alts))
	for n := range wr.alts {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		a := wr.alts[n]
		link, _ := usrName(strings.TrimPrefix(a.link, "/"), tar.TypeSymlink)
		if _, exists := wr.emitted[link]; exists {
			continue
		}
		if err := symlink("etc/alternatives/"+n, a.path); err != nil {
			return err
		}
		if err := symlink(link, "/etc/alternatives/"+n); err != nil {
			return err
		}
		wr.res.Alternatives[n] = a.path
	}

	// The CA bundle.
	if len(wr.certs) > 0 {
		sort.Strings(wr.certs)
		var bundle bytes.Buffer
		for _, c := range wr.certs {
			b := wr.kept[c]
			bundle.Write(b)
			if len(b) > 0 && b[len(b)-1] != '\n' {
				bundle.WriteByte('\n')
			}
		}
		if err := file("etc/ssl/certs/ca-certificates.crt", 0o644, bundle.Bytes()); err != nil {
			return err
		}
	}

	// Units to enable.
	for _, u := range wr.o.Enable {
		unit, ok := wr.kept[unitDir+u]
		if !ok {
			return fmt.Errorf("unit %s to enable is not in %s of any package", u, unitDir)
		}
		wanted, err := installTargets(unit)
		if err != nil {
			return fmt.Errorf("unit %s: %w", u, err)
		}
		if len(wanted) == 0 {
			return fmt.Errorf("unit %s has no [Install] WantedBy= or RequiredBy=", u)
		}
		for _, w := range wanted {
			l := "etc/systemd/system/" + w + "/" + u
			if err := symlink(l, "/"+unitDir+u); err != nil {
				return err
			}
			wr.res.Enabled = append(wr.res.Enabled, "/"+l)
		}
	}

	// dpkg's status, for the SBOM and for anyone who asks dpkg on the node.
	var status bytes.Buffer
	pkgs := append([]Package(nil), wr.res.Packages...)
	sort.Slice(pkgs, func(i, j int) bool { return pkgs[i].Name < pkgs[j].Name })
	for _, p := range pkgs {
		status.WriteString(statusParagraph(p.Control))
		status.WriteString("\n\n")
	}
	if err := file("var/lib/dpkg/status", 0o644, status.Bytes()); err != nil {
		return err
	}

	// Extra files and links, last.
	extra := make([]string, 0, len(wr.o.Files))
	for n := range wr.o.Files {
		extra = append(extra, n)
	}
	sort.Strings(extra)
	for _, n := range extra {
		if err := file(strings.TrimPrefix(n, "/"), 0o644, wr.o.Files[n]); err != nil {
			return err
		}
	}
	extra = extra[:0]
	for n := range wr.o.Links {
		extra = append(extra, n)
	}
	sort.Strings(extra)
	for _, n := range extra {
		if err := symlink(strings.TrimPrefix(n, "/"), wr.o.Links[n]); err != nil {
			return err
		}
	}
	return nil
}

// statusParagraph puts "Status: install ok installed" after the Package line.
func statusParagraph(control string) string {
	first, rest, _ := strings.Cut(control, "\n")
	return first + "\nStatus: install ok installed\n" + rest
}

// lockedShadow makes a shadow (lastChange >= 0) or gshadow file for the
// names of a passwd or group file, with every password locked.
func lockedShadow(src []byte, lastChange int64) []byte {
	var b bytes.Buffer
	for _, line := range strings.Split(strings.TrimRight(string(src), "\n"), "\n") {
		name, _, ok := strings.Cut(line, ":")
		if !ok || name == "" {
			continue
		}
		if lastChange >= 0 {
			fmt.Fprintf(&b, "%s:*:%d:0:99999:7:::\n", name, lastChange/86400)
		} else {
			fmt.Fprintf(&b, "%s:*::\n", name)
		}
	}
	return b.Bytes()
}

// installTargets reads the .wants/.requires directories a unit's [Install]
// section asks for.
func installTargets(unit []byte) ([]string, error) {
	var out []string
	section := ""
	for _, line := range strings.Split(string(unit), "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "[") {
			section = line
			continue
		}
		if section != "[Install]" {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		suffix := ""
		switch strings.TrimSpace(k) {
		case "WantedBy":
			suffix = ".wants"
		case "RequiredBy":
			suffix = ".requires"
		default:
			continue
		}
		for _, t := range strings.Fields(v) {
			out = append(out, t+suffix)
		}
	}
	return out, nil
}

// parents lists the directories above name, outermost first.
func parents(name string) []string {
	var out []string
	for d := path.Dir(name); d != "." && d != "/"; d = path.Dir(d) {
		out = append([]string{d}, out...)
	}
	return out
}
