package attest_test

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/osguard/osguard/attest/api"
	"github.com/osguard/osguard/image"
	"github.com/osguard/osguard/internal/imagetest"
	"github.com/osguard/osguard/internal/testutil"
	"github.com/osguard/osguard/internal/vm/vmtest"
)

// freePort returns a port on 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestCLIAttestationInVM drives the commands as a user would: osguard
// attest serve, an image built with spec.attestation (osguard build
// --attest), attest policy add, osguard run --verifier (whose node runs
// the agent at boot), the agent --once on the node, and attest nodes.
func TestCLIAttestationInVM(t *testing.T) {
	b := imagetest.Get(t)
	testutil.NeedTool(t, "swtpm", "swtpm_setup", "swtpm_localca", "qemu-system-x86_64")
	out := b.Image(t, "attest-cli", func(c *image.Config) {
		c.Metadata.Version = "attest-cli"
		if err := c.EnableAttestation(); err != nil {
			t.Fatal(err)
		}
	})
	osguard := filepath.Join(b.Bins, "osguard")
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	addr := freePort(t)
	url := "http://" + addr
	caDir := filepath.Join(dir, "tpm-ca")
	serve := exec.Command(osguard, "attest", "serve", "--listen", addr, "--db", "sqlite:"+filepath.Join(dir, "v.db"),
		"--token-file", tokenFile, "--ek-ca", filepath.Join(caDir, "issuercert.pem"))
	var serveLog bytes.Buffer
	serve.Stdout, serve.Stderr = &serveLog, &serveLog
	serve.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		serve.Process.Signal(os.Interrupt)
		serve.Wait()
		if t.Failed() {
			t.Logf("verifier log:\n%s", serveLog.String())
		}
	})
	for i := 0; ; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		if i > 100 {
			t.Fatalf("verifier did not listen: %s", serveLog.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	st, err := os.Stat(tokenFile)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v, mode %v; want 0600", err, st.Mode())
	}
	run := func(args ...string) (string, error) {
		c := exec.Command(osguard, args...)
		o, err := c.CombinedOutput()
		return string(o), err
	}
	if o, err := run("attest", "policy", "add", "--verifier", url, "--token-file", tokenFile, filepath.Join(out, image.MeasurementsFile)); err != nil {
		t.Fatalf("policy add: %v: %s", err, o)
	}
	start := time.Now()
	o, err := run("run", out, "--verifier", addr, "--tpm-ca", caDir, "--timeout", "5m",
		"--exec", "sleep 30; osguard attest agent --once")
	t.Logf("osguard run (%v): %s", time.Since(start).Round(time.Millisecond), vmtest.Tail(o, 30))
	if err != nil || !strings.Contains(o, ": trusted") {
		t.Fatalf("osguard run --exec agent: %v: %s", err, o)
	}
	o, err = run("attest", "nodes", "--verifier", url, "--token-file", tokenFile, "--json")
	if err != nil {
		t.Fatalf("attest nodes: %v: %s", err, o)
	}
	var nodes []map[string]any
	if err := json.Unmarshal([]byte(o), &nodes); err != nil {
		t.Fatalf("attest nodes --json: %v: %s", err, o)
	}
	if len(nodes) != 1 || nodes[0]["state"] != api.Trusted || nodes[0]["version"] != "attest-cli" {
		t.Fatalf("nodes: %s", o)
	}
	for _, k := range []string{"node", "image", "version", "state", "reason", "lastSeen"} {
		if _, ok := nodes[0][k]; !ok {
			t.Errorf("attest nodes --json: no field %q", k)
		}
	}
	// The agent the node started at boot attested too.
	if n := strings.Count(serveLog.String(), ": trusted osguard"); n < 2 {
		t.Errorf("the verifier logged %d trusted attestations, want the boot one and --once:\n%s", n, serveLog.String())
	}
	o, _ = run("attest", "nodes", "--verifier", url, "--token-file", tokenFile)
	t.Logf("attest nodes:\n%s", o)
	if o, err := run("attest", "policy", "rm", "--verifier", url, "--token-file", tokenFile, "osguard-default", "nope"); err == nil {
		t.Errorf("policy rm of an unknown version succeeded: %s", o)
	}
	if o, err := run("attest", "policy", "rm", "--verifier", url, "--token-file", tokenFile, filepath.Join(out, image.MeasurementsFile)); err != nil {
		t.Errorf("policy rm: %v: %s", err, o)
	}
}
