package initrd

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/osguard/osguard/initrd/bootconfig"
	"github.com/osguard/osguard/internal/blobcache"
	"github.com/osguard/osguard/internal/testutil"
)

func TestBuildReproducibleAndReadable(t *testing.T) {
	art := testutil.Artifacts(t)
	tools := testutil.NeedTool(t, "cpio", "zstd", "xz")
	k, err := OpenDir(art.KernelRoot)
	if err != nil {
		t.Fatal(err)
	}
	extra := filepath.Join(t.TempDir(), "hello")
	os.WriteFile(extra, []byte("hello\n"), 0o755)
	opts := Options{
		Kernel:        k,
		Modules:       []string{"loop"},
		Init:          []byte("\x7fELF fake init"),
		Policy:        nil,
		SELinuxPolicy: []byte("selinux"),
		Add:           []File{{Src: extra, Dst: "/bin/hello"}},
		Config:        bootconfig.Config{IPE: bootconfig.IPEAudit},
	}
	for _, comp := range []struct{ name, tool string }{{CompressZstd, tools[1]}, {CompressXZ, tools[2]}} {
		t.Run(comp.name, func(t *testing.T) {
			opts.Compression = comp.name
			var one, two bytes.Buffer
			if err := Build(opts, &one); err != nil {
				t.Fatal(err)
			}
			if err := Build(opts, &two); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(one.Bytes(), two.Bytes()) {
				t.Fatal("two builds with the same inputs differ")
			}
			// The Debian tool decompresses it (xz: and checks the CRC32), GNU cpio lists it.
			dec := exec.Command(comp.tool, "-d", "-c")
			dec.Stdin = bytes.NewReader(one.Bytes())
			raw, err := dec.Output()
			if err != nil {
				t.Fatalf("%s -d: %v", comp.tool, err)
			}
			if comp.name == CompressXZ {
				info, err := exec.Command("sh", "-c", "xz --robot --list /dev/stdin < "+writeTemp(t, one.Bytes())).CombinedOutput()
				if err != nil || !strings.Contains(string(info), "CRC32") {
					t.Errorf("xz --list: %v %s", err, info)
				}
			}
			ls := exec.Command(tools[0], "-t", "--quiet")
			ls.Stdin = bytes.NewReader(raw)
			out, err := ls.Output()
			if err != nil {
				t.Fatalf("cpio -t: %v", err)
			}
			names := strings.Fields(string(out))
			for _, want := range []string{"init", "dev/console", "bin/hello", "etc/osguard/init.json", "etc/osguard/selinux.policy",
				"lib/modules/" + k.Version + "/dm_verity.ko", "lib/modules/" + k.Version + "/loop.ko", "lib/modules/" + k.Version + "/erofs.ko"} {
				if !contains(names, want) {
					t.Errorf("%s missing from cpio -t listing", want)
				}
			}
			cfgBytes := extractOne(t, tools[0], raw, "etc/osguard/init.json")
			cfg, err := bootconfig.Parse(cfgBytes)
			if err != nil {
				t.Fatalf("init.json: %v\n%s", err, cfgBytes)
			}
			if cfg.IPE != "audit" || cfg.SELinux != "off" || cfg.KernelVersion != k.Version || cfg.IPEPolicyName != "" {
				t.Errorf("init.json: %+v", cfg)
			}
			var sawVerity bool
			for _, m := range cfg.Modules {
				if m.Name == "dm_verity" {
					sawVerity = m.Params == "require_signatures=1"
				}
			}
			if !sawVerity {
				t.Errorf("dm_verity not loaded with require_signatures=1: %+v", cfg.Modules)
			}
		})
	}
}

func writeTemp(t *testing.T, b []byte) string {
	p := filepath.Join(t.TempDir(), "x")
	os.WriteFile(p, b, 0o644)
	return p
}

func extractOne(t *testing.T, cpio string, raw []byte, name string) []byte {
	t.Helper()
	dir := t.TempDir()
	c := exec.Command(cpio, "-i", "-d", "--quiet", name)
	c.Dir = dir
	c.Stdin = bytes.NewReader(raw)
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i %s: %v %s", name, err, out)
	}
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func contains(s []string, x string) bool {
	for _, v := range s {
		if v == x {
			return true
		}
	}
	return false
}

func TestPolicyName(t *testing.T) {
	for _, c := range []struct{ text, want string }{
		{"policy_name=osguard policy_version=0.0.1\nDEFAULT action=ALLOW\n", "osguard"},
		{"# comment\n\npolicy_version=1.0.0 policy_name=x-y\n", "x-y"},
		{"DEFAULT action=ALLOW\n", ""},
		{"", ""},
	} {
		got, err := PolicyName([]byte(c.text))
		if got != c.want || (c.want == "") != (err != nil) {
			t.Errorf("PolicyName(%q) = %q, %v; want %q", c.text, got, err, c.want)
		}
	}
}

// TestPolicyNameFromOpenSSL reads the name from a policy that openssl signed
// as IPE wants it (attached, no attributes).
func TestPolicyNameFromOpenSSL(t *testing.T) {
	openssl := testutil.NeedTool(t, "openssl")[0]
	dir := t.TempDir()
	key, crt, pol := filepath.Join(dir, "k.pem"), filepath.Join(dir, "c.pem"), filepath.Join(dir, "p.txt")
	if out, err := exec.Command(openssl, "req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=t/",
		"-keyout", key, "-out", crt, "-days", "1").CombinedOutput(); err != nil {
		t.Fatalf("openssl req: %v\n%s", err, out)
	}
	os.WriteFile(pol, []byte("policy_name=from-openssl policy_version=0.0.1\nDEFAULT action=ALLOW\n"), 0o644)
	der, err := exec.Command(openssl, "smime", "-sign", "-in", pol, "-signer", crt, "-inkey", key,
		"-nodetach", "-noattr", "-binary", "-outform", "der").Output()
	if err != nil {
		t.Fatalf("openssl smime: %v", err)
	}
	name, err := PolicyNameFromP7(der)
	if err != nil || name != "from-openssl" {
		t.Fatalf("PolicyNameFromP7 = %q, %v", name, err)
	}
	if _, err := PolicyNameFromP7([]byte("not der")); err == nil {
		t.Fatal("garbage accepted")
	}
}

// countingCache is a blobcache.Dir that counts its hits and misses.
type countingCache struct {
	*blobcache.Dir
	hits, misses int
}

func (c *countingCache) Get(key string) ([]byte, bool) {
	b, ok := c.Dir.Get(key)
	if ok {
		c.hits++
	} else {
		c.misses++
	}
	return b, ok
}

// TestBuildCached checks that the module and archive caches change no byte
// of the initramfs, cold, warm, and with every entry damaged, and that a
// warm build takes everything from them.
func TestBuildCached(t *testing.T) {
	art := testutil.Artifacts(t)
	dir := t.TempDir()
	opts := Options{Init: []byte("\x7fELF fake init"), SELinuxPolicy: []byte("selinux"), Config: bootconfig.Config{IPE: bootconfig.IPEAudit}}
	build := func(c Cache) []byte {
		t.Helper()
		k, err := OpenDir(art.KernelRoot)
		if err != nil {
			t.Fatal(err)
		}
		k.Cache, opts.Kernel, opts.Cache = c, k, c
		if c == nil {
			opts.Cache = nil
		}
		var out bytes.Buffer
		if err := Build(opts, &out); err != nil {
			t.Fatal(err)
		}
		return out.Bytes()
	}
	want := build(nil)
	cache := &countingCache{Dir: &blobcache.Dir{Path: dir}}
	if got := build(cache); !bytes.Equal(got, want) {
		t.Fatal("a cold cached build differs from an uncached one")
	}
	// A module the closure met as an alias candidate first is read twice,
	// the second time from the cache.
	if cache.misses == 0 {
		t.Fatal("cold build: no misses")
	}
	cold := *cache
	cache.hits, cache.misses = 0, 0
	if got := build(cache); !bytes.Equal(got, want) {
		t.Fatal("a warm cached build differs from an uncached one")
	}
	if cache.misses != 0 || cache.hits == 0 {
		t.Fatalf("warm build: %d hits, %d misses", cache.hits, cache.misses)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 0x55
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cache.hits, cache.misses = 0, 0
	if got := build(cache); !bytes.Equal(got, want) {
		t.Fatal("a build over damaged cache entries differs from an uncached one")
	}
	if cache.hits != cold.hits || cache.misses != cold.misses {
		t.Fatalf("build over damaged entries: %d hits, %d misses, want the cold build's %d and %d", cache.hits, cache.misses, cold.hits, cold.misses)
	}
}
