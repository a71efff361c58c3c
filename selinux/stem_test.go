package selinux

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// A file_contexts with many stems and many stem-less specs used to make
// New copy every stem-less spec into every stem's list: 400 KB of input
// allocated 16 GB. The lists now cost memory linear in the specs.
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
func TestMatchStemMergeOrder(t *testing.T) {
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
	for _, p := range []string{"/usr", "/usr/bin", "/usr/bin/x", "/usr/lib/y", "/usr/lib/x", "/opt/x", "/opt/y", "/x", "/etc/x", "/etc/y"} {
		for _, ty := range []Type{TypeAny, TypeRegular, TypeDir} {
			var want *Spec
			for i := len(c.specs) - 1; i >= 0; i-- {
				s := c.specs[i]
				if ty != TypeAny && s.Type != TypeAny && s.Type != ty {
					continue
				}
				if s.re.MatchString(p) {
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
