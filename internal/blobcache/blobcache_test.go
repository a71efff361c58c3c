package blobcache

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPutGet(t *testing.T) {
	d := &Dir{Path: filepath.Join(t.TempDir(), "c")}
	if _, ok := d.Get("k1"); ok {
		t.Fatal("hit in an empty cache")
	}
	if err := d.Put("k1", []byte("content")); err != nil {
		t.Fatal(err)
	}
	if err := d.Put("empty", nil); err != nil {
		t.Fatal(err)
	}
	if b, ok := d.Get("k1"); !ok || string(b) != "content" {
		t.Fatalf("Get = %q, %v", b, ok)
	}
	if b, ok := d.Get("empty"); !ok || len(b) != 0 {
		t.Fatalf("Get(empty) = %q, %v", b, ok)
	}
	var nilDir *Dir
	if err := nilDir.Put("k", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, ok := nilDir.Get("k"); ok {
		t.Fatal("a nil Dir returned an entry")
	}
}

// A damaged entry is a miss, and it is removed.
func TestDamagedEntry(t *testing.T) {
	d := &Dir{Path: t.TempDir()}
	for _, tc := range []struct {
		name   string
		damage func([]byte) []byte
	}{
		{"flipped bit", func(b []byte) []byte { b[len(b)-1] ^= 1; return b }},
		{"cut short", func(b []byte) []byte { return b[:len(b)-1] }},
		{"shorter than a digest", func(b []byte) []byte { return b[:10] }},
		{"digest changed", func(b []byte) []byte { b[0] ^= 0x80; return b }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := d.Put("k", bytes.Repeat([]byte("data"), 100)); err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(d.Path, "k")
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, tc.damage(b), 0o644); err != nil {
				t.Fatal(err)
			}
			if got, ok := d.Get("k"); ok {
				t.Fatalf("damaged entry returned: %q", got)
			}
			if _, err := os.Stat(p); !os.IsNotExist(err) {
				t.Fatalf("damaged entry left in place: %v", err)
			}
		})
	}
}

func TestInvalidKeys(t *testing.T) {
	d := &Dir{Path: t.TempDir()}
	for _, k := range []string{"", ".hidden", "../x", "a/b", "a b", string(make([]byte, 201))} {
		if err := d.Put(k, []byte("x")); err == nil {
			t.Errorf("Put(%q) succeeded", k)
		}
		if _, ok := d.Get(k); ok {
			t.Errorf("Get(%q) hit", k)
		}
	}
}

// Put keeps MaxEntries entries, dropping the least recently used.
func TestPrune(t *testing.T) {
	d := &Dir{Path: t.TempDir(), MaxEntries: 2}
	old := time.Now().Add(-time.Hour)
	for i, k := range []string{"a", "b"} {
		if err := d.Put(k, []byte(k)); err != nil {
			t.Fatal(err)
		}
		ts := old.Add(time.Duration(i) * time.Minute)
		os.Chtimes(filepath.Join(d.Path, k), ts, ts)
	}
	d.Get("a") // a is now the most recently used
	if err := d.Put("c", []byte("c")); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]bool{"a": true, "b": false, "c": true} {
		if _, err := os.Stat(filepath.Join(d.Path, k)); (err == nil) != want {
			t.Errorf("entry %s kept = %v, want %v", k, err == nil, want)
		}
	}
}

func TestCodeID(t *testing.T) {
	a, err := CodeID()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := CodeID()
	if len(a) != 64 || a != b {
		t.Fatalf("CodeID = %q then %q", a, b)
	}
	// The test binary has a build ID, which go tool buildid prints too.
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("go", "tool", "buildid", exe).Output()
	if err != nil {
		t.Skipf("go tool buildid: %v", err)
	}
	if got, want := goBuildID(exe), strings.TrimSpace(string(out)); got != want || got == "" {
		t.Fatalf("goBuildID = %q, go tool buildid says %q", got, want)
	}
	if id := goBuildID(filepath.Join(t.TempDir(), "none")); id != "" {
		t.Fatalf("build ID %q of a missing file", id)
	}
}
