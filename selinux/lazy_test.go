package selinux

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestLiteralPrefix(t *testing.T) {
	for _, tc := range []struct{ re, want string }{
		{`/usr/bin/foo`, "/usr/bin/foo"},
		{`/usr/lib/libfoo\.so.*`, "/usr/lib/libfoo.so"},
		{`/etc/selinux(/.*)?`, "/etc/selinux"},
		{`/usr/sbin/init(ng)?`, "/usr/sbin/init"},
		{`/dev/tty[0-9]+`, "/dev/tty"},
		{`/var/run/foo?`, "/var/run/fo"},
		{`/a/b*`, "/a/"},
		{`/a/b+`, "/a/"},
		{`/a/b{2}`, "/a/"},
		{`/a|/b`, ""},
		{`/(a|b)/c`, "/"},
		{`/x[|]y`, "/x"},
		{`/x\|y`, "/x|y"},
		{`/usr/\d+`, "/usr/"},
		{`/é?`, "/"},
		{`.*`, ""},
		{`/usr/lib/a\`, "/usr/lib/a"},
	} {
		got := literalPrefix(tc.re)
		if got != tc.want {
			t.Errorf("literalPrefix(%q) = %q, want %q", tc.re, got, tc.want)
		}
		// Whatever the regex matches must start with the prefix.
		re, err := regexp.Compile(`^(?:` + tc.re + `)`)
		if err != nil {
			continue
		}
		if p, _ := re.LiteralPrefix(); !strings.HasPrefix(p, got) && p != "" {
			t.Errorf("literalPrefix(%q) = %q is not a prefix of Go's %q", tc.re, got, p)
		}
	}
}

// TestLazyMatchesEager looks up the same paths in a file_contexts loaded
// both ways.
func TestLazyMatchesEager(t *testing.T) {
	dir := t.TempDir()
	fc := filepath.Join(dir, "file_contexts")
	in := `/.*	system_u:object_r:default_t:s0
/etc(/.*)?	system_u:object_r:etc_t:s0
/etc/selinux(/.*)?	system_u:object_r:selinux_config_t:s0
/etc/shadow.*	--	system_u:object_r:shadow_t:s0
/usr/lib/systemd/systemd	--	system_u:object_r:init_exec_t:s0
/usr/lib/systemd/systemd.*	--	system_u:object_r:bin_t:s0
/dev/tty[0-9]+	-c	system_u:object_r:tty_device_t:s0
/run(/.*)?	system_u:object_r:var_run_t:s0
/root	-d	system_u:object_r:user_home_dir_t:s0
/bad(	system_u:object_r:x_t:s0
`
	os.WriteFile(fc, []byte(in), 0o644)
	os.WriteFile(fc+".subs_dist", []byte("/var/run /run\n"), 0o644)
	if _, err := LoadFileContexts(fc); err == nil {
		t.Fatal("LoadFileContexts accepted a bad regex")
	}
	lazy, err := LoadFileContextsLazy(fc)
	if err != nil {
		t.Fatal(err)
	}
	eager := New(mustParse(t, strings.Replace(in, "/bad(\tsystem_u:object_r:x_t:s0\n", "", 1)))
	eager.distSubs = lazy.distSubs
	for _, p := range []string{"/", "/etc", "/etc/passwd", "/etc/selinux/config", "/etc/shadow", "/etc/shadow-",
		"/usr/lib/systemd/systemd", "/usr/lib/systemd/systemd-udevd", "/dev/tty1", "/var/run/x", "/root", "/x"} {
		for _, m := range []os.FileMode{0, os.ModeDir, os.ModeCharDevice | os.ModeDevice} {
			g, _ := lazy.Lookup(p, m)
			w, _ := eager.Lookup(p, m)
			if g != w {
				t.Errorf("Lookup(%q, %v): lazy %q, eager %q", p, m, g, w)
			}
		}
	}
	if lazy.Err() != nil {
		t.Errorf("Err = %v before the bad regex was reached", lazy.Err())
	}
	lazy.Lookup("/bad", 0)
	if err := lazy.Err(); err == nil || !strings.Contains(err.Error(), ":10:") {
		t.Errorf("Err after reaching the bad regex = %v, want one naming line 10", err)
	}
}

func mustParse(t *testing.T, s string) []*Spec {
	t.Helper()
	specs, err := ParseSpecs(strings.NewReader(s), "x")
	if err != nil {
		t.Fatal(err)
	}
	return specs
}
