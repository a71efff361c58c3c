package initrd

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/osguard/osguard/internal/testutil"
)

// modprobeFarm makes a tree that bookworm's depmod/modprobe understand
// (BASE/lib/modules/V) out of symlinks to the unpacked trixie package, which
// keeps its modules in usr/lib/modules, then runs depmod on it.
func modprobeFarm(t *testing.T, modDir, version string) string {
	t.Helper()
	tools := testutil.NeedTool(t, "depmod")
	base := t.TempDir()
	dst := filepath.Join(base, "lib", "modules", version)
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(modDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if err := os.Symlink(filepath.Join(modDir, e.Name()), filepath.Join(dst, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command(tools[0], "-b", base, version).CombinedOutput(); err != nil {
		t.Fatalf("depmod: %v\n%s", err, out)
	}
	return base
}

// showDepends returns the module names modprobe would load for m, in order.
func showDepends(t *testing.T, modprobe, base, version, m string) []string {
	t.Helper()
	out, err := exec.Command(modprobe, "-d", base, "-S", version, "--show-depends", m).CombinedOutput()
	if err != nil {
		t.Fatalf("modprobe --show-depends %s: %v\n%s", m, err, out)
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "insmod" {
			n, _ := moduleName(f[1])
			names = append(names, n)
		}
	}
	return names
}

func sorted(s []string) []string { s = slices.Clone(s); slices.Sort(s); return s }

// readModulesDep parses depmod's modules.dep into module name -> dependencies.
func readModulesDep(t *testing.T, p string) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	dep := map[string][]string{}
	for _, line := range strings.Split(string(b), "\n") {
		mod, deps, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		n, _ := moduleName(mod)
		for _, d := range strings.Fields(deps) {
			dn, _ := moduleName(d)
			dep[n] = append(dep[n], dn)
		}
	}
	if len(dep) < 100 {
		t.Fatalf("modules.dep has only %d entries", len(dep))
	}
	return dep
}

func TestClosureMatchesModprobe(t *testing.T) {
	art := testutil.Artifacts(t)
	modprobe := testutil.NeedTool(t, "modprobe")[0]
	base := modprobeFarm(t, art.Modules, art.KernelVersion)
	k, err := OpenDir(art.KernelRoot)
	if err != nil {
		t.Fatal(err)
	}
	if k.Version != art.KernelVersion {
		t.Fatalf("version %q, want %q", k.Version, art.KernelVersion)
	}
	dep := readModulesDep(t, filepath.Join(base, "lib", "modules", art.KernelVersion, "modules.dep"))
	// btrfs is left out on purpose: it has four softdep= lines and
	// bookworm's kmod only honours the first one; we load them all.
	cases := append(slices.Clone(DefaultModules), "loop", "nvme", "xfs", "dm-crypt", "ext4")
	for _, m := range cases {
		t.Run(m, func(t *testing.T) {
			want := showDepends(t, modprobe, base, art.KernelVersion, m)
			got, err := k.Closure([]string{m})
			if err != nil {
				t.Fatal(err)
			}
			// Same set as modprobe; the order may differ where depmod's
			// global sort breaks ties, but each module must come after
			// everything modules.dep (written by depmod) says it needs.
			if !slices.Equal(sorted(got), sorted(want)) {
				t.Errorf("closure(%s)\n got %v\nwant %v (modprobe --show-depends)", m, got, want)
			}
			pos := map[string]int{}
			for i, n := range got {
				pos[n] = i
			}
			for i, n := range got {
				for _, d := range dep[n] {
					if j, ok := pos[d]; !ok || j > i {
						t.Errorf("closure(%s): %s at %d needs %s (modules.dep) at %d/%v", m, n, i, d, j, ok)
					}
				}
			}
		})
	}
	// The union is loadable in order: each module after its depends=.
	all, err := k.Closure(DefaultModules)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, m := range all {
		if seen[m] {
			t.Errorf("%s listed twice", m)
		}
		mi, err := k.ModInfo(m)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range mi.Depends {
			if !seen[d] && !k.Builtin(d) {
				t.Errorf("%s comes before its dependency %s", m, d)
			}
		}
		seen[m] = true
	}
	for _, m := range []string{"dm_verity", "dm_mod", "dm_bufio", "reed_solomon", "erofs", "efivarfs", "virtio_blk"} {
		if !seen[m] {
			t.Errorf("default closure misses %s: %v", m, all)
		}
	}
}

func TestClosureUnknownModule(t *testing.T) {
	art := testutil.Artifacts(t)
	k, err := OpenDir(art.KernelRoot)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.Closure([]string{"no_such_module_xyz"}); err == nil || !strings.Contains(err.Error(), "no such module") {
		t.Fatalf("err = %v, want no such module", err)
	}
	// Built-in modules are not an error and load nothing.
	got, err := k.Closure([]string{"ext4"})
	if err != nil || len(got) != 0 {
		t.Fatalf("closure(ext4, built in) = %v, %v", got, err)
	}
}

func TestReadDebMatchesTree(t *testing.T) {
	art := testutil.Artifacts(t)
	testutil.NeedFile(t, art.KernelDeb)
	kd, err := ReadDeb(art.KernelDeb)
	if err != nil {
		t.Fatal(err)
	}
	kt, err := OpenDir(art.KernelRoot)
	if err != nil {
		t.Fatal(err)
	}
	if kd.Version != kt.Version || !slices.Equal(kd.Vmlinuz, kt.Vmlinuz) || !slices.Equal(kd.Config, kt.Config) {
		t.Fatalf("deb and tree differ: version %q vs %q, vmlinuz %d vs %d bytes", kd.Version, kt.Version, len(kd.Vmlinuz), len(kt.Vmlinuz))
	}
	if len(kd.modules) != len(kt.modules) || len(kd.modules) < 100 {
		t.Fatalf("modules: deb %d, tree %d", len(kd.modules), len(kt.modules))
	}
	a, _ := kd.Closure(DefaultModules)
	b, _ := kt.Closure(DefaultModules)
	if !slices.Equal(a, b) {
		t.Fatalf("closure from deb %v != from tree %v", a, b)
	}
	ko, err := kd.ModuleData("dm_verity")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(ko), "~Module signature appended~\n") {
		t.Errorf("decompressed dm_verity.ko does not end with its signature marker")
	}
}

func TestReadDebErrors(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"empty":   "",
		"notar":   "hello",
		"nodata":  "!<arch>\ndebian-binary   0           0     0     100644  4         `\n2.0\n",
		"badsize": "!<arch>\ndebian-binary   0           0     0     100644  xx        `\n",
	} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(content), 0o644)
		if _, err := ReadDeb(p); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
