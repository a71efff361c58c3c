package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/osguard/osguard/internal/testutil"
)

// TestBuildProfileCLI: the profile words and override flags of 'osguard
// build', and bad input that must leave no output directory behind.
func TestBuildProfileCLI(t *testing.T) {
	out, code := erofsCLI(t, nil, "build", "--print-profile", "containerhost")
	if code != 0 || !strings.Contains(out, "name: containerhost") || !strings.Contains(out, "containerd") {
		t.Errorf("--print-profile containerhost: exit %d\n%s", code, out)
	}
	out, code = erofsCLI(t, nil, "build", "--print-default")
	if code != 0 || !strings.Contains(out, "name: osguard-default") {
		t.Errorf("--print-default: exit %d\n%s", code, out)
	}
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown profile", []string{"--profile", "nope"}, 2, `no profile "nope" (the profiles are: containerhost, default)`},
		{"unknown profile to print", []string{"--print-profile", "nope"}, 2, `no profile "nope"`},
		{"profile and config", []string{"--profile", "default", "-c", "x.yaml"}, 2, "give -c or --profile, not both"},
		{"bad selinux", []string{"--selinux", "strict"}, 2, `"strict" must be off, permissive or enforcing`},
		{"bad ipe", []string{"--ipe", "maybe"}, 2, `"maybe" must be enforce or audit`},
		{"relative init", []string{"--init", "sbin/init"}, 2, "--init sbin/init: must be an absolute path"},
		{"bad flavour", []string{"--flavour", "plain"}, 2, `"plain" must be guard or standard`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-"))
			out, code := erofsCLI(t, nil, append([]string{"build", "-o", o}, tc.args...)...)
			if code != tc.code || !strings.Contains(out, tc.want) {
				t.Errorf("exit %d, want %d; output %q, want %q", code, tc.code, out, tc.want)
			}
			if _, err := os.Stat(o); err == nil {
				t.Errorf("%s was created", o)
			}
		})
	}
}

// TestBuildUnknownPackage: a Debian rootfs naming a package the suite does
// not have fails with apt's answer naming it, and leaves nothing behind.
func TestBuildUnknownPackage(t *testing.T) {
	testutil.Artifacts(t)
	testutil.NeedTool(t, "apt-get")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "osguard.yaml")
	os.WriteFile(cfg, []byte("apiVersion: osguard.dev/v1alpha1\nkind: Image\nspec:\n  rootfs:\n    addOsguard: false\n    debian:\n      packages: [systemd, no-such-package-osguard]\n"), 0o644)
	o := filepath.Join(dir, "out")
	out, code := erofsCLI(t, nil, "build", "-c", cfg, "-o", o)
	if code != 1 || !strings.Contains(out, "package no-such-package-osguard is not in Debian trixie") {
		t.Errorf("exit %d: %s", code, out)
	}
	if _, err := os.Stat(o); err == nil {
		t.Errorf("%s was created", o)
	}
}
