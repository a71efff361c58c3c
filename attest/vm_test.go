package attest_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/osguard/osguard/attest/api"
	"github.com/osguard/osguard/attest/client"
	"github.com/osguard/osguard/attest/server"
	"github.com/osguard/osguard/attest/store"
	"github.com/osguard/osguard/image"
	"github.com/osguard/osguard/internal/imagetest"
	"github.com/osguard/osguard/internal/testutil"
	"github.com/osguard/osguard/internal/vm"
	"github.com/osguard/osguard/internal/vm/vmtest"
	"github.com/osguard/osguard/secureboot"
)

func TestMain(m *testing.M) { imagetest.Main(m) }

// verifier is a verifier on 127.0.0.1 for VM tests, behind a recorder that
// keeps the last /v1/attest body and may tamper with the next one.
type verifier struct {
	srv   *server.Server
	st    *store.Store
	addr  string
	admin *client.Admin

	mu     sync.Mutex
	last   []byte
	tamper func(*api.AttestRequest)
}

func startVerifier(t *testing.T, dsn string, ekCA string) *verifier {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	roots, err := server.LoadEKRoots([]string{ekCA})
	if err != nil {
		t.Fatal(err)
	}
	v := &verifier{st: st, srv: &server.Server{Store: st, EKRoots: roots, Token: "test-token"}}
	h := v.srv.Handler()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/attest" {
			b, _ := io.ReadAll(r.Body)
			v.mu.Lock()
			if v.tamper != nil {
				var req api.AttestRequest
				if json.Unmarshal(b, &req) == nil {
					v.tamper(&req)
					b, _ = json.Marshal(req)
				}
				v.tamper = nil
			}
			v.last = b
			v.mu.Unlock()
			r.Body = io.NopCloser(bytes.NewReader(b))
			r.ContentLength = int64(len(b))
		}
		h.ServeHTTP(w, r)
	})}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	v.addr = ln.Addr().String()
	hc, _ := client.New(nil)
	v.admin = &client.Admin{URL: "http://" + v.addr, Token: "test-token", HTTP: hc}
	return v
}

// node boots an image with a manufactured swtpm (EK certificate by the CA
// in caDir) and user networking whose only exit is the verifier.
func bootNode(t *testing.T, out, vars, tpmState, caDir, verifierAddr string) *vm.Machine {
	t.Helper()
	if vars == "" {
		vars = filepath.Join(out, image.VarsFile)
	}
	start := time.Now()
	m := vmtest.Start(t, vm.Config{
		UEFI: true, Vars: vars, TPM: true, TPMState: tpmState, TPMCA: caDir,
		Drives: []vm.Drive{{Path: filepath.Join(out, image.DiskFile), Snapshot: true}},
		Net:    &vm.UserNet{GuestFwd: map[string]string{vm.GuestFwdAddr: verifierAddr}},
	})
	if _, err := m.WaitForText(vm.ShellPrompt, 0, 4*time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Logf("booted to the shell in %v", time.Since(start).Round(time.Millisecond))
	if _, err := m.Run("dmesg -n 1 && ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0", time.Minute); err != nil {
		t.Fatal(err)
	}
	return m
}

const agentCmd = "osguard attest agent --once --verifier http://" + vm.GuestFwdAddr

// runAgent runs the agent once on the node and returns its output and
// whether it exited 0.
func runAgent(t *testing.T, m *vm.Machine) (string, bool) {
	t.Helper()
	start := time.Now()
	out, err := m.Run(agentCmd+" 2>&1", 3*time.Minute)
	var ee *vm.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	t.Logf("agent (%v): %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(out))
	return out, err == nil
}

// attestImage builds the default image with a network driver as version
// name, with extra cmdline words.
func attestImage(t *testing.T, b *imagetest.Builder, name string, cmdline ...string) string {
	t.Helper()
	return b.Image(t, name, func(c *image.Config) {
		c.Metadata.Version = name
		c.Spec.Kernel.Extra = append(c.Spec.Kernel.Extra, "virtio_net")
		c.Spec.Cmdline = append(c.Spec.Cmdline, cmdline...)
	})
}

func register(t *testing.T, v *verifier, out string) {
	t.Helper()
	meas, err := os.ReadFile(filepath.Join(out, image.MeasurementsFile))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.admin.AddPolicy(context.Background(), meas); err != nil {
		t.Fatal(err)
	}
}

// manufacture makes a TPM state with an EK certificate from the CA in caDir.
func manufacture(t *testing.T, caDir string) string {
	t.Helper()
	state := filepath.Join(t.TempDir(), "tpm")
	if err := vm.ManufactureTPM(state, caDir); err != nil {
		t.Fatal(err)
	}
	return state
}

// TestAttestationInVM boots a registered image and checks the whole chain
// against a real TPM (swtpm) and the verifier, then the attacks that need a
// live node: an EK from another CA, a replayed quote, and event logs with one
// event edited or removed.
func TestAttestationInVM(t *testing.T) {
	b := imagetest.Get(t)
	testutil.NeedTool(t, "swtpm", "swtpm_setup", "swtpm_localca", "qemu-system-x86_64")
	out := attestImage(t, b, "attest")
	caDir := filepath.Join(t.TempDir(), "tpm-ca")
	state := manufacture(t, caDir)
	v := startVerifier(t, "sqlite:"+filepath.Join(t.TempDir(), "verifier.db"), filepath.Join(caDir, "issuercert.pem"))
	ctx := context.Background()
	register(t, v, out)
	meas, err := os.ReadFile(filepath.Join(out, image.MeasurementsFile))
	if err != nil {
		t.Fatal(err)
	}
	m := bootNode(t, out, "", state, caDir, v.addr)

	t.Run("trusted", func(t *testing.T) {
		out, ok := runAgent(t, m)
		if !ok || !strings.Contains(out, ": trusted") {
			t.Fatalf("agent did not come out trusted: %s", out)
		}
		ns, err := v.admin.Nodes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(ns) != 1 || ns[0].State != api.Trusted || ns[0].Version != "attest" || ns[0].Reason != "" {
			t.Fatalf("nodes: %+v", ns)
		}
		if os.Getenv("OSGUARD_WRITE_TESTDATA") == "1" {
			writeEvidence(t, v, ns[0].Node, meas)
		}
	})

	t.Run("replayed-quote", func(t *testing.T) {
		v.mu.Lock()
		last := v.last
		v.mu.Unlock()
		if last == nil {
			t.Fatal("no attestation recorded")
		}
		before, _ := v.st.CountResults(ctx, "")
		res, err := http.Post("http://"+v.addr+"/v1/attest", "application/json", bytes.NewReader(last))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusConflict {
			t.Fatalf("replayed quote: %d %s, want 409", res.StatusCode, body)
		}
		after, _ := v.st.CountResults(ctx, "")
		if after != before {
			t.Fatalf("the replay was recorded: %d results, then %d", before, after)
		}
	})

	for _, tc := range []struct {
		name   string
		tamper func(t *testing.T, log []byte) []byte
	}{
		{"event-log-edited", func(t *testing.T, log []byte) []byte { return editEvent(t, log, 4) }},
		{"event-log-event-removed", func(t *testing.T, log []byte) []byte { return removeEvent(t, log, 7) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v.mu.Lock()
			v.tamper = func(r *api.AttestRequest) { r.EventLog = tc.tamper(t, r.EventLog) }
			v.mu.Unlock()
			out, ok := runAgent(t, m)
			if ok || !strings.Contains(out, "untrusted") || !strings.Contains(out, "does not replay") {
				t.Fatalf("tampered event log was not rejected: %s", out)
			}
			// The next honest attestation is trusted again.
			if out, ok := runAgent(t, m); !ok {
				t.Fatalf("honest attestation after the attack: %s", out)
			}
		})
	}

	t.Run("ek-from-another-ca", func(t *testing.T) {
		other := filepath.Join(t.TempDir(), "other-ca")
		manufacture(t, other)
		roots, err := server.LoadEKRoots([]string{filepath.Join(other, "issuercert.pem")})
		if err != nil {
			t.Fatal(err)
		}
		saved := v.srv.EKRoots
		v.srv.EKRoots = roots
		defer func() { v.srv.EKRoots = saved }()
		out, ok := runAgent(t, m)
		if ok || !strings.Contains(out, "403") || !strings.Contains(out, "does not chain") {
			t.Fatalf("EK from an untrusted CA was not rejected: %s", out)
		}
	})
}

// TestUntrustedBootsInVM boots an unregistered build and a registered one
// with Secure Boot off, and checks that each comes out untrusted with the
// PCR that tells.
func TestUntrustedBootsInVM(t *testing.T) {
	b := imagetest.Get(t)
	testutil.NeedTool(t, "swtpm", "swtpm_setup", "swtpm_localca", "qemu-system-x86_64")
	registered := attestImage(t, b, "attest")
	other := attestImage(t, b, "attest-other", "osguard.debug=1")
	// osguard-init refuses a node without Secure Boot unless told
	// otherwise; this registered build is told, so that its userland (and
	// agent) runs when the firmware is in setup mode: only PCR 7 differs.
	insecure := attestImage(t, b, "attest-insecure", "osguard.insecure=1")
	built, err := os.ReadFile(filepath.Join(insecure, image.VarsFile))
	if err != nil {
		t.Fatal(err)
	}
	noPK, err := secureboot.DeleteVariable(built, secureboot.VarPK)
	if err != nil {
		t.Fatal(err)
	}
	noPKVars := filepath.Join(t.TempDir(), "vars-without-pk.fd")
	if err := os.WriteFile(noPKVars, noPK, 0o644); err != nil {
		t.Fatal(err)
	}
	caDir := filepath.Join(t.TempDir(), "tpm-ca")
	state := manufacture(t, caDir)
	v := startVerifier(t, "sqlite:"+filepath.Join(t.TempDir(), "verifier.db"), filepath.Join(caDir, "issuercert.pem"))
	register(t, v, registered)
	register(t, v, insecure)
	for _, tc := range []struct {
		name, out, vars string
		want            []string
	}{
		{"unregistered-build", other, "", []string{"PCR 4", "PCR 11"}},
		{"secure-boot-off", insecure, noPKVars, []string{"PCR 7: Secure Boot is off"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := bootNode(t, tc.out, tc.vars, state, caDir, v.addr)
			out, ok := runAgent(t, m)
			if ok || !strings.Contains(out, "untrusted") {
				t.Fatalf("agent: %s", out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("reason does not name %q: %s", w, out)
				}
			}
			m.Close()
		})
	}
}

// tcgEvent is where one event sits in a crypto-agile TCG event log
// (TCG PC Client PFP 1.05, section 10.2.2, TCG_PCR_EVENT2).
type tcgEvent struct {
	start, end int
	pcr        uint32
	sha256     int // offset of the sha256 digest, or -1
}

// tcgEvents walks a crypto-agile event log: the first event is a
// TCG_PCR_EVENT (SHA-1 format) holding the Spec ID event, the others are
// TCG_PCR_EVENT2 with a digest per bank.
func tcgEvents(t *testing.T, log []byte) []tcgEvent {
	t.Helper()
	le := func(off int) uint32 {
		return uint32(log[off]) | uint32(log[off+1])<<8 | uint32(log[off+2])<<16 | uint32(log[off+3])<<24
	}
	sizes := map[uint16]int{0x0004: 20, 0x000b: 32, 0x000c: 48, 0x000d: 64, 0x0012: 32}
	off := 32 + int(le(28)) // pcr, type, sha1[20], size, Spec ID event
	var evs []tcgEvent
	for off+12 <= len(log) {
		e := tcgEvent{start: off, pcr: le(off), sha256: -1}
		n := int(le(off + 8))
		p := off + 12
		for i := 0; i < n; i++ {
			alg := uint16(log[p]) | uint16(log[p+1])<<8
			if alg == 0x000b {
				e.sha256 = p + 2
			}
			sz, ok := sizes[alg]
			if !ok {
				t.Fatalf("event log: unknown digest algorithm 0x%x", alg)
			}
			p += 2 + sz
		}
		p += 4 + int(le(p))
		e.end = p
		evs = append(evs, e)
		off = p
	}
	return evs
}

// editEvent flips a bit of the sha256 digest of the last event of pcr.
func editEvent(t *testing.T, log []byte, pcr uint32) []byte {
	out := bytes.Clone(log)
	var last *tcgEvent
	for _, e := range tcgEvents(t, log) {
		if e.pcr == pcr && e.sha256 >= 0 {
			last = &e
		}
	}
	if last == nil {
		t.Fatalf("event log: no event for PCR %d", pcr)
	}
	out[last.sha256] ^= 1
	return out
}

// removeEvent removes the first event of pcr.
func removeEvent(t *testing.T, log []byte, pcr uint32) []byte {
	for _, e := range tcgEvents(t, log) {
		if e.pcr == pcr {
			return append(bytes.Clone(log[:e.start]), log[e.end:]...)
		}
	}
	t.Fatalf("event log: no event for PCR %d", pcr)
	return nil
}

// writeEvidence keeps a real swtpm attestation as test data of package
// verdict (OSGUARD_WRITE_TESTDATA=1): the recorded request, the node's AK
// and the image's measurements.json.
func writeEvidence(t *testing.T, v *verifier, node string, meas []byte) {
	t.Helper()
	v.mu.Lock()
	last := v.last
	v.mu.Unlock()
	var req api.AttestRequest
	if err := json.Unmarshal(last, &req); err != nil {
		t.Fatal(err)
	}
	akB64, err := v.st.NodeAK(context.Background(), node)
	if err != nil {
		t.Fatal(err)
	}
	ak, _ := base64.StdEncoding.DecodeString(akB64)
	ev := map[string]any{"akPublic": ak, "nonce": req.Nonce, "quote": req.Quote, "signature": req.Signature, "pcrs": req.PCRs, "eventLog": req.EventLog}
	b, _ := json.MarshalIndent(ev, "", "  ")
	dir := filepath.Join("verdict", "testdata")
	os.MkdirAll(dir, 0o755)
	if err := os.WriteFile(filepath.Join(dir, "swtpm-evidence.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "swtpm-measurements.json"), meas, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s", dir)
}
