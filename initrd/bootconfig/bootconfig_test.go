package bootconfig

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, c := range []struct{ name, in, err string }{
		{"defaults", `{}`, ""},
		{"full", `{"kernelVersion":"6.12","modules":[{"name":"dm_verity","path":"/lib/modules/6.12/dm_verity.ko","params":"require_signatures=1"}],"ipe":"audit","ipePolicyName":"p","selinux":"enforcing","verityOnCorruption":"panic","init":"/usr/bin/sh"}`, ""},
		{"unknown field", `{"ipe":"audit","ipeMode":"x"}`, "unknown field"},
		{"bad ipe", `{"ipe":"permissive"}`, "ipe mode"},
		{"bad selinux", `{"selinux":"yes"}`, "selinux mode"},
		{"bad corruption", `{"verityOnCorruption":"ignore"}`, "on_corruption"},
		{"relative init", `{"init":"sbin/init"}`, "absolute"},
		{"not json", `ipe=audit`, "bootconfig"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := Parse([]byte(c.in))
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err = %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.IPE == "" || cfg.SELinux == "" || cfg.VerityOnCorruption == "" || cfg.Init == "" {
				t.Fatalf("defaults not applied: %+v", cfg)
			}
		})
	}
	cfg, _ := Parse([]byte(`{}`))
	if cfg.IPE != IPEEnforce || cfg.SELinux != SELinuxOff || cfg.VerityOnCorruption != CorruptionEIO || cfg.Init != DefaultInit {
		t.Fatalf("defaults: %+v", cfg)
	}
}
