package sepolicy

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/osguard/osguard/internal/apt"
	"github.com/osguard/osguard/internal/artifacts"
	"github.com/osguard/osguard/internal/testutil"
)

func TestSplitFileContexts(t *testing.T) {
	for _, tc := range []struct {
		name, in, fc, home string
	}{
		{"plain", "/etc(/.*)?\tsystem_u:object_r:etc_t:s0\n", "/etc(/.*)?\tsystem_u:object_r:etc_t:s0\n", ""},
		{"home dir", "HOME_DIR/.+\tsystem_u:object_r:user_home_t:s0\n/x\ta\n", "/x\ta\n", "HOME_DIR/.+\tsystem_u:object_r:user_home_t:s0\n"},
		{"home root", "HOME_ROOT\t-d\tsystem_u:object_r:home_root_t:s0\n", "", "HOME_ROOT\t-d\tsystem_u:object_r:home_root_t:s0\n"},
		{"user and role", "/tmp/gconfd-USER\t-d\tx\n/run/user/ROLE\ty\n/z\tz\n", "/z\tz\n", "/tmp/gconfd-USER\t-d\tx\n/run/user/ROLE\ty\n"},
		{"no final newline", "/a\ta\n/b\tb", "/a\ta\n/b\tb", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fc, home := SplitFileContexts([]byte(tc.in))
			if string(fc) != tc.fc || string(home) != tc.home {
				t.Errorf("SplitFileContexts(%q) = %q, %q; want %q, %q", tc.in, fc, home, tc.fc, tc.home)
			}
		})
	}
}

// trixieDebs resolves and downloads the reference policy and the tools with
// the project's private apt state (what 'osguard build' does), returning the
// policy package and the tool packages.
func trixieDebs(t *testing.T) (string, []string) {
	t.Helper()
	testutil.NeedTool(t, "apt-get")
	p, err := artifacts.Path()
	if err != nil {
		testutil.Missing(t, "%v", err)
	}
	base := filepath.Join(filepath.Dir(p), "debian", "trixie")
	st := &apt.State{Dir: filepath.Join(base, "apt"), Suite: "trixie"}
	if err := st.Check(); err != nil {
		testutil.Missing(t, "%v", err)
	}
	pkgs, err := st.ResolveDeps(append([]string{"selinux-policy-default"}, ToolPackages...))
	if err != nil {
		t.Fatal(err)
	}
	debs, err := st.Download(pkgs, filepath.Join(base, "debs"))
	if err != nil {
		t.Fatal(err)
	}
	var pol string
	var tools []string
	for i, p := range pkgs {
		if p.Name == "selinux-policy-default" {
			pol = debs[i]
		} else {
			tools = append(tools, debs[i])
		}
	}
	return pol, tools
}

const testModule = `(filecon "/osguard-test" dir (system_u object_r etc_t ((s0) (s0))))
(allow init_t etc_t (dir (search)))
`

// TestBuildDebianPolicy compiles trixie's reference policy twice with a
// module of ours: the same bytes, a policy Linux 6.12 loads (magic and
// version), and the file contexts that label an osguard node.
func TestBuildDebianPolicy(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles the whole reference policy")
	}
	pol, tools := trixieDebs(t)
	o := Options{PolicyDeb: pol, ToolDebs: tools, Disabled: DefaultDisabled, Modules: []Module{{Name: "test", CIL: []byte(testModule)}}}
	a, err := Build(o)
	if err != nil {
		t.Fatal(err)
	}
	o.WorkDir = t.TempDir()
	b, err := Build(o)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Policy, b.Policy) || !bytes.Equal(a.FileContexts, b.FileContexts) || !bytes.Equal(a.HomedirTemplate, b.HomedirTemplate) {
		t.Errorf("two builds of the same policy differ")
	}
	// policydb header: magic, then the length of "SE Linux", the string,
	// the version.
	if len(a.Policy) < 20 || binary.LittleEndian.Uint32(a.Policy) != 0xf97cff8c ||
		string(a.Policy[8:16]) != "SE Linux" || binary.LittleEndian.Uint32(a.Policy[16:]) != PolicyVersion {
		t.Errorf("policy header % x, want SELinux magic and version %d", a.Policy[:min(20, len(a.Policy))], PolicyVersion)
	}
	fc := string(a.FileContexts)
	for _, want := range []string{
		"/usr/lib/systemd/systemd\t--\tsystem_u:object_r:init_exec_t:s0\n",
		"/osguard-test\t-d\tsystem_u:object_r:etc_t:s0\n",
	} {
		if !strings.Contains(fc, want) {
			t.Errorf("file_contexts lacks %q", want)
		}
	}
	if strings.Contains(fc, "HOME_DIR") || !strings.Contains(string(a.HomedirTemplate), "HOME_DIR") {
		t.Errorf("HOME_DIR lines are not all in the home directory template")
	}
	if !bytes.Contains(a.SubsDist, []byte("/var/run /run")) {
		t.Errorf("file_contexts.subs_dist = %q", a.SubsDist)
	}
	for _, d := range DefaultDisabled {
		for _, m := range a.Modules {
			if m == d {
				t.Errorf("disabled module %s was compiled", d)
			}
		}
	}
	if a.Modules[len(a.Modules)-1] != "test" || len(a.Modules) < 300 {
		t.Errorf("modules: %d, last %s", len(a.Modules), a.Modules[len(a.Modules)-1])
	}
}

// TestBuildErrors: what a wrong input gives. Only base is compiled, to
// keep it short.
func TestBuildErrors(t *testing.T) {
	pol, tools := trixieDebs(t)
	all, err := readPolicyDeb(pol, "default")
	if err != nil {
		t.Fatal(err)
	}
	var notBase []string
	for _, m := range all.order {
		if m != "base" {
			notBase = append(notBase, m)
		}
	}
	for _, tc := range []struct {
		name string
		o    Options
		want string
	}{
		{"bad CIL", Options{PolicyDeb: pol, ToolDebs: tools, Disabled: notBase, Modules: []Module{{Name: "bad", CIL: []byte("(allow nosuch_t")}}}, "secilc"},
		{"bad module name", Options{PolicyDeb: pol, ToolDebs: tools, Disabled: notBase, Modules: []Module{{Name: "../x", CIL: []byte("")}}}, `module name "../x"`},
		{"module named like refpolicy's", Options{PolicyDeb: pol, ToolDebs: tools, Disabled: notBase, Modules: []Module{{Name: "base", CIL: []byte("")}}}, "module base is also in"},
		{"not a policy package", Options{PolicyDeb: tools[0], ToolDebs: tools}, "not a reference policy package"},
		{"no tools", Options{PolicyDeb: pol}, "lack"},
		{"unknown flavour", Options{PolicyDeb: pol, ToolDebs: tools, Flavour: "mls"}, "flavour mls"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.WorkDir = t.TempDir()
			_, err := Build(tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %v, want it to contain %q", err, tc.want)
			}
		})
	}
	// Build's own temporary directory goes away, also after a failure.
	before, _ := filepath.Glob(filepath.Join(os.TempDir(), "osguard-sepolicy-*"))
	Build(Options{PolicyDeb: pol, ToolDebs: tools, Disabled: notBase, Modules: []Module{{Name: "bad", CIL: []byte("(")}}})
	after, _ := filepath.Glob(filepath.Join(os.TempDir(), "osguard-sepolicy-*"))
	if len(after) != len(before) {
		t.Errorf("Build left %v behind", after)
	}
}
