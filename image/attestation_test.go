package image

import (
	"slices"
	"strings"
	"testing"

	"github.com/osguard/osguard/erofs"
)

func TestAttestationConfig(t *testing.T) {
	head := "apiVersion: osguard.dev/v1alpha1\nkind: Image\nmetadata: {name: n}\nspec:\n"
	c, err := ParseConfig([]byte(head+"  attestation: {}\n"), "")
	if err != nil {
		t.Fatal(err)
	}
	a := c.Spec.Attestation
	if a == nil || a.Verifier != DefaultVerifierURL || a.Interval != "5m" || !slices.Contains(c.Spec.Kernel.Extra, "virtio_net") {
		t.Fatalf("defaults: %+v %v", a, c.Spec.Kernel.Extra)
	}
	for _, tc := range []struct{ yaml, want string }{
		{"  attestation: {verifier: ftp://x}\n", "spec.attestation.verifier"},
		{"  attestation: {interval: soon}\n", "spec.attestation.interval"},
		{"  attestation: {interval: -1m}\n", "spec.attestation.interval"},
		{"  attestation: {url: x}\n", "url"},
	} {
		if _, err := ParseConfig([]byte(head+tc.yaml), ""); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want an error naming %s", tc.yaml, err, tc.want)
		}
	}
	d, _ := LoadConfig("")
	if d.Spec.Attestation != nil {
		t.Fatal("the default profile attests")
	}
	if err := d.EnableAttestation(); err != nil || d.Spec.Attestation == nil {
		t.Fatalf("EnableAttestation: %v", err)
	}
	root := erofs.NewTree()
	root.Add("/", &erofs.Inode{Mode: erofs.S_IFDIR | 0o755})
	if err := addAttestation(root, d.Spec.Attestation, 0); err != nil {
		t.Fatal(err)
	}
	if ino := root.Get(AttestationConfigPath); ino == nil || ino.Size == 0 {
		t.Fatalf("%s not in the tree", AttestationConfigPath)
	}
}

func TestLoopbackHostPort(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:8443": "127.0.0.1:8443", "localhost:80": "127.0.0.1:80", "127.1.2.3:1": "127.1.2.3:1",
		"10.0.0.1:80": "", "example.org:80": "", "127.0.0.1": "", "127.0.0.1:0": "", "127.0.0.1:x": "", "[::1]:80": "",
	} {
		got, err := loopbackHostPort(in)
		if (err == nil) != (want != "") || got != want {
			t.Errorf("loopbackHostPort(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}
