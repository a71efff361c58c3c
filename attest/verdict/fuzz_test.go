package verdict_test

import (
	"fmt"
	"testing"

	"github.com/google/go-attestation/attest"

	"github.com/osguard/osguard/attest/verdict"
)

// maxFuzzInput caps inputs: an event log of a UEFI boot is tens of KiB.
const maxFuzzInput = 1 << 17

// FuzzCheck feeds hostile quotes, signatures, AK publics and event logs to
// the verdict. Seeds: the real swtpm attestation (testdata) and its parts
// cut short; committed crashers live in testdata/fuzz/FuzzCheck.
func FuzzCheck(f *testing.F) {
	e, p := load(f)
	f.Add(e.AKPublic, e.Quote, e.Signature, e.EventLog)
	f.Add(e.AKPublic[:10], e.Quote[:20], e.Signature[:4], e.EventLog[:64])
	f.Add([]byte{}, []byte{}, []byte{}, []byte{})
	f.Fuzz(func(t *testing.T, ak, quote, sig, log []byte) {
		if len(ak)+len(quote)+len(sig)+len(log) > maxFuzzInput {
			return
		}
		res, err := verdict.Check(verdict.Evidence{AKPublic: ak, Nonce: e.Nonce, Quote: quote, Signature: sig, PCRs: e.PCRs, EventLog: log}, []*verdict.Policy{p})
		// Bytes no digest covers (the Spec ID event, event data) may
		// change; the measured events of PCR 4 and 7 may not.
		if err == nil && res.Trusted && measured(t, log) != measured(t, e.EventLog) {
			t.Fatalf("trusted with other PCR 4/7 events than the real log's")
		}
	})
}

// FuzzEventLog parses and replays hostile event logs the way the verdict
// does (go-attestation), which must never panic.
func FuzzEventLog(f *testing.F) {
	e, _ := load(f)
	f.Add(e.EventLog)
	f.Add(e.EventLog[:len(e.EventLog)/3])
	f.Fuzz(func(t *testing.T, log []byte) {
		if len(log) > maxFuzzInput {
			return
		}
		el, err := attest.ParseEventLog(log)
		if err != nil {
			return
		}
		var pcrs []attest.PCR
		for i, d := range e.PCRs {
			pcrs = append(pcrs, attest.PCR{Index: i, Digest: d, DigestAlg: 5 /* crypto.SHA256 */})
		}
		if evs, err := el.Verify(pcrs); err == nil {
			attest.ParseSecurebootState(evs)
		}
	})
}

// measured lists the sha256 digests of the PCR 4 and 7 events of a log.
func measured(t *testing.T, log []byte) string {
	el, err := attest.ParseEventLog(log)
	if err != nil {
		t.Fatalf("trusted log does not parse: %v", err)
	}
	var s string
	for _, ev := range el.Events(attest.HashSHA256) {
		if ev.Index == 4 || ev.Index == 7 {
			s += fmt.Sprintf("%d:%x ", ev.Index, ev.Digest)
		}
	}
	return s
}
