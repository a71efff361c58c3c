package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/osguard/osguard/internal/testutil"
)

// sbRunCLI runs the CLI in-process and returns stdout and the exit code
// main would use.
func sbRunCLI(t *testing.T, args ...string) (string, int) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return out.String(), 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return out.String() + ee.Error(), ee.code
	}
	return out.String() + err.Error(), 1
}

// TestSBCommands runs keys init, sb sign, sb verify and sb vars end to end;
// the oracles for the outputs are in the secureboot package's tests.
func TestSBCommands(t *testing.T) {
	stub := testutil.Artifacts(t).SystemdStub
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	t.Setenv("SOURCE_DATE_EPOCH", "1767225600") // 2026-01-01
	if out, code := sbRunCLI(t, "keys", "init", keys, "--subject-prefix", "cli"); code != 0 {
		t.Fatalf("keys init: %d %s", code, out)
	}
	if out, code := sbRunCLI(t, "keys", "init", keys); code != 1 || !strings.Contains(out, "exists") {
		t.Errorf("keys init on an existing dir: %d %s", code, out)
	}
	if out, code := sbRunCLI(t, "keys", "init", keys, "--force", "--subject-prefix", "cli"); code != 0 {
		t.Errorf("keys init --force: %d %s", code, out)
	}
	if out, code := sbRunCLI(t, "keys", "init", filepath.Join(dir, "k2"), "--not-before", "yesterday"); code != 2 {
		t.Errorf("bad --not-before: exit %d, want 2: %s", code, out)
	}
	signed := filepath.Join(dir, "stub.signed")
	if out, code := sbRunCLI(t, "sb", "sign", "--key", filepath.Join(keys, "db.key"), "--cert", filepath.Join(keys, "db.crt"), "-o", signed, stub); code != 0 {
		t.Fatalf("sb sign: %d %s", code, out)
	}
	for _, tc := range []struct {
		name, cert, file string
		code             int
	}{
		{"signed by db", "db.crt", signed, 0},
		{"checked against KEK", "KEK.crt", signed, 1},
		{"unsigned", "db.crt", stub, 1},
	} {
		out, code := sbRunCLI(t, "sb", "verify", "--cert", filepath.Join(keys, tc.cert), tc.file)
		if code != tc.code {
			t.Errorf("sb verify %s: exit %d, want %d: %s", tc.name, code, tc.code, out)
		}
	}
	b, _ := os.ReadFile(signed)
	b[len(b)/2] ^= 1
	mod := filepath.Join(dir, "stub.mod")
	os.WriteFile(mod, b, 0o644)
	if out, code := sbRunCLI(t, "sb", "verify", "--cert", filepath.Join(keys, "db.crt"), mod); code != 1 || !strings.Contains(out, "modified") {
		t.Errorf("sb verify modified: exit %d: %s", code, out)
	}
	if out, code := sbRunCLI(t, "sb", "verify", mod); code != 2 {
		t.Errorf("sb verify without --cert: exit %d, want 2: %s", code, out)
	}

	testutil.NeedFile(t, "/usr/share/OVMF/OVMF_VARS_4M.fd")
	vars := filepath.Join(dir, "VARS.fd")
	if out, code := sbRunCLI(t, "sb", "vars", "--keys", keys, "--template", "/usr/share/OVMF/OVMF_VARS_4M.fd", "-o", vars); code != 0 {
		t.Fatalf("sb vars: %d %s", code, out)
	}
	if st, err := os.Stat(vars); err != nil || st.Size() != 540672 {
		t.Errorf("VARS.fd: %v", err)
	}

	// status and enroll against a directory standing in for efivarfs.
	efi := filepath.Join(dir, "efivars")
	os.Mkdir(efi, 0o755)
	os.WriteFile(filepath.Join(efi, "SetupMode-8be4df61-93ca-11d2-aa0d-00e098032b8c"), []byte{6, 0, 0, 0, 0}, 0o644)
	if out, code := sbRunCLI(t, "sb", "enroll", "--keys", keys, "--efivars", efi); code != 1 || !strings.Contains(out, "not in setup mode") {
		t.Errorf("sb enroll in user mode: exit %d: %s", code, out)
	}
	if ents, _ := os.ReadDir(efi); len(ents) != 1 {
		t.Errorf("enroll in user mode wrote variables: %v", ents)
	}
	// What the firmware stores after enrollment: attributes ‖ signature list.
	for _, v := range []string{"PK-8be4df61-93ca-11d2-aa0d-00e098032b8c", "KEK-8be4df61-93ca-11d2-aa0d-00e098032b8c", "db-d719b2cb-3d3a-4596-a3bc-dad00e67656f"} {
		esl, err := os.ReadFile(filepath.Join(keys, strings.SplitN(v, "-", 2)[0]+".esl"))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(efi, v), append([]byte{0x27, 0, 0, 0}, esl...), 0o644)
	}
	os.WriteFile(filepath.Join(efi, "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"), []byte{6, 0, 0, 0, 1}, 0o644)
	out, code := sbRunCLI(t, "sb", "status", "--efivars", efi)
	if code != 0 || !strings.Contains(out, "db CN=cli db sha256:") || !strings.Contains(out, "PK CN=cli PK") {
		t.Errorf("sb status: exit %d: %s", code, out)
	}
	if out, code := sbRunCLI(t, "sb", "status", "--efivars", efi, "--json"); code != 0 || !strings.Contains(out, `"enforcing": true`) {
		t.Errorf("sb status --json: exit %d: %s", code, out)
	}
}
