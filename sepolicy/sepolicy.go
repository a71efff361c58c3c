package sepolicy

import (
	"archive/tar"
	"bytes"
	"compress/bzip2"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"

	"github.com/osguard/osguard/deb"
)

// PolicyVersion is the binary policy version Build writes: the highest
// Linux 6.12 loads (POLICYDB_VERSION_GLBLUB).
const PolicyVersion = 33

// ToolPackages are the Debian packages whose programs Build runs, named so
// that apt can resolve them with their libraries.
var ToolPackages = []string{"secilc", "policycoreutils"}

// DefaultDisabled are the modules selinux-policy-default's postinst disables
// on every machine ("notdefault": not needed on a Debian system).
var DefaultDisabled = []string{
	"aisexec", "amtu", "bugzilla", "cobbler", "condor", "cyphesis", "git", "ksmtuned",
	"likewise", "livecd", "nessus", "numad", "oddjob", "openca", "rlogin", "rshd",
	"soundserver", "telnet", "publicfile", "thunderbird", "updfstab", "usernetctl",
}

// Module is a CIL policy module of one's own.
type Module struct {
	Name string
	CIL  []byte
}

// Options say what Build compiles.
type Options struct {
	// PolicyDeb is the reference policy package (selinux-policy-default).
	PolicyDeb string
	// Flavour is the policy's name in the package (/usr/share/selinux/NAME);
	// empty means "default".
	Flavour string
	// ToolDebs are the packages holding secilc, hll/pp, the libraries they
	// link and libc6 with its loader.
	ToolDebs []string
	// Disabled modules of the package are left out.
	Disabled []string
	// Modules are added after the package's.
	Modules []Module
	// WorkDir is a directory Build may use; a temporary one when empty.
	WorkDir string
}

// Result is a compiled policy.
type Result struct {
	// Policy is the binary policy (policy.33).
	Policy []byte
	// FileContexts is contexts/files/file_contexts.
	FileContexts []byte
	// HomedirTemplate holds the file contexts of home directories.
	HomedirTemplate []byte
	// SubsDist is the package's file_contexts.subs_dist (path aliases for
	// the file contexts), or nil.
	SubsDist []byte
	// Modules names the modules compiled, in order.
	Modules []string
}

var moduleNameRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]*$`)

// Build compiles the policy.
func Build(o Options) (*Result, error) {
	if o.Flavour == "" {
		o.Flavour = "default"
	}
	work := o.WorkDir
	if work == "" {
		var err error
		if work, err = os.MkdirTemp("", "osguard-sepolicy-"); err != nil {
			return nil, fmt.Errorf("sepolicy: %w", err)
		}
		defer os.RemoveAll(work)
	}
	mods, err := readPolicyDeb(o.PolicyDeb, o.Flavour)
	if err != nil {
		return nil, fmt.Errorf("sepolicy: %s: %w", filepath.Base(o.PolicyDeb), err)
	}
	for _, m := range o.Modules {
		if !moduleNameRE.MatchString(m.Name) {
			return nil, fmt.Errorf("sepolicy: module name %q: letters, digits, _ and - only", m.Name)
		}
		if _, dup := mods.pp[m.Name]; dup {
			return nil, fmt.Errorf("sepolicy: module %s is also in %s", m.Name, filepath.Base(o.PolicyDeb))
		}
	}
	tools := filepath.Join(work, "tools")
	for _, d := range o.ToolDebs {
		if err := extract(d, tools, toolFile); err != nil {
			return nil, fmt.Errorf("sepolicy: %s: %w", filepath.Base(d), err)
		}
	}
	t, err := newToolset(tools)
	if err != nil {
		return nil, err
	}
	disabled := map[string]bool{}
	for _, d := range o.Disabled {
		disabled[d] = true
	}
	var names []string
	for _, m := range mods.order {
		if !disabled[m] {
			names = append(names, m)
		}
	}
	cilDir := filepath.Join(work, "cil")
	if err := os.MkdirAll(cilDir, 0o755); err != nil {
		return nil, fmt.Errorf("sepolicy: %w", err)
	}
	if err := t.convertAll(names, mods.pp, cilDir); err != nil {
		return nil, err
	}
	files := make([]string, 0, len(names)+len(o.Modules))
	for _, n := range names {
		files = append(files, filepath.Join(cilDir, n+".cil"))
	}
	res := &Result{Modules: names, SubsDist: mods.subsDist}
	for _, m := range o.Modules {
		p := filepath.Join(cilDir, "osguard-"+m.Name+".cil")
		if err := os.WriteFile(p, m.CIL, 0o644); err != nil {
			return nil, fmt.Errorf("sepolicy: %w", err)
		}
		files = append(files, p)
		res.Modules = append(res.Modules, m.Name)
	}
	pol, fc := filepath.Join(work, "policy"), filepath.Join(work, "file_contexts")
	args := append([]string{"-m", "-c", fmt.Sprint(PolicyVersion), "-o", pol, "-f", fc}, files...)
	if _, err := t.run("secilc", nil, args...); err != nil {
		return nil, err
	}
	if res.Policy, err = os.ReadFile(pol); err != nil {
		return nil, fmt.Errorf("sepolicy: %w", err)
	}
	all, err := os.ReadFile(fc)
	if err != nil {
		return nil, fmt.Errorf("sepolicy: %w", err)
	}
	res.FileContexts, res.HomedirTemplate = SplitFileContexts(all)
	return res, nil
}

// SplitFileContexts separates the home directory templates from the file
// contexts, as libsemanage's semanage_split_fc does: a line that starts with
// HOME_DIR or HOME_ROOT, or names USER or ROLE, is a template.
func SplitFileContexts(all []byte) (fc, homedir []byte) {
	var a, b bytes.Buffer
	for _, line := range strings.SplitAfter(string(all), "\n") {
		if line == "" {
			continue
		}
		if strings.HasPrefix(line, "HOME_DIR") || strings.HasPrefix(line, "HOME_ROOT") ||
			strings.Contains(line, "USER") || strings.Contains(line, "ROLE") {
			b.WriteString(line)
		} else {
			a.WriteString(line)
		}
	}
	return a.Bytes(), b.Bytes()
}

// policyModules are the compressed .pp modules of a policy package.
type policyModules struct {
	order    []string
	pp       map[string][]byte
	subsDist []byte
}

// maxModule bounds one module read from the package (the largest in
// refpolicy, base.pp.bz2, is about 400 KB).
const maxModule = 32 << 20

func readPolicyDeb(debPath, flavour string) (*policyModules, error) {
	dir := "usr/share/selinux/" + flavour + "/"
	subs := "etc/selinux/" + flavour + "/contexts/files/file_contexts.subs_dist"
	m := &policyModules{pp: map[string][]byte{}}
	var list []byte
	err := walkData(debPath, func(name string, h *tar.Header, r io.Reader) error {
		if name == subs && h.Typeflag == tar.TypeReg {
			var err error
			m.subsDist, err = io.ReadAll(io.LimitReader(r, maxModule))
			return err
		}
		if !strings.HasPrefix(name, dir) || h.Typeflag != tar.TypeReg {
			return nil
		}
		base := strings.TrimPrefix(name, dir)
		if strings.Contains(base, "/") {
			return nil
		}
		b, err := io.ReadAll(io.LimitReader(r, maxModule+1))
		if err != nil {
			return err
		}
		if len(b) > maxModule {
			return fmt.Errorf("%s is larger than %d bytes", name, maxModule)
		}
		switch {
		case base == ".modules":
			list = b
		case strings.HasSuffix(base, ".pp.bz2"):
			m.pp[strings.TrimSuffix(base, ".pp.bz2")] = b
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if list == nil {
		return nil, fmt.Errorf("no %s.modules: not a reference policy package of flavour %s", dir, flavour)
	}
	seen := map[string]bool{}
	for _, n := range strings.Fields(string(list)) {
		if seen[n] {
			continue
		}
		seen[n] = true
		if _, ok := m.pp[n]; !ok {
			return nil, fmt.Errorf("%s.modules names %s, but there is no %s.pp.bz2", dir, n, n)
		}
		m.order = append(m.order, n)
	}
	// libsemanage compiles the modules in name order; base first is what
	// the CIL compiler needs least, but keep its order too.
	sort.Strings(m.order)
	return m, nil
}

// toolFile selects what Build needs of the tool packages: the loader, the
// libraries and the two programs.
func toolFile(name string) bool {
	switch {
	case strings.HasPrefix(name, "usr/lib/x86_64-linux-gnu/"), strings.HasPrefix(name, "lib/x86_64-linux-gnu/"):
		return true
	case name == "usr/bin/secilc", name == "usr/libexec/selinux/hll/pp":
		return true
	}
	return false
}

// extract unpacks the regular files and symlinks of a package's data that
// keep says are wanted, merging /lib into /usr/lib.
func extract(debPath, dst string, keep func(string) bool) error {
	return walkData(debPath, func(name string, h *tar.Header, r io.Reader) error {
		if strings.HasPrefix(name, "lib/") {
			name = "usr/" + name
		}
		if !keep(name) {
			return nil
		}
		to := filepath.Join(dst, filepath.FromSlash(name))
		switch h.Typeflag {
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
				return err
			}
			f, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
			if err != nil {
				return err
			}
			if _, err := io.Copy(f, r); err != nil {
				f.Close()
				return err
			}
			return f.Close()
		case tar.TypeSymlink:
			if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
				return err
			}
			os.Remove(to)
			return os.Symlink(h.Linkname, to)
		}
		return nil
	})
}

// walkData calls fn for each entry of a package's data.tar, with the path
// cleaned and without its leading "./".
func walkData(debPath string, fn func(name string, h *tar.Header, r io.Reader) error) error {
	d, err := deb.Open(debPath)
	if err != nil {
		return err
	}
	defer d.Close()
	tr, closer, err := d.Member("data.tar")
	if err != nil {
		return err
	}
	defer closer.Close()
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("data.tar: %w", err)
		}
		name := strings.TrimPrefix(path.Clean("/"+h.Name), "/")
		if name == "" || strings.HasPrefix(name, "../") {
			continue
		}
		if err := fn(name, h, tr); err != nil {
			return err
		}
	}
}

// toolset runs the suite's programs through the suite's loader.
type toolset struct {
	loader, libs string
	progs        map[string]string
}

func newToolset(root string) (*toolset, error) {
	libs := filepath.Join(root, "usr/lib/x86_64-linux-gnu")
	t := &toolset{
		loader: filepath.Join(libs, "ld-linux-x86-64.so.2"), libs: libs,
		progs: map[string]string{
			"secilc": filepath.Join(root, "usr/bin/secilc"),
			"pp":     filepath.Join(root, "usr/libexec/selinux/hll/pp"),
		},
	}
	for _, p := range append([]string{t.loader}, t.progs["secilc"], t.progs["pp"]) {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("sepolicy: the tool packages (libc6 and %s with their libraries) lack %s", strings.Join(ToolPackages, ", "), strings.TrimPrefix(p, root+"/"))
		}
	}
	return t, nil
}

func (t *toolset) run(prog string, stdin io.Reader, args ...string) ([]byte, error) {
	cmd := exec.Command(t.loader, append([]string{"--library-path", t.libs, t.progs[prog]}, args...)...)
	cmd.Stdin = stdin
	cmd.Env = []string{"LC_ALL=C", "PATH=/usr/bin:/bin"}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 2000 {
			msg = msg[:2000] + " ..."
		}
		return nil, fmt.Errorf("sepolicy: %s: %w: %s", prog, err, msg)
	}
	return stdout.Bytes(), nil
}

// convertAll turns each module's .pp into dir/NAME.cil, two at a time.
func (t *toolset) convertAll(names []string, pp map[string][]byte, dir string) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	next := make(chan string)
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range next {
				err := t.convert(n, pp[n], filepath.Join(dir, n+".cil"))
				if err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for _, n := range names {
		next <- n
	}
	close(next)
	wg.Wait()
	return first
}

func (t *toolset) convert(name string, ppBz2 []byte, out string) error {
	raw, err := io.ReadAll(io.LimitReader(bzip2.NewReader(bytes.NewReader(ppBz2)), 8*maxModule))
	if err != nil {
		return fmt.Errorf("sepolicy: module %s: bzip2: %w", name, err)
	}
	cil, err := t.run("pp", bytes.NewReader(raw))
	if err != nil {
		return fmt.Errorf("sepolicy: module %s: %w", name, err)
	}
	if len(cil) == 0 {
		return errors.New("sepolicy: module " + name + ": hll/pp wrote nothing")
	}
	return os.WriteFile(out, cil, 0o644)
}
