// Package sbomcheck validates SBOM documents against the standards' own JSON
// schemas, for tests: CycloneDX 1.5 from the cyclonedx-go module, and SPDX
// 2.3 from syft's module (scripts/fetch-artifacts records where).
package sbomcheck

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/osguard/osguard/internal/testutil"
)

func compile(t testing.TB, id string, files map[string]string) *jsonschema.Schema {
	t.Helper()
	c := jsonschema.NewCompiler()
	for url, file := range files {
		f, err := os.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		doc, err := jsonschema.UnmarshalJSON(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if err := c.AddResource(url, doc); err != nil {
			t.Fatal(err)
		}
	}
	c.AssertFormat()
	s, err := c.Compile(id)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// CycloneDX15 returns the CycloneDX 1.5 JSON schema.
func CycloneDX15(t testing.TB) *jsonschema.Schema {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/CycloneDX/cyclonedx-go").Output()
	if err != nil {
		testutil.Missing(t, "cyclonedx-go module dir: %v", err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "schema")
	testutil.NeedFile(t, filepath.Join(dir, "bom-1.5.schema.json"))
	// The module ships the JSF schema as "jsf-0.82.schemax.json"; the
	// CycloneDX schema refers to it as "jsf-0.82.schema.json".
	const base = "http://cyclonedx.org/schema/"
	return compile(t, base+"bom-1.5.schema.json", map[string]string{
		base + "bom-1.5.schema.json":  filepath.Join(dir, "bom-1.5.schema.json"),
		base + "spdx.schema.json":     filepath.Join(dir, "spdx.schema.json"),
		base + "jsf-0.82.schema.json": filepath.Join(dir, "jsf-0.82.schemax.json"),
	})
}

// SPDX23 returns the SPDX 2.3 JSON schema.
func SPDX23(t testing.TB) *jsonschema.Schema {
	t.Helper()
	p := testutil.Artifacts(t).SPDXSchema
	testutil.NeedFile(t, p)
	return compile(t, "http://spdx.org/rdf/terms/2.3", map[string]string{"http://spdx.org/rdf/terms/2.3": p})
}

// Validate checks a JSON document against a schema.
func Validate(s *jsonschema.Schema, data []byte) error {
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("not JSON: %w", err)
	}
	if err := s.Validate(inst); err != nil {
		return fmt.Errorf("%#v", err)
	}
	return nil
}
