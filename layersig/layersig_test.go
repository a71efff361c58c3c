package layersig_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/osguard/osguard/layersig"
)

const (
	d1 = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	d2 = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
)

func sample() *layersig.Document {
	return &layersig.Document{SchemaVersion: 1, Layers: []layersig.Layer{{
		Digest: d1, DiffID: d2,
		Verity: layersig.Verity{HashAlgorithm: "sha256", DataBlockSize: 4096, HashBlockSize: 4096,
			DataBlocks: 3, Salt: bytes.Repeat([]byte{0xaa}, 32), RootHash: bytes.Repeat([]byte{0xbb}, 32)},
		Signature: []byte{0x30, 0x82, 1, 2},
	}}}
}

const sampleJSON = `{"schemaVersion":1,"layers":[{"digest":"` + d1 + `","diffID":"` + d2 + `","verity":{"hashAlgorithm":"sha256","dataBlockSize":4096,"hashBlockSize":4096,"dataBlocks":3,"salt":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","rootHash":"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"},"signature":"MIIBAg=="}]}`

func TestMarshalGolden(t *testing.T) {
	b, err := sample().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != sampleJSON {
		t.Fatalf("Marshal:\n%s\nwant\n%s", b, sampleJSON)
	}
	d, err := layersig.Parse(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if b2, _ := d.Marshal(); !bytes.Equal(b, b2) {
		t.Fatalf("round trip changed the bytes:\n%s", b2)
	}
	if d.Find(d1) == nil || d.Find(d2) != nil {
		t.Fatal("Find")
	}
}

func TestParseErrors(t *testing.T) {
	r := strings.NewReplacer
	cases := []struct {
		name, json, want string
	}{
		{"unknown-member", strings.Replace(sampleJSON, `{"schemaVersion":1,`, `{"schemaVersion":1,"x":1,`, 1), "unknown"},
		{"duplicate-member", strings.Replace(sampleJSON, `{"schemaVersion":1,`, `{"schemaVersion":1,"schemaVersion":1,`, 1), "duplicate"},
		{"trailing", sampleJSON + `{}`, "invalid"},
		{"schema", strings.Replace(sampleJSON, `"schemaVersion":1`, `"schemaVersion":2`, 1), "schemaVersion 2"},
		{"no-layers", `{"schemaVersion":1,"layers":[]}`, "no layers"},
		{"bad-digest", strings.Replace(sampleJSON, d1, "sha256:xyz", 1), "digest"},
		{"upper-digest", strings.Replace(sampleJSON, d1, strings.ToUpper(d1), 1), "digest"},
		{"diffid-sha512", strings.Replace(sampleJSON, d2, "sha512:"+strings.Repeat("2", 128), 1), "not sha256"},
		{"alg", strings.Replace(sampleJSON, `"hashAlgorithm":"sha256"`, `"hashAlgorithm":"sha1"`, 1), "sha1"},
		{"block", strings.Replace(sampleJSON, `"dataBlockSize":4096`, `"dataBlockSize":512`, 1), "block sizes"},
		{"zero-blocks", strings.Replace(sampleJSON, `"dataBlocks":3`, `"dataBlocks":0`, 1), "dataBlocks"},
		{"root-short", strings.Replace(sampleJSON, `"rootHash":"bb`, `"rootHash":"`, 1), "rootHash of 31"},
		{"root-upper", r(`"rootHash":"bb`, `"rootHash":"BB`).Replace(sampleJSON), "lowercase"},
		{"salt-empty", strings.Replace(sampleJSON, `"salt":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"`, `"salt":""`, 1), "salt of 0"},
		{"sig-empty", strings.Replace(sampleJSON, `"signature":"MIIBAg=="`, `"signature":""`, 1), "signature of 0"},
		{"sig-base64", strings.Replace(sampleJSON, `"signature":"MIIBAg=="`, `"signature":"!!"`, 1), "base64"},
		{"twice", strings.Replace(sampleJSON, `}]}`, `},`+sampleJSON[strings.Index(sampleJSON, `{"digest"`):len(sampleJSON)-2]+`]}`, 1), "listed twice"},
		{"too-big", `{"schemaVersion":1,"layers":[` + strings.Repeat(" ", layersig.MaxDocumentSize) + `]}`, "larger than"},
		{"not-json", "\x00", "invalid"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := layersig.Parse(strings.NewReader(c.json))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(sampleJSON))
	f.Add([]byte(`{"schemaVersion":1,"layers":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := layersig.Parse(bytes.NewReader(b))
		if err != nil {
			return
		}
		// What parses marshals, and the result parses to the same bytes.
		m, err := d.Marshal()
		if err != nil {
			t.Fatalf("Marshal of a parsed document: %v", err)
		}
		d2, err := layersig.Parse(bytes.NewReader(m))
		if err != nil {
			t.Fatalf("re-Parse: %v", err)
		}
		if m2, _ := d2.Marshal(); !bytes.Equal(m, m2) {
			t.Fatal("Marshal not stable")
		}
	})
}
