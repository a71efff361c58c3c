package layer_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/osguard/osguard/internal/ocitest"
	"github.com/osguard/osguard/layer"
)

// benchTar returns an uncompressed layer tar: $OSGUARD_BENCH_TAR, or a
// made-up one of 128 MB (3000 files of mixed sizes, some compressible).
func benchTar(b *testing.B) string {
	if p := os.Getenv("OSGUARD_BENCH_TAR"); p != "" {
		return p
	}
	rng := rand.New(rand.NewPCG(7, 7))
	var ents []ocitest.Entry
	total := 0
	for i := 0; total < 128<<20; i++ {
		n := rng.IntN(1 << 17)
		if i%50 == 0 {
			n = 2 << 20
		}
		body := make([]byte, n)
		for j := 0; j < n; j += 8 {
			v := rng.Uint64()
			for k := 0; k < 8 && j+k < n; k++ {
				body[j+k] = byte(v >> (8 * k))
			}
		}
		ents = append(ents, ocitest.Entry{Name: fmt.Sprintf("d%02d/f%05d", i%64, i), Body: body})
		total += n
	}
	p := filepath.Join(b.TempDir(), "bench.tar")
	if err := os.WriteFile(p, ocitest.Tar(b, ents), 0o644); err != nil {
		b.Fatal(err)
	}
	return p
}

// BenchmarkMeasureFile is the work of `osguard image sign` per
// uncompressed layer: tar file -> EROFS -> verity root hash, nothing
// written. MB/s are of uncompressed tar.
func BenchmarkMeasureFile(b *testing.B) {
	p := benchTar(b)
	fi, err := os.Stat(p)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(fi.Size())
	for b.Loop() {
		f, err := os.Open(p)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := layer.Measure(f, layer.Options{TempDir: b.TempDir()}); err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
}

// BenchmarkMeasureStream is the same from a stream (spooled contents), as
// for a compressed layer minus the decompression.
func BenchmarkMeasureStream(b *testing.B) {
	p := benchTar(b)
	data, err := os.ReadFile(p)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := layer.Measure(bytes.NewReader(data), layer.Options{TempDir: b.TempDir()}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkConvertFile is the node's side: the image and tree written to
// a file (in TempDir) as well.
func BenchmarkConvertFile(b *testing.B) {
	p := benchTar(b)
	fi, err := os.Stat(p)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(fi.Size())
	out, err := os.Create(filepath.Join(b.TempDir(), "layer.img"))
	if err != nil {
		b.Fatal(err)
	}
	defer out.Close()
	for b.Loop() {
		f, err := os.Open(p)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := layer.Convert(f, out, layer.Options{TempDir: b.TempDir()}); err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
}
