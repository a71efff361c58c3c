package image

import (
	"strings"
	"testing"
)

func TestDefaultProfile(t *testing.T) {
	c, err := LoadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	if c.Metadata.Name != "osguard-default" || c.Spec.IPE.Mode != "enforce" || c.Spec.SELinux.Mode != "off" || c.Spec.Layout.Slots != 2 {
		t.Errorf("default profile = %+v", c)
	}
}

func TestParseConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"unknown field", "apiVersion: osguard.dev/v1alpha1\nkind: Image\nspec:\n  ipe:\n    mdoe: audit\n", "line 5: field mdoe not found"},
		{"bad apiVersion", "apiVersion: v1\nkind: Image\n", "line 1: apiVersion"},
		{"bad kind", "apiVersion: osguard.dev/v1alpha1\nkind: Pod\n", "line 2: kind"},
		{"bad ipe mode", "kind: Image\nspec:\n  ipe:\n    mode: permissive\n", "line 4: spec.ipe.mode"},
		{"selinux without policy", "spec:\n  selinux:\n    mode: enforcing\n", "line 2: spec.selinux: mode enforcing needs debianPolicy, or policy and fileContexts"},
		{"debianPolicy and policy", "spec:\n  rootfs:\n    debian: {packages: [systemd]}\n  selinux:\n    mode: enforcing\n    debianPolicy: default\n    policy: p\n", "give either debianPolicy, or policy"},
		{"debianPolicy without debian", "spec:\n  selinux:\n    mode: permissive\n    debianPolicy: default\n", "line 4: spec.selinux.debianPolicy: needs a Debian rootfs"},
		{"bad debianPolicy", "spec:\n  rootfs:\n    debian: {packages: [systemd]}\n  selinux:\n    mode: enforcing\n    debianPolicy: targeted\n", "line 6: spec.selinux.debianPolicy: \"targeted\" must be default or mls"},
		{"bad size", "spec:\n  layout:\n    varSize: lots\n", "line 3: spec.layout.varSize"},
		{"small esp", "spec:\n  layout:\n    espSize: 1M\n", "below the 33M"},
		{"bad slots", "spec:\n  layout:\n    slots: 3\n", "spec.layout.slots"},
		{"usrhash in cmdline", "spec:\n  cmdline: [usrhash=00]\n", "usrhash= is set by the build"},
		{"kernel both", "spec:\n  kernel:\n    deb: a.deb\n    vmlinuz: v\n    modules: m\n", "either deb"},
		{"bad name", "metadata:\n  name: Bad_Name\n", "metadata.name"},
		{"two docs", "kind: Image\n---\nkind: Image\n", "more than one"},
		{"empty", "", "empty document"},
		{"wrong type", "spec:\n  layout:\n    slots: two\n", "line 3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tc.yaml), "")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"4096": 4096, "64M": 64 << 20, "1G": 1 << 30, "512K": 512 << 10, "2Gi": 2 << 30} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "1T", "x", "99999999999999G"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) succeeded", in)
		}
	}
}

// TestContainerHostSELinuxDefaults: the containerhost profile is SELinux
// permissive with Debian's reference policy, --selinux overrides the mode,
// and the standard flavour (AppArmor) turns the profile's SELinux off.
func TestContainerHostSELinuxDefaults(t *testing.T) {
	for _, tc := range []struct {
		name     string
		ov       Overrides
		mode     string
		policyPk string
	}{
		{"profile", Overrides{}, "permissive", "selinux-policy-default"},
		{"enforcing", Overrides{SELinux: "enforcing"}, "enforcing", "selinux-policy-default"},
		{"off", Overrides{SELinux: "off"}, "off", ""},
		{"standard flavour", Overrides{Flavour: FlavourStandard}, "off", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := LoadProfile("containerhost")
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Apply(tc.ov); err != nil {
				t.Fatal(err)
			}
			if c.Spec.SELinux.Mode != tc.mode || c.Spec.SELinux.debianPackage() != tc.policyPk {
				t.Errorf("selinux = %+v (package %q), want mode %s, package %q", c.Spec.SELinux, c.Spec.SELinux.debianPackage(), tc.mode, tc.policyPk)
			}
		})
	}
	c, _ := LoadProfile("containerhost")
	if err := c.Apply(Overrides{Flavour: FlavourStandard, SELinux: "enforcing"}); err == nil || !strings.Contains(err.Error(), "standard uses AppArmor") {
		t.Errorf("standard flavour with --selinux enforcing: %v", err)
	}
}
