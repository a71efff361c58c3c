package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/osguard/osguard/imagesig"
	"github.com/osguard/osguard/internal/ocitest"
)

// imageRunCLI runs the CLI in-process; stdout and stderr apart.
func imageRunCLI(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	root := newRootCmd()
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetArgs(args)
	err := root.Execute()
	var ee *exitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.code
		errb.WriteString(ee.Error())
	default:
		code = 1
		if isUsageError(err) {
			code = 2 // as main does
		}
		errb.WriteString(err.Error())
	}
	return out.String(), errb.String(), code
}

// TestImageSignVerify runs keys init, image sign and image verify end to
// end; imagesig's tests hold the oracles.
func TestImageSignVerify(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	if _, e, code := imageRunCLI(t, "keys", "init", keys); code != 0 {
		t.Fatalf("keys init: %d %s", code, e)
	}
	fi, err := os.Stat(filepath.Join(keys, "containers.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("containers.key: %v %v", fi, err)
	}
	lay := filepath.Join(dir, "layout")
	s := ocitest.SampleLayout(t, lay, ocitest.LayoutOptions{Compression: ocitest.Gzip, Ref: "v1"})
	ocitest.SampleLayout(t, lay, ocitest.LayoutOptions{Ref: "unsigned", Layers: [][]ocitest.Entry{{{Name: "u"}}}})
	key, crt, dbCrt := filepath.Join(keys, "containers.key"), filepath.Join(keys, "containers.crt"), filepath.Join(keys, "db.crt")

	out, e, code := imageRunCLI(t, "image", "sign", "--key", key, "--cert", crt, "--json", lay+":v1")
	if code != 0 {
		t.Fatalf("image sign: %d %s", code, e)
	}
	var rep imagesig.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil || !rep.OK || len(rep.Images) != 1 || rep.Images[0].Referrer == "" {
		t.Fatalf("sign --json: %v\n%s", err, out)
	}
	if !strings.Contains(e, "layer "+s.Layers[0].Digest.String()) || !strings.Contains(e, "signed "+s.Manifest.Digest.String()) {
		t.Errorf("sign progress on stderr:\n%s", e)
	}
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string // in stdout+stderr
	}{
		{"ok", []string{"image", "verify", "--cert", crt, lay + ":v1"}, 0, "ok " + s.Layers[1].Digest.String()},
		{"ok-json", []string{"image", "verify", "--cert", crt, "--json", lay + ":v1"}, 0, `"status": "ok"`},
		{"other-key", []string{"image", "verify", "--cert", dbCrt, lay + ":v1"}, 1, "layer " + s.Layers[0].Digest.String() + " of " + s.Manifest.Digest.String() + ": wrong-key"},
		{"unsigned", []string{"image", "verify", "--cert", crt, lay + ":unsigned"}, 1, "unsigned: no signature lists this layer"},
		{"unsigned-json", []string{"image", "verify", "--cert", crt, "--json", lay + ":unsigned"}, 1, `"ok": false`},
		{"two-images", []string{"image", "verify", "--cert", crt, lay}, 1, "holds 2 images"},
		{"no-ref", []string{"image", "verify", "--cert", crt, lay + ":nope"}, 1, `no image "nope"`},
		{"no-key", []string{"image", "sign", "--cert", crt, lay + ":v1"}, 2, "--key is required"},
		{"no-cert", []string{"image", "verify", lay + ":v1"}, 2, "cert"},
		{"key-mismatch", []string{"image", "sign", "--key", key, "--cert", dbCrt, lay + ":v1"}, 1, "does not match"},
		{"not-layout", []string{"image", "verify", "--cert", crt, keys}, 1, "not an OCI image layout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, e, code := imageRunCLI(t, tc.args...)
			if code != tc.code || !strings.Contains(out+e, tc.want) {
				t.Fatalf("exit %d, want %d; output does not contain %q:\n%s\n%s", code, tc.code, tc.want, out, e)
			}
		})
	}
	// An archive verifies like the directory; signing needs the directory.
	arch := filepath.Join(dir, "a.tar")
	ocitest.Archive(t, lay, arch)
	if _, e, code := imageRunCLI(t, "image", "verify", "--cert", crt, arch+":v1"); code != 0 {
		t.Fatalf("verify archive: %d %s", code, e)
	}
	if _, e, code := imageRunCLI(t, "image", "sign", "--key", key, "--cert", crt, arch+":v1"); code != 1 || !strings.Contains(e, "not a directory") {
		t.Fatalf("sign archive: %d %s", code, e)
	}
}
