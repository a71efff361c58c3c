package selinux

import (
	"fmt"
	"regexp"
	"runtime"
	"strings"
	"testing"
)

// A file_contexts with many stems and many stem-less specs used to make
// New copy every stem-less spec into every stem's list: 400 KB of input
// allocated 16 GB. The index costs memory linear in the specs.
func TestManyStemsLinearMemory(t *testing.T) {
	var b strings.Builder
	for i := 0; b.Len() < 400_000; i++ {
		fmt.Fprintf(&b, "/%x/a c\n/%x c\n", i, i)
	}
	specs, err := ParseSpecs(strings.NewReader(b.String()), "x")
	if err != nil {
		t.Fatal(err)
	}
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	c := New(specs)
	runtime.ReadMemStats(&m1)
	if got := m1.TotalAlloc - m0.TotalAlloc; got > 64<<20 {
		t.Fatalf("New of %d specs allocated %d MB", len(specs), got>>20)
	}
	if s := c.Match("/1f/a", TypeAny); s == nil || s.Regex != "/1f/a" {
		t.Fatalf("Match(/1f/a) = %+v", s)
	}
	if s := c.Match("/1f", TypeAny); s == nil || s.Regex != "/1f" {
		t.Fatalf("Match(/1f) = %+v", s)
	}
}

// Match must pick what a plain scan of all specs, latest first, picks.
func TestMatchMergeOrder(t *testing.T) {
	in := `/usr(/.*)? a
/.* b
/usr/bin(/.*)? c
/usr/bin/x -- d
(/.*)?/x e
/usr/lib/.* f
/opt(/.*)? g
`
	specs, err := ParseSpecs(strings.NewReader(in), "x")
	if err != nil {
		t.Fatal(err)
	}
	c := New(specs)
	res := map[*Spec]*regexp.Regexp{}
	for _, s := range c.specs {
		res[s] = regexp.MustCompile(`(?s)^(?:` + s.Regex + `)\n?$`)
	}
	for _, p := range []string{"/usr", "/usr/bin", "/usr/bin/x", "/usr/lib/y", "/usr/lib/x", "/opt/x", "/opt/y", "/x", "/etc/x", "/etc/y"} {
		for _, ty := range []Type{TypeAny, TypeRegular, TypeDir} {
			var want *Spec
			for i := len(c.specs) - 1; i >= 0; i-- {
				s := c.specs[i]
				if ty != TypeAny && s.Type != TypeAny && s.Type != ty {
					continue
				}
				if res[s].MatchString(p) {
					want = s
					break
				}
			}
			if got := c.Match(p, ty); got != want {
				t.Errorf("Match(%q, %o) = %v, want %v", p, ty, got, want)
			}
		}
	}
}

// TestSimpleRegex checks the string matching of simple specs against the
// regex engine, on the tails of simpleForm and on near misses that must go
// to the engine.
func TestSimpleRegex(t *testing.T) {
	for _, tc := range []struct {
		re   string
		form simpleForm
	}{
		{`/usr/bin/ls`, simpleExact},
		{`/usr/lib/systemd(/.*)?`, simpleTree},
		{`/var/log/.*`, simplePrefix},
		{`/usr/lib/libfoo\.so.*`, simplePrefix},
		{`/a\+b(/.*)?`, simpleTree},
		{`/`, simpleExact},
		{`.*`, simplePrefix},
		{`(/.*)?`, simpleTree},
		{`/a/b*`, notSimple},
		{`/a(/.*)`, notSimple},
		{`/a(/.*)?/b`, notSimple},
		{`/a\d(/.*)?`, notSimple},
		{`/a\`, notSimple},
		{`/a)|(/b`, notSimple},
		{`/é(/.*)?`, notSimple},
		{`/a.b`, notSimple},
		{`/a]b`, notSimple},
	} {
		_, form := simpleRegex(tc.re)
		if form != tc.form {
			t.Errorf("simpleRegex(%q) form %d, want %d", tc.re, form, tc.form)
			continue
		}
		checkSimple(t, tc.re, []string{"", "/", "\n", "/usr/bin/ls", "/usr/bin/ls\n", "/usr/bin/ls\n\n", "/usr/bin/lsx",
			"/usr/lib/systemd", "/usr/lib/systemd/", "/usr/lib/systemd/x\ny", "/usr/lib/systemdx", "/usr/lib/systemd\n",
			"/var/log", "/var/log/", "/var/log/x", "/usr/lib/libfoo.so", "/usr/lib/libfooxso.1", "/a+b", "/a+b/c", "/ab", "//"})
	}
}

// checkSimple compares a spec's matches with the regex engine on keys.
func checkSimple(t *testing.T, re string, keys []string) {
	t.Helper()
	specs, err := ParseSpecs(strings.NewReader(re+" system_u:object_r:x_t:s0\n"), "x")
	if err != nil || len(specs) != 1 {
		if _, form := simpleRegex(re); form != notSimple {
			t.Fatalf("simple regex %q does not parse as a spec: %v", re, err)
		}
		return
	}
	engine, err := regexp.Compile(`(?s)^(?:` + re + `)\n?$`)
	if err != nil {
		t.Fatalf("simple regex %q does not compile: %v", re, err)
	}
	for _, k := range keys {
		if got, want := specs[0].matches(k), engine.MatchString(k); got != want {
			t.Errorf("regex %q, key %q: matches %v, regexp %v", re, k, got, want)
		}
	}
}

func FuzzSimpleRegex(f *testing.F) {
	f.Add(`/usr/lib/systemd(/.*)?`, "/usr/lib/systemd/x")
	f.Add(`/var/log/.*`, "/var/log\n")
	f.Add(`/a\.b`, "/a.b\n")
	f.Fuzz(func(t *testing.T, re, key string) {
		if re == "" || strings.ContainsAny(re, " \t\n\r\v\f") || strings.HasPrefix(re, "#") {
			return // not the first field of a file_contexts line
		}
		if _, form := simpleRegex(re); form == notSimple {
			return
		}
		checkSimple(t, re, []string{key})
	})
}

func TestRequiredLiterals(t *testing.T) {
	for _, tc := range []struct {
		re   string
		want []string
	}{
		{`/usr/(.*/)?lib64(/.*)?`, []string{"/usr/", "lib64"}},
		{`/usr/.*\.cgi`, []string{"/usr/", ".cgi"}},
		{`/usr/lib/[^/]+/xfce4/panel/wrapper-1\.0`, []string{"/usr/lib/", "/xfce4/panel/wrapper-1.0"}},
		{`(/foo)+bar`, []string{"/foo", "bar"}},
		{`/a(b|cd)ef`, []string{"/a", "ef"}},
		{`(?i)/usr/bin`, nil},
		{`/x?`, nil},
	} {
		got := requiredLiterals(`(?s)^(?:` + tc.re + `)\n?$`)
		if strings.Join(got, "\x00") != strings.Join(tc.want, "\x00") {
			t.Errorf("requiredLiterals(%q) = %q, want %q", tc.re, got, tc.want)
		}
	}
}

// Every key a regex matches contains its required literals, so that
// refusing the others changes no result.
func FuzzRequiredLiterals(f *testing.F) {
	f.Add(`/usr/(.*/)?lib64(/.*)?`, "/usr/x/lib64/y")
	f.Add(`(a+b)+c`, "abaabc")
	f.Fuzz(func(t *testing.T, re, key string) {
		expr := `(?s)^(?:` + re + `)\n?$`
		engine, err := regexp.Compile(expr)
		if err != nil || !engine.MatchString(key) {
			return
		}
		for _, n := range requiredLiterals(expr) {
			if !strings.Contains(key, n) {
				t.Fatalf("regex %q matches %q, which lacks the required %q", re, key, n)
			}
		}
	})
}
