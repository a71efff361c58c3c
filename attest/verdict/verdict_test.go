package verdict_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/osguard/osguard/attest/internal/simnode"
	"github.com/osguard/osguard/attest/verdict"
)

// The test data is a real attestation: swtpm behind OVMF Secure Boot
// booting a built image, recorded by attest's TestAttestationInVM with
// OSGUARD_WRITE_TESTDATA=1, with that image's measurements.json.
func load(t testing.TB) (*simnode.Evidence, *verdict.Policy) {
	t.Helper()
	ev, b, err := simnode.LoadRecorded("testdata")
	if err != nil {
		t.Fatal(err)
	}
	p, err := verdict.ParsePolicy(b)
	if err != nil {
		t.Fatal(err)
	}
	return ev, p
}

func evidence(e *simnode.Evidence) verdict.Evidence {
	return verdict.Evidence{AKPublic: e.AKPublic, Nonce: e.Nonce, Quote: e.Quote, Signature: e.Signature, PCRs: e.PCRs, EventLog: e.EventLog}
}

func TestRealEvidence(t *testing.T) {
	e, p := load(t)
	var c verdict.Cache
	for i, check := range []func(verdict.Evidence, []*verdict.Policy) (verdict.Result, error){verdict.Check, c.Check, c.Check} {
		res, err := check(evidence(e), []*verdict.Policy{p})
		if err != nil {
			t.Fatal(i, err)
		}
		if !res.Trusted || res.Image != p.Image || res.Version != p.Version {
			t.Fatalf("%d: real swtpm evidence: %+v", i, res)
		}
	}
	// A cached replay does not let another log or other PCRs through.
	ev := evidence(e)
	ev.EventLog = ev.EventLog[:len(ev.EventLog)-10]
	if _, err := c.Check(ev, []*verdict.Policy{p}); !errors.Is(err, verdict.ErrEventLog) {
		t.Fatalf("cut log after a cached replay: %v", err)
	}
}

func TestRejections(t *testing.T) {
	e, p := load(t)
	other := *p
	other.Version = "other"
	other.PCR7.SHA256 = strings.Repeat("ab", 32)
	wrong11 := *p
	wrong11.PCR11.Phases = nil
	for _, tc := range []struct {
		name     string
		edit     func(*verdict.Evidence)
		policies []*verdict.Policy
		err      error
		reason   string
	}{
		{"other nonce", func(v *verdict.Evidence) { v.Nonce = bytes.Repeat([]byte{1}, 32) }, []*verdict.Policy{p}, verdict.ErrQuote, "nonce"},
		{"PCR value changed", func(v *verdict.Evidence) { v.PCRs = clone(v.PCRs); v.PCRs[4][0] ^= 1 }, []*verdict.Policy{p}, verdict.ErrQuote, "digest"},
		{"signature flipped", func(v *verdict.Evidence) { v.Signature = flip(v.Signature, len(v.Signature)-1) }, []*verdict.Policy{p}, verdict.ErrQuote, "signature"},
		{"15 PCRs", func(v *verdict.Evidence) { v.PCRs = v.PCRs[:15] }, []*verdict.Policy{p}, verdict.ErrQuote, "16"},
		{"event log truncated", func(v *verdict.Evidence) { v.EventLog = v.EventLog[:len(v.EventLog)/2] }, []*verdict.Policy{p}, verdict.ErrEventLog, ""},
		{"event log empty", func(v *verdict.Evidence) { v.EventLog = nil }, []*verdict.Policy{p}, verdict.ErrEventLog, ""},
		{"no policy", nil, nil, nil, "no image version is registered"},
		{"PCR 7 of another build", nil, []*verdict.Policy{&other}, nil, "PCR 7"},
		{"PCR 11 of no phase", nil, []*verdict.Policy{&wrong11}, nil, "PCR 11"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev := evidence(e)
			if tc.edit != nil {
				tc.edit(&ev)
			}
			// The same rejection with nothing remembered and through a
			// Cache that has accepted the genuine evidence (its replay
			// and its AK).
			var c verdict.Cache
			if res, err := c.Check(evidence(e), []*verdict.Policy{p}); err != nil || !res.Trusted {
				t.Fatalf("genuine evidence: %+v %v", res, err)
			}
			for i, check := range []func(verdict.Evidence, []*verdict.Policy) (verdict.Result, error){verdict.Check, c.Check} {
				res, err := check(ev, tc.policies)
				if tc.err != nil {
					if !errors.Is(err, tc.err) || !strings.Contains(err.Error(), tc.reason) {
						t.Fatalf("%d: got %v, want %v naming %q", i, err, tc.err, tc.reason)
					}
					continue
				}
				if err != nil {
					t.Fatal(i, err)
				}
				if res.Trusted || !strings.Contains(res.Reason, tc.reason) {
					t.Fatalf("%d: got %+v, want untrusted naming %q", i, res, tc.reason)
				}
			}
		})
	}
}

func TestTrustedAmongSeveral(t *testing.T) {
	e, p := load(t)
	other := *p
	other.Version = "0"
	other.PCR4.SHA256 = strings.Repeat("00", 32)
	res, err := verdict.Check(evidence(e), []*verdict.Policy{&other, p})
	if err != nil || !res.Trusted || res.Version != p.Version {
		t.Fatalf("%+v %v", res, err)
	}
}

func TestSimulatedNode(t *testing.T) {
	e, p := load(t)
	for _, rsaKey := range []bool{false, true} {
		n, err := simnode.New("sim", e.PCRs, e.EventLog, rsaKey)
		if err != nil {
			t.Fatal(err)
		}
		nonce := bytes.Repeat([]byte{7}, 32)
		q, s, err := n.Quote(nonce)
		if err != nil {
			t.Fatal(err)
		}
		res, err := verdict.Check(verdict.Evidence{AKPublic: n.AKPublic, Nonce: nonce, Quote: q, Signature: s, PCRs: n.PCRs, EventLog: n.EventLog}, []*verdict.Policy{p})
		if err != nil || !res.Trusted {
			t.Fatalf("rsa=%v: %+v %v", rsaKey, res, err)
		}
	}
}

// TestCacheKeepsAKsApart: after a Cache has seen the AKs of two nodes, a
// quote of one is not accepted under the AK of the other.
func TestCacheKeepsAKsApart(t *testing.T) {
	e, p := load(t)
	var c verdict.Cache
	nonce := bytes.Repeat([]byte{9}, 32)
	var nodes []*simnode.Node
	var evs []verdict.Evidence
	for i, rsaKey := range []bool{true, true, false} {
		n, err := simnode.New(fmt.Sprint("n", i), e.PCRs, e.EventLog, rsaKey)
		if err != nil {
			t.Fatal(err)
		}
		q, s, err := n.Quote(nonce)
		if err != nil {
			t.Fatal(err)
		}
		ev := verdict.Evidence{AKPublic: n.AKPublic, Nonce: nonce, Quote: q, Signature: s, PCRs: n.PCRs, EventLog: n.EventLog}
		if res, err := c.Check(ev, []*verdict.Policy{p}); err != nil || !res.Trusted {
			t.Fatalf("node %d: %+v %v", i, res, err)
		}
		nodes, evs = append(nodes, n), append(evs, ev)
	}
	for i := range evs {
		for j := range nodes {
			if i == j {
				continue
			}
			ev := evs[i]
			ev.AKPublic = nodes[j].AKPublic
			if _, err := c.Check(ev, []*verdict.Policy{p}); !errors.Is(err, verdict.ErrQuote) {
				t.Errorf("quote of node %d under the AK of node %d: %v", i, j, err)
			}
		}
	}
}

func TestParsePolicyRejects(t *testing.T) {
	for _, in := range []string{``, `{}`, `{"image":"x","version":"1"}`, `[1]`, `{"image":"x","version":"1","pcr4":{"sha256":"zz"}}`} {
		if _, err := verdict.ParsePolicy([]byte(in)); err == nil {
			t.Errorf("ParsePolicy(%q) accepted", in)
		}
	}
}

func clone(v [][]byte) [][]byte {
	out := make([][]byte, len(v))
	for i := range v {
		out[i] = bytes.Clone(v[i])
	}
	return out
}

func flip(b []byte, i int) []byte {
	b = bytes.Clone(b)
	b[i] ^= 1
	return b
}

// BenchmarkCheck is the verdict alone on the real swtpm evidence: quote
// signature (RSA-2048), event-log parse and replay, judgement.
func BenchmarkCheck(b *testing.B) {
	e, p := load(b)
	ev := evidence(e)
	policies := []*verdict.Policy{p}
	for b.Loop() {
		if _, err := verdict.Check(ev, policies); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCheckCached is a node attesting again: the replay is remembered.
func BenchmarkCheckCached(b *testing.B) {
	e, p := load(b)
	ev := evidence(e)
	policies := []*verdict.Policy{p}
	var c verdict.Cache
	for b.Loop() {
		if _, err := c.Check(ev, policies); err != nil {
			b.Fatal(err)
		}
	}
}
