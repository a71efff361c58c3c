package ocitest_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/osguard/osguard/internal/ocitest"
)

// TestSampleLayoutReproducible: the same options give the same bytes, in
// every compression; the layers hold what they say.
func TestSampleLayoutReproducible(t *testing.T) {
	for _, c := range ocitest.Compressions {
		t.Run(string(c), func(t *testing.T) {
			a, b := t.TempDir(), t.TempDir()
			sa := ocitest.SampleLayout(t, a, ocitest.LayoutOptions{Compression: c, Index: true})
			sb := ocitest.SampleLayout(t, b, ocitest.LayoutOptions{Compression: c, Index: true})
			if sa.Image.Digest != sb.Image.Digest {
				t.Fatalf("two runs give %s and %s", sa.Image.Digest, sb.Image.Digest)
			}
			ia, _ := os.ReadFile(filepath.Join(a, "index.json"))
			ib, _ := os.ReadFile(filepath.Join(b, "index.json"))
			if !bytes.Equal(ia, ib) || len(sa.Layers) != 2 || sa.Layers[0].MediaType != c.MediaType() {
				t.Fatalf("index.json differs or layers wrong: %+v", sa.Layers)
			}
			if !bytes.Contains(sa.Tars[1], []byte(".wh..wh..opq")) || !bytes.Contains(sa.Tars[1], []byte(".wh.motd")) {
				t.Fatal("the top layer lacks its whiteouts")
			}
		})
	}
}
