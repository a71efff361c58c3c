package api_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/osguard/osguard/attest/api"
)

func TestDecode(t *testing.T) {
	for _, tc := range []struct {
		in    string
		limit int64
		ok    bool
	}{
		{`{"node":"a"}`, 100, true},
		{`{"node":"a","x":1}`, 100, false},
		{`{"node":"a"} {"node":"b"}`, 100, false},
		{`{"node":`, 100, false},
		{`{"node":"` + strings.Repeat("a", 100) + `"}`, 50, false},
		{``, 100, false},
	} {
		var r api.NonceRequest
		err := api.Decode(strings.NewReader(tc.in), tc.limit, &r)
		if (err == nil) != tc.ok {
			t.Errorf("Decode(%.30q): %v", tc.in, err)
		}
	}
	var r api.NonceRequest
	if err := api.Decode(bytes.NewReader(make([]byte, 200)), 100, &r); !errors.Is(err, api.ErrTooLarge) {
		t.Errorf("oversized: %v", err)
	}
}

// FuzzDecode feeds hostile JSON to the decoder of every request type;
// what it accepts must encode again. Seeds are in testdata/fuzz/FuzzDecode.
func FuzzDecode(f *testing.F) {
	f.Add(`{"node":"n","nonce":"AAEC","quote":"AA==","signature":"AA==","pcrs":["AA=="],"eventLog":"AA=="}`)
	f.Add(`{"ekCertificate":"MA==","ak":{"public":"AA==","createData":"","createAttestation":"","createSignature":""}}`)
	f.Add(`{"challenge":"c","secret":"AA=="}`)
	f.Fuzz(func(t *testing.T, in string) {
		for _, v := range []any{&api.AttestRequest{}, &api.EnrollRequest{}, &api.ActivateRequest{}, &api.NonceRequest{}} {
			if err := api.Unmarshal([]byte(in), v); err == nil {
				if _, err := json.Marshal(v); err != nil {
					t.Fatalf("accepted %q but cannot encode it: %v", in, err)
				}
			}
		}
	})
}

// TestDecodeKeepsNothingOfTheBuffer decodes two requests through the pooled
// body buffer: what the first returned must not change when the buffer is
// filled again.
func TestDecodeKeepsNothingOfTheBuffer(t *testing.T) {
	body := func(fill byte) string {
		b, _ := json.Marshal(api.AttestRequest{Node: strings.Repeat(string(rune('a'+fill)), 40),
			Nonce: bytes.Repeat([]byte{fill}, 32), EventLog: bytes.Repeat([]byte{fill}, 4096), PCRs: [][]byte{bytes.Repeat([]byte{fill}, 32)}})
		return string(b)
	}
	var first api.AttestRequest
	if err := api.Decode(strings.NewReader(body(1)), api.MaxBody, &first); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ { // sync.Pool may drop a buffer: reuse it several times
		var next api.AttestRequest
		if err := api.Decode(strings.NewReader(body(2)), api.MaxBody, &next); err != nil {
			t.Fatal(err)
		}
	}
	if first.Node != strings.Repeat("b", 40) || !bytes.Equal(first.Nonce, bytes.Repeat([]byte{1}, 32)) ||
		!bytes.Equal(first.EventLog, bytes.Repeat([]byte{1}, 4096)) || !bytes.Equal(first.PCRs[0], bytes.Repeat([]byte{1}, 32)) {
		t.Fatalf("a decoded request changed when the body buffer was reused: node %.8q…, nonce %x…", first.Node, first.Nonce[:4])
	}
}
