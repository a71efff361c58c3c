package selinux_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/osguard/osguard/internal/artifacts"
	"github.com/osguard/osguard/internal/testutil"
	"github.com/osguard/osguard/selinux"
)

const debianFC = "/etc/selinux/default/contexts/files/file_contexts"

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"bad type", "/a -x system_u:object_r:a_t:s0\n", "invalid file type"},
		{"fields", "/a b c d\n", "want 2 or 3 fields"},
		{"regex", "/a(  system_u:object_r:a_t:s0\n", "regex"},
		{"backref", `/(a)\1 system_u:object_r:a_t:s0` + "\n", "regex"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := selinux.ParseSpecs(strings.NewReader(tc.in), "x")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// TestPrecedence checks the libselinux ordering rules on a small file with
// matchpathcon as the oracle.
func TestPrecedence(t *testing.T) {
	mp := testutil.NeedTool(t, "matchpathcon")[0]
	dir := t.TempDir()
	fc := filepath.Join(dir, "file_contexts")
	body := `# comment
/.*			system_u:object_r:default_t:s0
/xq(/.*)?		system_u:object_r:a_t:s0
/xq/exact		system_u:object_r:exact_t:s0
/xq/exact(/.*)?		system_u:object_r:later_regex_t:s0
/xq/d(/.*)?	-d	system_u:object_r:dir_t:s0
/xq/d/[^/]+	--	system_u:object_r:reg_t:s0
/xq/d/l.*	-l	system_u:object_r:lnk_t:s0
/xq/none(/.*)?		<<none>>
/xq/p	-p	system_u:object_r:fifo_t:s0
/xq/s	-s	system_u:object_r:sock_t:s0
/xq/c	-c	system_u:object_r:chr_t:s0
/xq/b	-b	system_u:object_r:blk_t:s0
/xq/dup	system_u:object_r:first_t:s0
/xq/dup	system_u:object_r:second_t:s0
/xq/a\.b	system_u:object_r:esc_t:s0
/xqalias/.*	system_u:object_r:alias_t:s0
`
	if err := os.WriteFile(fc, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(fc+".local", []byte("/xq/local\tsystem_u:object_r:local_t:s0\n/xq/exact\tsystem_u:object_r:local_exact_t:s0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(fc+".subs_dist", []byte("/xqa /xqalias\n/xqa/deeper /xq/d\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := selinux.LoadFileContexts(fc)
	if err != nil {
		t.Fatal(err)
	}
	var paths []pathType
	for _, p := range []string{"/xq", "/xq/exact", "/xq/exact/sub", "/xq/d", "/xq/d/f", "/xq/d/lnk", "/xq/none",
		"/xq/none/x", "/xq/p", "/xq/s", "/xq/c", "/xq/b", "/xq/dup", "/xq/a.b", "/xq/axb", "/xq/local",
		"/xq//d//f", "/xqa/f", "/xqa/deeper/f", "/xqa", "/nothing"} {
		for _, m := range []fs.FileMode{0, fs.ModeDir, fs.ModeSymlink, fs.ModeNamedPipe, fs.ModeSocket,
			fs.ModeDevice | fs.ModeCharDevice, fs.ModeDevice} {
			paths = append(paths, pathType{p, m})
		}
	}
	n, diffs := compareWithMatchpathcon(t, mp, fc, c, paths)
	for _, d := range diffs {
		t.Error(d)
	}
	t.Logf("%d lookups equal matchpathcon", n)
}

type pathType struct {
	path string
	mode fs.FileMode
}

var mpType = map[selinux.Type]string{
	selinux.TypeRegular: "file", selinux.TypeDir: "dir", selinux.TypeSymlink: "lnk_file",
	selinux.TypeFifo: "pipe", selinux.TypeSocket: "sock_file", selinux.TypeChar: "chr_file",
	selinux.TypeBlock: "blk_file",
}

// hostKey is the path matchpathcon really looks up: it calls realpath(3) on
// paths that exist on this host (only on the parent for symlinks).
func hostKey(p string, mode fs.FileMode) string {
	if mode&fs.ModeSymlink != 0 {
		d, err := filepath.EvalSymlinks(filepath.Dir(p))
		if err != nil {
			return p
		}
		return filepath.Join(d, filepath.Base(p))
	}
	r, err := filepath.EvalSymlinks(p)
	if err != nil {
		return p
	}
	return r
}

// compareWithMatchpathcon runs matchpathcon once per file type over all
// paths and compares with our Lookup of the same (host-resolved) key.
func compareWithMatchpathcon(t *testing.T, mp, fc string, c *selinux.Contexts, paths []pathType) (int, []string) {
	t.Helper()
	byType := map[selinux.Type][]string{}
	for _, p := range paths {
		byType[selinux.TypeOf(p.mode)] = append(byType[selinux.TypeOf(p.mode)], p.path)
	}
	var diffs []string
	n := 0
	for typ, list := range byType {
		var in bytes.Buffer
		for _, p := range list {
			in.WriteString(p + "\n")
		}
		cmd := exec.Command("xargs", "-d", "\n", mp, "-N", "-f", fc, "-m", mpType[typ])
		cmd.Stdin = &in
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("matchpathcon: %v", err)
		}
		sc := bufio.NewScanner(bytes.NewReader(out))
		i := 0
		for sc.Scan() {
			line := sc.Text()
			tab := strings.LastIndexByte(line, '\t')
			if tab < 0 || i >= len(list) {
				t.Fatalf("unexpected matchpathcon line %q", line)
			}
			p, want := list[i], line[tab+1:]
			if line[:tab] != p {
				t.Fatalf("matchpathcon out of step: %q vs %q", line[:tab], p)
			}
			mode := fs.FileMode(0)
			for m, name := range map[fs.FileMode]string{0: "file", fs.ModeDir: "dir", fs.ModeSymlink: "lnk_file",
				fs.ModeNamedPipe: "pipe", fs.ModeSocket: "sock_file", fs.ModeDevice | fs.ModeCharDevice: "chr_file",
				fs.ModeDevice: "blk_file"} {
				if name == mpType[typ] {
					mode = m
				}
			}
			got, ok := c.Lookup(hostKey(p, mode), mode)
			if !ok {
				got = selinux.None
			}
			if got != want {
				diffs = append(diffs, fmt.Sprintf("%s (%s): ours %s, matchpathcon %s", p, mpType[typ], got, want))
			}
			i++
			n++
		}
		if i != len(list) {
			t.Fatalf("matchpathcon gave %d lines for %d paths", i, len(list))
		}
	}
	return n, diffs
}

// TestDebianRootfs labels every path of a Debian trixie tree unpacked from
// packages (and the host's own /etc and /usr/lib/systemd) and compares with
// matchpathcon on Debian's refpolicy file_contexts.
func TestDebianRootfs(t *testing.T) {
	mp := testutil.NeedTool(t, "matchpathcon")[0]
	testutil.NeedFile(t, debianFC)
	if testing.Short() {
		t.Skip("long: walks a Debian tree")
	}
	c, err := selinux.LoadFileContexts(debianFC)
	if err != nil {
		t.Fatal(err)
	}
	roots := debianRoots(t)
	seen := map[string]fs.FileMode{}
	for _, root := range roots {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			abs := "/" + filepath.ToSlash(rel)
			if rel == "." {
				abs = "/"
			}
			if strings.ContainsAny(abs, "\n") {
				return nil
			}
			if _, ok := seen[abs]; !ok {
				seen[abs] = d.Type()
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	// The refpolicy also labels device nodes, fifos and sockets, which
	// packages rarely ship, and many more Debian paths: add those of this
	// host (Debian 12) too.
	for _, p := range []string{"/dev", "/run", "/etc", "/var", "/usr/bin", "/usr/sbin", "/usr/libexec",
		"/usr/lib/systemd", "/usr/lib/x86_64-linux-gnu", "/usr/share/doc", "/opt", "/srv", "/boot", "/home"} {
		_ = filepath.WalkDir(p, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return fs.SkipDir
			}
			if _, ok := seen[p]; !ok && !strings.Contains(p, "\n") {
				seen[p] = d.Type()
			}
			return nil
		})
	}
	var paths []pathType
	for p, m := range seen {
		paths = append(paths, pathType{p, m})
	}
	sort.Slice(paths, func(i, j int) bool { return paths[i].path < paths[j].path })
	n, diffs := compareWithMatchpathcon(t, mp, debianFC, c, paths)
	for i, d := range diffs {
		if i == 20 {
			t.Errorf("... and %d more", len(diffs)-20)
			break
		}
		t.Error(d)
	}
	resolved := 0
	for _, p := range paths {
		if hostKey(p.path, p.mode) != p.path {
			resolved++
		}
	}
	t.Logf("labels of %d paths (%d trees) equal matchpathcon's; %d of them were resolved through host symlinks as matchpathcon does",
		n, len(roots), resolved)
	if n < 1000 {
		t.Fatalf("only %d paths compared", n)
	}
	checkSelabelLookup(t, c, paths)
}

// checkSelabelLookup compares paths whose matchpathcon result depended on
// the host's symlinks with selabel_lookup(8), which does no realpath.
func checkSelabelLookup(t *testing.T, c *selinux.Contexts, paths []pathType) {
	sl := testutil.NeedTool(t, "selabel_lookup")[0]
	checked := 0
	for _, p := range paths {
		if hostKey(p.path, p.mode) == p.path && checked >= 20 {
			continue
		}
		if checked >= 300 {
			break
		}
		typ := uint32(selinux.TypeOf(p.mode))
		out, err := exec.Command(sl, "-b", "file", "-r", "-k", p.path, "-t", strconv.FormatUint(uint64(typ), 10), "-f", debianFC).CombinedOutput()
		want := selinux.None
		if s := strings.TrimSpace(string(out)); err == nil && strings.HasPrefix(s, "Default context: ") {
			want = strings.TrimPrefix(s, "Default context: ")
		} else if !strings.Contains(s, "No such file") {
			t.Fatalf("selabel_lookup %s: %v: %s", p.path, err, out)
		}
		got, ok := c.Lookup(p.path, p.mode)
		if !ok {
			got = selinux.None
		}
		if got != want {
			t.Errorf("%s: ours %s, selabel_lookup %s", p.path, got, want)
		}
		checked++
	}
	t.Logf("%d paths also equal selabel_lookup's", checked)
}

// debianRoots returns unpacked trixie packages (fetched with
// scripts/fetch-debian) plus host directories as a fallback source of paths.
func debianRoots(t *testing.T) []string {
	top, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	pkgs := []string{"base-files", "bash", "coreutils", "util-linux", "dpkg", "login", "passwd",
		"openssh-server", "apt", "sudo", "cron", "dbus", "udev", "systemd", "libc6"}
	cache := filepath.Join(top, ".cache/debian/trixie/root")
	var missing []string
	for _, p := range pkgs {
		if _, err := os.Stat(filepath.Join(cache, p)); err != nil {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		cmd := exec.Command(filepath.Join(top, "scripts/fetch-debian"), append([]string{"--extract"}, missing...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			testutil.Missing(t, "fetch-debian %v: %v\n%s", missing, err, out)
		}
	}
	var roots []string
	if a, err := artifacts.Load(); err == nil && a.KernelRoot != "" {
		roots = append(roots, a.KernelRoot)
	}
	for _, p := range pkgs {
		roots = append(roots, filepath.Join(cache, p))
	}
	return roots
}

func FuzzParseSpecs(f *testing.F) {
	f.Add("/usr(/.*)?\tsystem_u:object_r:usr_t:s0\n/usr/bin/[^/]+\t--\tsystem_u:object_r:bin_t:s0\n", "/usr/bin/ls")
	f.Add("/x\t-l\t<<none>>\n# c\n\n", "//x")
	f.Fuzz(func(t *testing.T, text, p string) {
		specs, err := selinux.ParseSpecs(strings.NewReader(text), "fuzz")
		if err != nil {
			if !strings.HasPrefix(err.Error(), "selinux: ") {
				t.Fatalf("unwrapped error %v", err)
			}
			return
		}
		c := selinux.New(specs)
		for _, m := range []fs.FileMode{0, fs.ModeDir, fs.ModeSymlink, fs.ModeIrregular} {
			c.Lookup(p, m)
		}
	})
}

func TestUnbalancedRegex(t *testing.T) {
	specs, err := selinux.ParseSpecs(strings.NewReader("/a)|(/b\tsystem_u:object_r:x_t:s0\n"), "x")
	if err != nil {
		t.Fatalf("rejected: %v", err)
	}
	c := selinux.New(specs)
	for _, p := range []string{"/a", "/b", "/c"} {
		c.Lookup(p, 0)
	}
}
