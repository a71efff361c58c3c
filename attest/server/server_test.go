package server_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/osguard/osguard/attest/api"
	"github.com/osguard/osguard/attest/internal/simnode"
	"github.com/osguard/osguard/attest/server"
	"github.com/osguard/osguard/attest/store"
	"github.com/osguard/osguard/internal/pgtest"
)

const token = "test-token"

// fixture is a verifier over a database with the real swtpm image
// registered and simulated nodes that replay its boot.
type fixture struct {
	st   *store.Store
	srv  *server.Server
	h    http.Handler
	ev   *simnode.Evidence
	meas []byte
}

func newFixture(t testing.TB, dsn string) *fixture {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ev, meas, err := simnode.LoadRecorded("../verdict/testdata")
	if err != nil {
		t.Fatal(err)
	}
	srv := &server.Server{Store: st, Token: token}
	f := &fixture{st: st, srv: srv, h: srv.Handler(), ev: ev, meas: meas}
	if code, body := f.do(t, "POST", "/v1/policies", token, meas); code != http.StatusCreated {
		t.Fatalf("add policy: %d %s", code, body)
	}
	return f
}

func sqliteDSN(t testing.TB) string { return "sqlite:" + filepath.Join(t.TempDir(), "v.db") }

// node makes a simulated node enrolled with the store (the TPM enrollment
// itself is covered by the VM tests).
func (f *fixture) node(t testing.TB, name string, rsaKey bool) *simnode.Node {
	t.Helper()
	n, err := simnode.New(name, f.ev.PCRs, f.ev.EventLog, rsaKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.st.PutNode(context.Background(), name, "", base64.StdEncoding.EncodeToString(n.AKPublic)); err != nil {
		t.Fatal(err)
	}
	return n
}

func (f *fixture) do(t testing.TB, method, path, tok string, body []byte) (int, []byte) {
	t.Helper()
	r := httptest.NewRequest(method, path, bytes.NewReader(body))
	if tok != "" {
		r.Header.Set("Authorization", "Bearer "+tok)
	}
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	return w.Code, w.Body.Bytes()
}

func (f *fixture) nonce(t testing.TB, node string) []byte {
	t.Helper()
	code, body := f.do(t, "POST", "/v1/nonce", "", []byte(`{"node":"`+node+`"}`))
	if code != http.StatusOK {
		t.Fatalf("nonce: %d %s", code, body)
	}
	var n api.NonceResponse
	if err := json.Unmarshal(body, &n); err != nil {
		t.Fatal(err)
	}
	return n.Nonce
}

func (f *fixture) attest(t testing.TB, n *simnode.Node, nonce []byte) (int, api.Verdict, []byte) {
	t.Helper()
	req, err := n.Request(nonce)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(req)
	code, body := f.do(t, "POST", "/v1/attest", "", b)
	var v api.Verdict
	json.Unmarshal(body, &v)
	return code, v, b
}

func TestFlowSQLite(t *testing.T)   { testFlow(t, sqliteDSN(t)) }
func TestFlowPostgres(t *testing.T) { testFlow(t, pgtest.Start(t)) }

func testFlow(t *testing.T, dsn string) {
	f := newFixture(t, dsn)
	n := f.node(t, "sim-1", true)
	code, v, raw := f.attest(t, n, f.nonce(t, "sim-1"))
	if code != http.StatusOK || v.State != api.Trusted {
		t.Fatalf("attest: %d %+v", code, v)
	}
	// Replaying the same request: the nonce is spent.
	if code, body := f.do(t, "POST", "/v1/attest", "", raw); code != http.StatusConflict {
		t.Fatalf("replay: %d %s, want 409", code, body)
	}
	// Another node's nonce is not this node's.
	other := f.node(t, "sim-2", false)
	if code, _, _ := f.attest(t, other, f.nonce(t, "sim-1")); code != http.StatusConflict {
		t.Fatalf("attest with another node's nonce: %d, want 409", code)
	}
	// A quote by another key over this node's nonce.
	forger, _ := simnode.New("sim-1", f.ev.PCRs, f.ev.EventLog, false)
	if code, v, _ := f.attest(t, forger, f.nonce(t, "sim-1")); code != http.StatusForbidden {
		t.Fatalf("forged quote: %d %+v, want 403", code, v)
	}
	// An event log with a byte of a digest flipped: authentic quote, untrusted.
	bad, _ := simnode.New("sim-3", f.ev.PCRs, append([]byte{}, f.ev.EventLog...), false)
	var m struct {
		PCR4 struct {
			UKI string `json:"ukiAuthenticodeSha256"`
		} `json:"pcr4"`
	}
	json.Unmarshal(f.meas, &m)
	uki, _ := hex.DecodeString(m.PCR4.UKI)
	i := bytes.Index(bad.EventLog, uki)
	if i < 0 {
		t.Fatal("the UKI's digest is not in the event log")
	}
	bad.EventLog[i] ^= 1
	f.st.PutNode(context.Background(), "sim-3", "", base64.StdEncoding.EncodeToString(bad.AKPublic))
	code, v, _ = f.attest(t, bad, f.nonce(t, "sim-3"))
	if code != http.StatusOK || v.State != api.Untrusted || !strings.Contains(v.Reason, "event log") {
		t.Fatalf("edited log: %d %+v", code, v)
	}
	code, body := f.do(t, "GET", "/v1/nodes", token, nil)
	var nodes []api.Node
	if code != http.StatusOK || json.Unmarshal(body, &nodes) != nil || len(nodes) != 3 {
		t.Fatalf("nodes: %d %s", code, body)
	}
	if nodes[0].State != api.Untrusted || nodes[0].Node != "sim-2" && nodes[0].Node != "sim-3" {
		t.Errorf("untrusted nodes do not come first: %s", body)
	}
	if n, _ := f.st.CountResults(context.Background(), ""); n != 2 {
		t.Errorf("%d results stored, want 2 (trusted, edited log)", n)
	}
}

func TestAdminNeedsToken(t *testing.T) {
	f := newFixture(t, sqliteDSN(t))
	for _, tc := range []struct{ method, path, tok string }{
		{"GET", "/v1/nodes", ""}, {"GET", "/v1/nodes", "wrong"}, {"GET", "/v1/policies", ""},
		{"POST", "/v1/policies", "x"}, {"DELETE", "/v1/policies/a/b", ""},
	} {
		if code, _ := f.do(t, tc.method, tc.path, tc.tok, f.meas); code != http.StatusUnauthorized {
			t.Errorf("%s %s with token %q: %d, want 401", tc.method, tc.path, tc.tok, code)
		}
	}
	code, body := f.do(t, "GET", "/", "", nil)
	if code != http.StatusUnauthorized || !bytes.Contains(body, []byte("Admin token")) {
		t.Errorf("page without token: %d", code)
	}
}

// TestBadRequests sends malformed, truncated and oversized requests to
// every endpoint: each gets a 4xx with a JSON error, never a 5xx.
func TestBadRequests(t *testing.T) {
	f := newFixture(t, sqliteDSN(t))
	f.node(t, "sim-1", false)
	huge := append([]byte(`{"node":"`), bytes.Repeat([]byte("A"), api.MaxBody+10)...)
	for _, tc := range []struct {
		name, method, path, tok string
		body                    string
		want                    int
	}{
		{"enroll not JSON", "POST", "/v1/enroll", "", "{", 400},
		{"enroll unknown field", "POST", "/v1/enroll", "", `{"x":1}`, 400},
		{"enroll no EK", "POST", "/v1/enroll", "", `{}`, 403},
		{"enroll garbage EK", "POST", "/v1/enroll", "", `{"ekCertificate":"AAAA"}`, 403},
		{"enroll wrong type", "POST", "/v1/enroll", "", `{"ekCertificate":5}`, 400},
		{"activate unknown", "POST", "/v1/activate", "", `{"challenge":"x","secret":"AAAA"}`, 403},
		{"activate trailing", "POST", "/v1/activate", "", `{"challenge":"x"} {}`, 400},
		{"nonce unknown node", "POST", "/v1/nonce", "", `{"node":"nope"}`, 404},
		{"nonce empty", "POST", "/v1/nonce", "", ``, 400},
		{"attest unknown node", "POST", "/v1/attest", "", `{"node":"nope"}`, 404},
		{"attest unknown nonce", "POST", "/v1/attest", "", `{"node":"sim-1","nonce":"AAAA"}`, 409},
		{"attest truncated", "POST", "/v1/attest", "", `{"node":"sim-1","nonce":"AA`, 400},
		{"attest bad base64", "POST", "/v1/attest", "", `{"node":"sim-1","quote":"!!"}`, 400},
		{"attest oversized", "POST", "/v1/attest", "", string(huge), 413},
		{"policy garbage", "POST", "/v1/policies", token, `{"image":1}`, 400},
		{"policy incomplete", "POST", "/v1/policies", token, `{"image":"a","version":"1"}`, 400},
		{"policy oversized", "POST", "/v1/policies", token, string(huge), 413},
		{"policy rm unknown", "DELETE", "/v1/policies/a/b", token, ``, 404},
		{"wrong method", "GET", "/v1/attest", "", ``, 405},
		{"unknown path", "GET", "/v2/x", "", ``, 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := f.do(t, tc.method, tc.path, tc.tok, []byte(tc.body))
			if code != tc.want {
				t.Fatalf("%d %s, want %d", code, body, tc.want)
			}
		})
	}
	// A quote with a valid nonce but garbage structures: 403, never 500.
	nonce := f.nonce(t, "sim-1")
	b, _ := json.Marshal(api.AttestRequest{Node: "sim-1", Nonce: nonce, Quote: []byte{1, 2}, Signature: []byte{3}, PCRs: [][]byte{{1}}})
	if code, body := f.do(t, "POST", "/v1/attest", "", b); code != http.StatusForbidden {
		t.Fatalf("garbage quote: %d %s", code, body)
	}
}

func TestPage(t *testing.T) {
	f := newFixture(t, sqliteDSN(t))
	n := f.node(t, "good-node", false)
	f.attest(t, n, f.nonce(t, "good-node"))
	f.node(t, "never-attested", false)
	r := httptest.NewRequest("GET", "/", nil)
	r.AddCookie(&http.Cookie{Name: "osguard_verifier", Value: token})
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	body := w.Body.String()
	if w.Code != 200 || !strings.Contains(body, `class="untrusted" data-node="never-attested"`) || !strings.Contains(body, `class="trusted" data-node="good-node"`) {
		t.Fatalf("page: %d\n%s", w.Code, body)
	}
	// The login form sets the cookie.
	r = httptest.NewRequest("POST", "/login", strings.NewReader("token="+token))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	w = httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	if w.Code != http.StatusSeeOther || len(w.Result().Cookies()) != 1 || !w.Result().Cookies()[0].HttpOnly {
		t.Fatalf("login: %d %v", w.Code, w.Result().Cookies())
	}
}

func TestTokenFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "token")
	tok, created, err := server.LoadOrCreateToken(p)
	if err != nil || !created || len(tok) != 64 {
		t.Fatalf("%q %v %v", tok, created, err)
	}
	st, _ := os.Stat(p)
	b, _ := os.ReadFile(p)
	if st.Mode().Perm() != 0o600 || string(b) != tok+"\n" {
		t.Fatalf("token file: mode %v, content %q", st.Mode(), b)
	}
	again, created, err := server.LoadOrCreateToken(p)
	if err != nil || created || again != tok {
		t.Fatalf("reload: %q %v %v", again, created, err)
	}
	os.WriteFile(p, []byte("two words\n"), 0o600)
	if _, _, err := server.LoadOrCreateToken(p); err == nil {
		t.Fatal("a token file with two words was accepted")
	}
}

func TestTLS(t *testing.T) {
	dir := t.TempDir()
	crt, key := filepath.Join(dir, "v.crt"), filepath.Join(dir, "v.key")
	c, made, err := server.LoadOrCreateTLS(crt, key, []string{"127.0.0.1"})
	if err != nil || !made {
		t.Fatal(made, err)
	}
	if st, _ := os.Stat(key); st.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v", st.Mode())
	}
	f := newFixture(t, sqliteDSN(t))
	ts := httptest.NewUnstartedServer(f.h)
	ts.TLS = tlsConfig(c)
	ts.StartTLS()
	defer ts.Close()
	pemCA, _ := os.ReadFile(crt)
	hc, err := clientWithCA(pemCA)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", ts.URL+"/v1/policies", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !bytes.Contains(b, []byte(`"version"`)) {
		t.Fatalf("%d %s", res.StatusCode, b)
	}
	if _, made, err := server.LoadOrCreateTLS(crt, key, nil); err != nil || made {
		t.Fatalf("second start made a new certificate: %v %v", made, err)
	}
}

// FuzzAPI posts hostile bodies to every endpoint: the answer is never a 5xx
// (and never a panic). Seeds: valid requests of each kind.
func FuzzAPI(f *testing.F) {
	fx := newFixture(f, sqliteDSN(f))
	n := fx.node(f, "sim-1", false)
	req, _ := n.Request(bytes.Repeat([]byte{1}, 32))
	good, _ := json.Marshal(req)
	paths := []string{"/v1/enroll", "/v1/activate", "/v1/nonce", "/v1/attest", "/v1/policies"}
	for i := range paths {
		f.Add(uint8(i), good)
		f.Add(uint8(i), []byte(`{"node":"sim-1"}`))
	}
	f.Add(uint8(4), fx.meas)
	f.Add(uint8(0), []byte(`{"ekCertificate":"MIIB","ak":{"public":"AAEACwAFBHIAAAAQABQACwgAAAAAAAEA"}}`))
	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		path := paths[int(which)%len(paths)]
		code, out := fx.do(t, "POST", path, token, body)
		if code >= 500 {
			t.Fatalf("%s: %d %s", path, code, out)
		}
	})
}
