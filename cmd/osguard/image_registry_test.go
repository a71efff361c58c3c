package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/osguard/osguard/internal/registrytest"
	"github.com/osguard/osguard/internal/testutil"
	"github.com/osguard/osguard/registry"
)

// TestImagePushPull runs 'osguard image push' and 'osguard image pull'
// against docker-registry on 127.0.0.1; the registry package's tests
// check the transfer itself with skopeo and umoci.
func TestImagePushPull(t *testing.T) {
	testutil.NeedTool(t, "umoci")
	reg := registrytest.Start(t)
	layout := registrytest.SampleLayout(t, 4096)
	sig := registrytest.AddReferrer(t, layout, "latest", "application/vnd.osguard.layer-signatures.v1+json", []byte(`{"schemaVersion":1,"layers":[]}`))
	image := registrytest.Entry(t, layout, "latest")
	target := reg.Addr + "/osguard/cli:v1"

	out, code := sbRunCLI(t, "image", "push", "-q", layout+":latest", target)
	if code != 0 || !strings.Contains(out, "pushed "+target+"@"+image.Digest.String()) || !strings.Contains(out, "referrer "+sig.Digest.String()) {
		t.Fatalf("image push: exit %d\n%s", code, out)
	}

	dst := filepath.Join(t.TempDir(), "pulled")
	out, code = sbRunCLI(t, "image", "pull", "-q", target, "--layout", dst)
	if code != 0 || out != target+"\n" {
		t.Fatalf("image pull: exit %d, output %q, want %q", code, out, target+"\n")
	}
	if !registrytest.SameBlob(t, layout, dst, sig) {
		t.Fatal("the pulled referrer differs")
	}

	dst2 := filepath.Join(t.TempDir(), "pulled")
	out, code = sbRunCLI(t, "image", "pull", "--json", "-q", target, "--layout", dst2)
	var res registry.PullResult
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil || res.Image.Digest != image.Digest || len(res.Referrers) != 1 || res.Layout != dst2 {
		t.Fatalf("image pull --json: exit %d\n%s", code, out)
	}

	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"push one argument", []string{"image", "push", layout}, 2, "push takes LAYOUT[:REF] and HOST[:PORT]/REPO:TAG"},
		// Without --layout, pull imports into the node's containerd; with
		// none at --address it says so before it fetches anything.
		{"pull without --layout, no containerd", []string{"image", "pull", target, "--address", filepath.Join(t.TempDir(), "none.sock"), "--snapshotter-root", filepath.Join(t.TempDir(), "sn")}, 1, "no containerd at"},
		{"pull bad platform", []string{"image", "pull", target, "--layout", filepath.Join(t.TempDir(), "x"), "--platform", "linux"}, 2, "want OS/ARCH"},
		{"pull unknown tag", []string{"image", "pull", "-q", reg.Addr + "/osguard/cli:nope", "--layout", filepath.Join(t.TempDir(), "x")}, 1, "not found in the registry"},
		{"push unknown layout ref", []string{"image", "push", "-q", layout + ":nope", target}, 1, `no image "nope" in the layout`},
		{"pull into non-empty dir", []string{"image", "pull", "-q", target, "--layout", dst}, 1, "not empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, code := sbRunCLI(t, tc.args...)
			if code != tc.code || !strings.Contains(out, tc.want) {
				t.Fatalf("exit %d, want %d; output:\n%s\nwant %q", code, tc.code, out, tc.want)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dst, "index.json")); err != nil {
		t.Fatal(err)
	}
}
