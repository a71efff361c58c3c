package layer_test

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/osguard/osguard/internal/ocitest"
	"github.com/osguard/osguard/layer"
)

// FuzzMeasure feeds hostile layer blobs (seeded with the conversion cases,
// plain and gzip) to Measure: an error or a sound, reproducible result,
// never a panic.
func FuzzMeasure(f *testing.F) {
	for _, c := range convertCases() {
		b, err := ocitest.TarBytes(c.entries)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		gz, _ := ocitest.CompressBytes(b, ocitest.Gzip)
		f.Add(gz)
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		r1, err := layer.Measure(bytes.NewReader(b), layer.Options{TempDir: dir})
		if err != nil {
			return
		}
		if r1.ImageSize <= 0 || r1.ImageSize%layer.BlockSize != 0 || r1.Verity.DataBlocks*layer.BlockSize != uint64(r1.ImageSize) {
			t.Fatalf("bad geometry %+v", r1)
		}
		r2, err := layer.Measure(bytes.NewReader(b), layer.Options{TempDir: dir})
		if err != nil || fmt.Sprint(r1) != fmt.Sprint(r2) {
			t.Fatalf("second conversion differs: %v", err)
		}
	})
}
