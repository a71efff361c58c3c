package verity_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/osguard/osguard/verity"
)

type discard struct{}

func (discard) WriteAt(b []byte, _ int64) (int, error) { return len(b), nil }

// benchFile is a page-cached data file, so the benchmark measures hashing
// and reading, not the disk. scripts/bench-verity compares with veritysetup.
func benchFile(b *testing.B, size int) *os.File {
	b.Helper()
	path := filepath.Join(b.TempDir(), "data")
	if err := os.WriteFile(path, randomData(5, size), 0o644); err != nil {
		b.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	return f
}

func BenchmarkFormat(b *testing.B) {
	for _, alg := range []string{"sha256", "sha512"} {
		b.Run(alg, func(b *testing.B) {
			const size = 128 << 20
			f := benchFile(b, size)
			p := verity.DefaultParams()
			p.HashAlgorithm = alg
			p.Salt = verity.DeriveSalt(nil)
			b.SetBytes(size)
			for b.Loop() {
				if _, err := verity.Format(f, discard{}, p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkVerify(b *testing.B) {
	const size = 128 << 20
	f := benchFile(b, size)
	p := verity.DefaultParams()
	p.Salt = verity.DeriveSalt(nil)
	h := &memDev{}
	res, err := verity.Format(f, h, p)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size)
	for b.Loop() {
		if err := verity.Verify(f, h, res.RootHash, verity.Params{}); err != nil {
			b.Fatal(err)
		}
	}
}
