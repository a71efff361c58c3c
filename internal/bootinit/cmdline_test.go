package bootinit

import (
	"bytes"
	"encoding/hex"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/osguard/osguard/initrd/bootconfig"
)

const hash = "d3f2a1b0c9e8d7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2"

func TestParseCmdline(t *testing.T) {
	h, _ := hex.DecodeString(hash)
	for _, c := range []struct {
		name, line string
		want       Cmdline
		err        string
	}{
		{"empty", "", Cmdline{}, ""},
		{"typical", "console=ttyS0 panic=-1 usrhash=" + hash + " ro quiet\n", Cmdline{UsrHash: h}, ""},
		{"all", "usrhash=" + hash + " osguard.ipe=audit osguard.selinux=permissive osguard.verity.on_corruption=restart osguard.debug=1 osguard.insecure=yes osguard.init=/usr/bin/sh",
			Cmdline{UsrHash: h, IPE: "audit", SELinux: "permissive", OnCorruption: "restart", Debug: true, Insecure: true, Init: "/usr/bin/sh"}, ""},
		{"bare flags", "osguard.debug osguard.insecure=0", Cmdline{Debug: true}, ""},
		{"last wins", "osguard.ipe=audit osguard.ipe=enforce", Cmdline{IPE: "enforce"}, ""},
		{"quoted", `foo="a b" osguard.init="/sbin/my init"`, Cmdline{Init: "/sbin/my init"}, ""},
		{"unknown", "osguard.foo=1", Cmdline{Unknown: []string{"osguard.foo=1"}}, ""},
		{"other prefix ignored", "osguardx=1 notosguard.ipe=bad", Cmdline{}, ""},
		{"bad ipe", "osguard.ipe=permissive", Cmdline{}, "ipe mode"},
		{"bad selinux", "osguard.selinux=on", Cmdline{}, "selinux mode"},
		{"bad corruption", "osguard.verity.on_corruption=ignore", Cmdline{}, "on_corruption"},
		{"bad bool", "osguard.debug=maybe", Cmdline{}, "boolean"},
		{"relative init", "osguard.init=sbin/init", Cmdline{}, "absolute"},
		{"update timeout", "osguard.update.timeout=90s", Cmdline{UpdateTimeout: 90 * time.Second}, ""},
		{"bad update timeout", "osguard.update.timeout=soon", Cmdline{}, "update.timeout"},
		{"zero update timeout", "osguard.update.timeout=0s", Cmdline{}, "positive"},
		{"short hash", "usrhash=abcd", Cmdline{}, "want 32 to 64"},
		{"not hex", "usrhash=" + strings.Repeat("zz", 32), Cmdline{}, "usrhash"},
		{"uppercase", "usrhash=" + strings.ToUpper(hash), Cmdline{}, "lowercase"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseCmdline(c.line)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err = %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.UsrHash, c.want.UsrHash) || got.IPE != c.want.IPE || got.SELinux != c.want.SELinux ||
				got.OnCorruption != c.want.OnCorruption || got.Debug != c.want.Debug || got.Insecure != c.want.Insecure ||
				got.Init != c.want.Init || !slices.Equal(got.Unknown, c.want.Unknown) {
				t.Fatalf("got %+v\nwant %+v", got, c.want)
			}
		})
	}
}

func TestMerge(t *testing.T) {
	cfg := &bootconfig.Config{}
	cfg.Defaults()
	cfg.IPEPolicyName = "p"
	c, _ := ParseCmdline("osguard.ipe=audit")
	s := Merge(cfg, c)
	if s.IPE != "audit" || s.SELinux != "off" || s.OnCorruption != "eio" || s.Init != "/sbin/init" || s.IPEPolicy != "p" {
		t.Fatalf("%+v", s)
	}
}

func FuzzParseCmdline(f *testing.F) {
	f.Add("console=ttyS0 usrhash=" + hash + ` osguard.init="/a b"`)
	f.Add(`"unterminated osguard.ipe=audit`)
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCmdline(s)
		if err == nil && c.Init != "" && c.Init[0] != '/' {
			t.Fatalf("accepted relative init %q", c.Init)
		}
	})
}
