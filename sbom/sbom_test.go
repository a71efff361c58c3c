package sbom

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	spdxjson "github.com/spdx/tools-golang/json"

	"github.com/osguard/osguard/internal/sbomcheck"
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

func TestCycloneDXValidatesAgainstSchema(t *testing.T) {
	sch := sbomcheck.CycloneDX15(t)
	var buf bytes.Buffer
	if err := WriteCycloneDX(&buf, sampleImage(t)); err != nil {
		t.Fatal(err)
	}
	if err := sbomcheck.Validate(sch, buf.Bytes()); err != nil {
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

// TestSPDXValidatesAgainstSchema checks our SPDX output against the SPDX
// 2.3 JSON schema (the spec's own, as shipped in syft's Go module; see
// scripts/fetch-artifacts).
func TestSPDXValidatesAgainstSchema(t *testing.T) {
	sch := sbomcheck.SPDX23(t)
	var buf bytes.Buffer
	if err := WriteSPDX(&buf, sampleImage(t)); err != nil {
		t.Fatal(err)
	}
	if err := sbomcheck.Validate(sch, buf.Bytes()); err != nil {
		t.Fatalf("SPDX output does not validate: %v", err)
	}
	// The schema must catch a broken document, or this test proves nothing.
	var m map[string]any
	json.Unmarshal(buf.Bytes(), &m)
	delete(m, "SPDXID")
	m["files"].([]any)[0].(map[string]any)["checksums"] = "none"
	if err := sch.Validate(m); err == nil {
		t.Error("the schema accepted a document without SPDXID and with bad checksums")
	}
}
