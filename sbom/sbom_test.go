package sbom

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	spdxjson "github.com/spdx/tools-golang/json"

	"github.com/osguard/osguard/internal/testutil"
)

func sampleImage(t *testing.T) Image {
	t.Helper()
	status, err := os.ReadFile("testdata/status")
	if err != nil {
		t.Fatal(err)
	}
	pkgs, err := ParseDpkgStatus(bytes.NewReader(status))
	if err != nil {
		t.Fatal(err)
	}
	var files []File
	for _, p := range []string{"/usr/bin/busybox", "/usr/bin/osguard", "/usr/share/factory/etc/inittab", "/usr/lib/os-release"} {
		content := []byte("content of " + p)
		files = append(files, File{Path: p, Size: int64(len(content)), SHA1: sha1.Sum(content), SHA256: sha256.Sum256(content)})
	}
	return Image{
		Name: "osguard-default", Version: "1", RootHash: strings.Repeat("ab", 32),
		Created: time.Unix(1700000000, 0), ToolVersion: "test", Files: files, Packages: pkgs,
	}
}

func TestParseDpkgStatus(t *testing.T) {
	im := sampleImage(t)
	// testdata/status has 3 entries; one is deinstalled.
	if len(im.Packages) != 2 {
		t.Fatalf("got %d installed packages, want 2: %+v", len(im.Packages), im.Packages)
	}
	got := im.Packages[0]
	if got.Name != "busybox-static" || got.Version != "1:1.35.0-4+b3" || got.Architecture != "amd64" || got.Source != "busybox" {
		t.Errorf("first package = %+v", got)
	}
	if _, err := ParseDpkgStatus(strings.NewReader("Package foo\n")); err == nil {
		t.Error("a line without a field name was accepted")
	}
}

// cyclonedxSchemaDir finds the CycloneDX JSON schemas that ship in the
// cyclonedx-go module, so that the validator is the standard's own schema.
func cyclonedxSchemaDir(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/CycloneDX/cyclonedx-go").Output()
	if err != nil {
		testutil.Missing(t, "cyclonedx-go module dir: %v", err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "schema")
	testutil.NeedFile(t, filepath.Join(dir, "bom-1.5.schema.json"))
	return dir
}

func TestCycloneDXValidatesAgainstSchema(t *testing.T) {
	dir := cyclonedxSchemaDir(t)
	c := jsonschema.NewCompiler()
	// The module ships the JSF schema as "jsf-0.82.schemax.json"; the
	// CycloneDX schema refers to it as "jsf-0.82.schema.json".
	for name, file := range map[string]string{
		"bom-1.5.schema.json":  "bom-1.5.schema.json",
		"spdx.schema.json":     "spdx.schema.json",
		"jsf-0.82.schema.json": "jsf-0.82.schemax.json",
	} {
		f, err := os.Open(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		doc, err := jsonschema.UnmarshalJSON(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if err := c.AddResource("http://cyclonedx.org/schema/"+name, doc); err != nil {
			t.Fatal(err)
		}
	}
	c.AssertFormat()
	sch, err := c.Compile("http://cyclonedx.org/schema/bom-1.5.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := WriteCycloneDX(&buf, sampleImage(t)); err != nil {
		t.Fatal(err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if err := sch.Validate(inst); err != nil {
		t.Fatalf("CycloneDX output does not validate: %v\n%s", err, buf.String())
	}
	// The schema must catch a broken document, or this test proves nothing.
	var m map[string]any
	json.Unmarshal(buf.Bytes(), &m)
	m["specVersion"] = 7
	if err := sch.Validate(m); err == nil {
		t.Error("schema accepted a document with a numeric specVersion")
	}
}

func TestSPDXRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	im := sampleImage(t)
	if err := WriteSPDX(&buf, im); err != nil {
		t.Fatal(err)
	}
	doc, err := spdxjson.Read(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatalf("tools-golang cannot read our SPDX: %v", err)
	}
	if doc.SPDXVersion != "SPDX-2.3" || len(doc.Files) != len(im.Files) || len(doc.Packages) != 1+len(im.Packages) {
		t.Errorf("read back %s with %d files, %d packages", doc.SPDXVersion, len(doc.Files), len(doc.Packages))
	}
	for _, f := range doc.Files {
		if len(f.Checksums) != 2 || f.Checksums[0].Algorithm != "SHA1" {
			t.Errorf("file %s checksums %+v: SPDX 2.3 wants SHA1", f.FileName, f.Checksums)
		}
	}
}

func TestReproducible(t *testing.T) {
	for name, write := range map[string]func(*bytes.Buffer, Image) error{
		"spdx":      func(b *bytes.Buffer, im Image) error { return WriteSPDX(b, im) },
		"cyclonedx": func(b *bytes.Buffer, im Image) error { return WriteCycloneDX(b, im) },
	} {
		var a, b bytes.Buffer
		im1, im2 := sampleImage(t), sampleImage(t)
		// The order files arrive in must not matter.
		im2.Files[0], im2.Files[3] = im2.Files[3], im2.Files[0]
		if err := write(&a, im1); err != nil {
			t.Fatal(err)
		}
		if err := write(&b, im2); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a.Bytes(), b.Bytes()) {
			t.Errorf("%s: two writes of the same image differ", name)
		}
	}
}
