// Package verdict decides whether a node booted a registered osguard image,
// from a TPM quote, the PCR values it covers and the firmware's event log.
// It is the pure core of the verifier: no database, no network, so that it
// can be fuzzed and benchmarked on its own.
//
// The rules, in order:
//
//  1. The quote is a TPMS_ATTEST of type TPM_ST_ATTEST_QUOTE signed by the
//     node's attestation key, carries the verifier's nonce, and its PCR
//     digest is the sha256 of the PCRs 0–15 sent with it
//     (go-attestation's AKPublic.Verify).
//  2. The event log replays to the quoted PCRs (go-attestation's
//     EventLog.Verify), except PCR 11: osguard-init extends it with the boot
//     phases after the firmware's log ends, as systemd-pcrphase does, so
//     PCR 11 is judged against the predicted phase values instead.
//  3. Against each registered image version (a measurements.json): PCR 4
//     equals the predicted value, which is the chain of exactly the
//     expected events (the UKI's Authenticode digest, nothing else); PCR 7
//     equals the predicted Secure Boot state (SecureBoot on, PK, KEK, db,
//     dbx, and the db entry that verified the UKI); PCR 11 equals one of the
//     predicted phase values. The node is trusted when one version matches
//     all three; otherwise the reason names each PCR that failed for the
//     closest version.
//
// # Security
//
// Check is meant for hostile input: every structure comes from the network
// and is parsed by go-attestation and go-tpm, which bound their reads.
package verdict

import (
	"crypto"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/google/go-attestation/attest"

	"github.com/osguard/osguard/attest/api"
)

// Policy is what the verifier needs of a measurements.json: the predicted
// PCRs of one image version.
type Policy struct {
	Image   string `json:"image"`
	Version string `json:"version"`
	PCR4    struct {
		SHA256                string `json:"sha256"`
		UKIAuthenticodeSHA256 string `json:"ukiAuthenticodeSha256"`
	} `json:"pcr4"`
	PCR7 struct {
		SHA256 string `json:"sha256"`
	} `json:"pcr7"`
	PCR11 struct {
		SHA256 string `json:"sha256"`
		Phases []struct {
			Phase string `json:"phase"`
			PCR11 string `json:"pcr11"`
		} `json:"phases"`
	} `json:"pcr11"`
}

// ParsePolicy reads a measurements.json and checks that it carries every
// prediction the verdict needs.
func ParsePolicy(b []byte) (*Policy, error) {
	var p Policy
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("verdict: measurements.json: %w", err)
	}
	var missing []string
	check := func(name, v string) {
		if d, err := hex.DecodeString(v); err != nil || len(d) != 32 {
			missing = append(missing, name)
		}
	}
	if p.Image == "" || p.Version == "" {
		missing = append(missing, "image and version")
	}
	check("pcr4.sha256", p.PCR4.SHA256)
	check("pcr7.sha256", p.PCR7.SHA256)
	check("pcr11.sha256", p.PCR11.SHA256)
	if len(p.PCR11.Phases) == 0 {
		missing = append(missing, "pcr11.phases")
	}
	for _, ph := range p.PCR11.Phases {
		check("pcr11.phases["+ph.Phase+"]", ph.PCR11)
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("verdict: measurements.json lacks %s (built by an osguard without PCR 4/7 predictions?)", strings.Join(missing, ", "))
	}
	return &p, nil
}

// Evidence is one attestation as the node sent it.
type Evidence struct {
	AKPublic  []byte // TPMT_PUBLIC of the node's AK, bound to its EK at enrollment
	Nonce     []byte // the nonce the verifier issued
	Quote     []byte
	Signature []byte
	PCRs      [][]byte // sha256 bank, PCR 0..15
	EventLog  []byte
}

// Errors for evidence that is rejected before any policy is looked at.
var (
	// ErrQuote: the quote does not verify (signature, nonce, PCR digest,
	// malformed structures). It may not come from the node at all.
	ErrQuote = errors.New("quote rejected")
	// ErrEventLog: the quote verifies, but the event log is malformed or
	// does not replay to it: the node's own evidence does not hold together.
	ErrEventLog = errors.New("event log rejected")
)

// Result is a verdict on authentic evidence.
type Result struct {
	Trusted bool
	Image   string // the matching (or closest) registered image; "" when none is close
	Version string
	Reason  string
}

// State returns api.Trusted or api.Untrusted.
func (r Result) State() string {
	if r.Trusted {
		return api.Trusted
	}
	return api.Untrusted
}

// Check verifies the evidence and judges it against the registered
// policies. An error wrapping ErrQuote means the evidence was rejected:
// the quote does not verify or the log does not replay to it.
func Check(ev Evidence, policies []*Policy) (Result, error) {
	pcrs, err := authenticPCRs(ev, nil)
	if err != nil {
		return Result{}, err
	}
	events, err := replay(ev.EventLog, pcrs)
	if err != nil {
		return Result{}, err
	}
	return judge(pcrs, events, policies), nil
}

// authenticPCRs checks the quote and returns the PCRs it covers. The AK is
// parsed from ev.AKPublic, or taken from aks when it holds these bytes.
func authenticPCRs(ev Evidence, aks *akCache) ([]attest.PCR, error) {
	if len(ev.PCRs) != api.NumPCRs {
		return nil, fmt.Errorf("%w: %d PCR values, want %d (sha256, PCR 0-%d)", ErrQuote, len(ev.PCRs), api.NumPCRs, api.NumPCRs-1)
	}
	pcrs := make([]attest.PCR, len(ev.PCRs))
	for i, d := range ev.PCRs {
		if len(d) != 32 {
			return nil, fmt.Errorf("%w: PCR %d: %d bytes, want 32 (sha256)", ErrQuote, i, len(d))
		}
		pcrs[i] = attest.PCR{Index: i, Digest: d, DigestAlg: crypto.SHA256}
	}
	ak, err := aks.parse(ev.AKPublic)
	if err != nil {
		return nil, fmt.Errorf("%w: attestation key: %v", ErrQuote, err)
	}
	if len(ev.Nonce) == 0 {
		return nil, fmt.Errorf("%w: no nonce", ErrQuote)
	}
	if err := ak.VerifyAll([]attest.Quote{{Quote: ev.Quote, Signature: ev.Signature}}, pcrs, ev.Nonce); err != nil {
		return nil, fmt.Errorf("%w: quote: %v", ErrQuote, err)
	}
	return pcrs, nil
}

// replay checks that the event log replays to the quoted PCRs but PCR 11.
func replay(log []byte, pcrs []attest.PCR) ([]attest.Event, error) {
	el, err := attest.ParseEventLog(log)
	if err != nil {
		return nil, fmt.Errorf("%w: event log: %v", ErrEventLog, err)
	}
	logged := make([]attest.PCR, 0, len(pcrs))
	for _, p := range pcrs {
		if p.Index != 11 {
			logged = append(logged, p)
		}
	}
	events, err := el.Verify(logged)
	if err != nil {
		var re attest.ReplayError
		if errors.As(err, &re) {
			return nil, fmt.Errorf("%w: event log does not replay to the quoted PCR %s", ErrEventLog, joinInts(re.InvalidPCRs))
		}
		return nil, fmt.Errorf("%w: event log: %v", ErrEventLog, err)
	}
	// A PCR with no event replays to anything: PCR 4 and 7 must have theirs.
	seen := map[int]bool{}
	for _, e := range events {
		seen[e.Index] = true
	}
	for _, i := range []int{4, 7} {
		if !seen[i] {
			return nil, fmt.Errorf("%w: event log has no event for PCR %d", ErrEventLog, i)
		}
	}
	return events, nil
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprint(x)
	}
	return strings.Join(s, ", ")
}

// evTypeApp is EV_EFI_BOOT_SERVICES_APPLICATION.
const evTypeApp = 0x80000003

func judge(pcrs []attest.PCR, events []attest.Event, policies []*Policy) Result {
	if len(policies) == 0 {
		return Result{Reason: "no image version is registered with the verifier"}
	}
	val := func(i int) string { return hex.EncodeToString(pcrs[i].Digest) }
	pcr4, pcr7, pcr11 := val(4), val(7), val(11)
	var apps []string
	for _, e := range events {
		if e.Index == 4 && uint32(e.Type) == evTypeApp {
			apps = append(apps, hex.EncodeToString(e.Digest))
		}
	}
	var best Result
	bestFails := 4
	for _, p := range policies {
		var fails []string
		ok4 := pcr4 == p.PCR4.SHA256
		if !ok4 {
			fails = append(fails, explainPCR4(apps, p))
		}
		if pcr7 != p.PCR7.SHA256 {
			fails = append(fails, explainPCR7(events))
		}
		ok11 := false
		for _, ph := range p.PCR11.Phases {
			ok11 = ok11 || pcr11 == ph.PCR11
		}
		if !ok11 {
			fails = append(fails, fmt.Sprintf("PCR 11: %s is no predicted phase value of the UKI's sections", short(pcr11)))
		}
		if len(fails) < bestFails {
			bestFails = len(fails)
			best = Result{Trusted: len(fails) == 0}
			if ok4 {
				best.Image, best.Version = p.Image, p.Version
			}
			if len(fails) > 0 {
				best.Reason = strings.Join(fails, "; ")
				if ok4 {
					best.Reason = fmt.Sprintf("image %s version %s: %s", p.Image, p.Version, best.Reason)
				}
			}
		}
	}
	return best
}

func explainPCR4(apps []string, p *Policy) string {
	if len(apps) == 0 {
		return "PCR 4: no boot application was measured"
	}
	for _, a := range apps {
		if a == p.PCR4.UKIAuthenticodeSHA256 {
			return fmt.Sprintf("PCR 4: besides the UKI of %s %s, unexpected boot events were measured", p.Image, p.Version)
		}
	}
	return fmt.Sprintf("PCR 4: boot application %s is not the UKI of a registered image version", short(apps[0]))
}

func explainPCR7(events []attest.Event) string {
	st, err := attest.ParseSecurebootState(events)
	switch {
	case err != nil:
		return fmt.Sprintf("PCR 7: Secure Boot state unreadable: %v", err)
	case !st.Enabled:
		return "PCR 7: Secure Boot is off"
	default:
		return "PCR 7: the Secure Boot keys (PK, KEK, db, dbx) or the authority that verified the UKI differ from the build's"
	}
}

// short abbreviates a hex digest for reasons.
func short(h string) string {
	if len(h) > 16 {
		return h[:16] + "…"
	}
	return h
}
