package ipe

import (
	"bytes"
	"testing"
)

// FuzzParse: no panics; every accepted policy formats to a text that parses
// to the same policy, and formatting is stable.
func FuzzParse(f *testing.F) {
	for _, c := range loadCorpus(f) {
		f.Add(c.text)
	}
	f.Fuzz(func(t *testing.T, text []byte) {
		if len(text) > 1<<16 {
			return
		}
		p, err := Parse(text)
		if err != nil {
			if errnoOf(err) == 0 {
				t.Fatalf("error without errno: %v", err)
			}
			return
		}
		checkRoundTrip(t, p)
		for _, op := range Ops() {
			d := p.Evaluate(op, Facts{BootVerified: bytes.Contains(text, []byte("x"))})
			if d.Line == 0 {
				t.Fatalf("decision without a line: %+v", d)
			}
		}
	})
}
