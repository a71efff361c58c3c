package sbom

import (
	"bytes"
	"os"
	"testing"
)

// FuzzParseDpkgStatus: no panic on any input, and every package returned
// has a name.
func FuzzParseDpkgStatus(f *testing.F) {
	if b, err := os.ReadFile("testdata/status"); err == nil {
		f.Add(b)
	}
	f.Add([]byte("Package: a\nStatus: install ok installed\n\nPackage b\n"))
	f.Add([]byte(" continuation first\nPackage: x\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		pkgs, err := ParseDpkgStatus(bytes.NewReader(data))
		if err != nil {
			return
		}
		for _, p := range pkgs {
			if p.Name == "" {
				t.Fatalf("package without a name: %+v", p)
			}
		}
	})
}
