package verity_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/osguard/osguard/verity"
)

// TestChecker checks streamed data against a tree the way Verify does:
// every block of intact data passes, a flipped data byte names its block,
// and a bad tree or root hash is refused before any data is looked at.
func TestChecker(t *testing.T) {
	for _, c := range []struct {
		name   string
		blocks int
		p      func() verity.Params
	}{
		{"one block", 1, verity.DefaultParams},
		{"one hash block", 100, verity.DefaultParams},
		{"three levels", 128*128 + 3, verity.DefaultParams},
		{"salted", 300, func() verity.Params { p := verity.DefaultParams(); p.Salt = []byte("salt"); return p }},
		{"chrome os format", 300, func() verity.Params { p := verity.DefaultParams(); p.HashFormat = 0; p.Salt = []byte{1}; return p }},
		{"sha1 512-byte blocks", 700, func() verity.Params {
			p := verity.DefaultParams()
			p.HashAlgorithm, p.DataBlockSize, p.HashBlockSize = "sha1", 512, 512
			return p
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := c.p()
			data := randomData(7, c.blocks*int(p.DataBlockSize))
			hash, res := formatMem(t, data, p)
			ck, err := verity.NewChecker(hash.b, res.RootHash, verity.Params{})
			if err != nil {
				t.Fatal(err)
			}
			if ck.DataSize() != int64(len(data)) {
				t.Fatalf("DataSize %d, want %d", ck.DataSize(), len(data))
			}
			// In uneven pieces, as a stream arrives.
			bs := int(p.DataBlockSize)
			for off := 0; off < len(data); {
				n := min(len(data)-off, bs*(1+off/bs%5))
				if err := ck.Check(data[off:off+n], int64(off)); err != nil {
					t.Fatalf("intact data at %d: %v", off, err)
				}
				off += n
			}
			bad := bytes.Clone(data)
			blk := c.blocks - 1
			bad[blk*bs+bs/2] ^= 1
			err = ck.Check(bad, 0)
			var ce *verity.CorruptionError
			if !errors.As(err, &ce) || ce.Area != verity.DataArea || ce.Block != uint64(blk) {
				t.Fatalf("flipped byte in block %d: %v", blk, err)
			}
			if err := ck.Check(data[:bs], int64(len(data))); err == nil {
				t.Error("a block past the end was checked")
			}
			if err := ck.Check(data[:bs-1], 0); err == nil {
				t.Error("a partial block was checked")
			}
			wrong := bytes.Clone(res.RootHash)
			wrong[0] ^= 1
			if _, err := verity.NewChecker(hash.b, wrong, verity.Params{}); !errors.Is(err, verity.ErrRootHashMismatch) && c.blocks > 1 {
				t.Errorf("wrong root hash: %v", err)
			} else if c.blocks == 1 {
				// One block: the root hash is the block's own digest, so
				// the mismatch shows on the data.
				ck, _ := verity.NewChecker(hash.b, wrong, verity.Params{})
				if err := ck.Check(data, 0); !errors.Is(err, verity.ErrRootHashMismatch) {
					t.Errorf("one block, wrong root hash: %v", err)
				}
			}
			if c.blocks > 1 {
				tree := bytes.Clone(hash.b)
				tree[len(tree)-1-int(p.HashBlockSize)/2] ^= 1 // in the lowest level
				if _, err := verity.NewChecker(tree, res.RootHash, verity.Params{}); !errors.Is(err, verity.ErrCorrupted) {
					t.Errorf("flipped tree byte: %v", err)
				}
				if _, err := verity.NewChecker(hash.b[:len(hash.b)-1], res.RootHash, verity.Params{}); err == nil || !strings.Contains(err.Error(), "too small") {
					t.Errorf("short tree: %v", err)
				}
			}
		})
	}
}
