package verity_test

import (
	"bytes"
	"testing"

	"github.com/osguard/osguard/verity"
)

// FuzzParseSuperblock: no panic, and every accepted superblock survives
// a marshal/parse round trip. Seeds: testdata/fuzz/FuzzParseSuperblock
// (veritysetup's, from testdata/gen-fuzz-seeds.sh) and our own.
func FuzzParseSuperblock(f *testing.F) {
	for _, alg := range verity.Algorithms() {
		sb := &verity.Superblock{Version: 1, HashType: 1, Algorithm: alg, DataBlockSize: 4096, HashBlockSize: 512,
			DataBlocks: 77, Salt: []byte{1, 2, 3}}
		b, err := sb.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		sb, err := verity.ParseSuperblock(b)
		if err != nil {
			return
		}
		out, err := sb.MarshalBinary()
		if err != nil {
			t.Fatalf("accepted superblock does not marshal: %v", err)
		}
		again, err := verity.ParseSuperblock(out)
		if err != nil {
			t.Fatalf("re-parse: %v", err)
		}
		if again.Algorithm != sb.Algorithm || again.DataBlocks != sb.DataBlocks || !bytes.Equal(again.Salt, sb.Salt) ||
			again.UUID != sb.UUID || again.HashType != sb.HashType {
			t.Fatalf("round trip changed %+v into %+v", sb, again)
		}
	})
}

// FuzzParseSignatureJSON: no panic; accepted objects re-encode and parse the same.
func FuzzParseSignatureJSON(f *testing.F) {
	f.Add([]byte(`{"rootHash":"41ace9c83ce6cc3c50bff97c9d96e927f84d7dffff21e4eee7b0091c517aa3b2","certificateFingerprint":"` +
		"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff" + `","signature":"MAMCAQE="}` + "\x00\x00\x00"))
	f.Add([]byte(`{"rootHash":"41ace9c83ce6cc3c50bff97c9d96e927f84d7dff","signature":"AA=="}`))
	f.Add([]byte("{}\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		sj, err := verity.ParseSignatureJSON(b)
		if err != nil {
			return
		}
		out, err := sj.MarshalPadded(len(b) + 1024)
		if err != nil {
			t.Fatalf("accepted object does not marshal: %v", err)
		}
		again, err := verity.ParseSignatureJSON(out)
		if err != nil || *again != *sj {
			t.Fatalf("round trip: %+v, %v; want %+v", again, err, sj)
		}
	})
}

// FuzzVerify feeds arbitrary hash devices (and data) to Verify: it must
// return, never panic, and accept only what matches the root.
func FuzzVerify(f *testing.F) {
	data := randomData(9, 20*512) // two levels with 512-byte blocks; small, so the fuzzer stays fast
	for _, fmtv := range []uint32{0, 1} {
		p := verity.Params{HashAlgorithm: "sha256", DataBlockSize: 512, HashBlockSize: 512, HashFormat: fmtv, Salt: []byte{7}}
		h := &memDev{}
		res, err := verity.Format(bytes.NewReader(data), h, p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, h.b, res.RootHash, uint16(0))
		f.Add(data, h.b, res.RootHash, uint16(600))
	}
	f.Fuzz(func(t *testing.T, data, hash, root []byte, flip uint16) {
		if len(data) > 1<<16 || len(hash) > 1<<16 {
			return
		}
		if len(hash) > 0 {
			hash = bytes.Clone(hash)
			hash[int(flip)%len(hash)] ^= byte(flip >> 8)
		}
		_ = verity.Verify(bytes.NewReader(data), bytes.NewReader(hash), root, verity.Params{})
		_ = verity.Verify(bytes.NewReader(data), bytes.NewReader(hash), root, verity.Params{NoSuperblock: true, HashFormat: 1,
			HashBlockSize: 512, DataBlockSize: 512})
	})
}
